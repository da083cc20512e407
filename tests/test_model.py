"""load_model: built-ins, architectures, state-dict formats, TorchScript, factories, bad input."""

import numpy as np
import pytest
import torch
from torch import nn

from convlens import load_model
from convlens.inputspec import PRESETS, InputSpec
from convlens.nets import ARCHITECTURES, parse_arch
from tests.conftest import shared_path

# torchvision's vgg16 state-dict layout, written out independently of our module
_VGG16_CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
                (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
_VGG16_CONV_IDX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


def torchvision_vgg16_state_dict(gen: torch.Generator) -> dict:
    sd = {}
    for idx, (cin, cout) in zip(_VGG16_CONV_IDX, _VGG16_CONVS):
        sd[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=gen)
        sd[f"features.{idx}.bias"] = torch.randn(cout, generator=gen)
    for idx, (cin, cout) in zip([0, 3, 6], [(25088, 4096), (4096, 4096), (4096, 1000)]):
        sd[f"classifier.{idx}.weight"] = torch.randn(cout, cin, generator=gen) * 0.01
        sd[f"classifier.{idx}.bias"] = torch.randn(cout, generator=gen)
    return sd


def test_torchvision_layout_vgg16_state_dict_loads_unchanged(tmp_path):
    sd = torchvision_vgg16_state_dict(torch.Generator().manual_seed(0))
    torch.save(sd, tmp_path / "vgg16.pth")
    m = load_model("vgg16", weights=tmp_path / "vgg16.pth")
    loaded = m.net.state_dict()
    assert set(loaded) == set(sd)
    for k in ("features.0.weight", "features.28.bias", "classifier.6.weight"):
        assert torch.equal(loaded[k], sd[k])
    assert m.spec == PRESETS["imagenet"]


@pytest.mark.parametrize("spec,n_params", [
    ("lenet", 61706),
    ("M(64,0,64)", None),
    ("C(64,32,64)", None),
    ("vgg4", None),
    ("squeezenet1_1", 1235496),  # the count ../shared/data/README.md gives for SqueezeNet 1.1
])
def test_architectures_build_and_run(spec, n_params):
    m = load_model(spec)
    out = m(m.example_input(2))
    assert out.shape == (2, 1000 if spec.startswith("squeeze") else 10)
    if n_params is not None:
        assert sum(p.numel() for p in m.net.parameters()) == n_params


def test_gc_architectures_follow_tables_1_and_2():
    m = load_model("M(64,0,64)").net
    names = [n for n, _ in m.named_children()]
    assert "conv2" not in names and names[:3] == ["conv1", "relu1", "pool1"]
    assert m.conv1.kernel_size == (3, 3) and m.conv1.out_channels == 64
    assert m.fc1.out_features == 64 and isinstance(m.dropout, nn.Dropout) and m.dropout.p == 0.5
    c = load_model("C(64,32,64)").net
    assert (c.pool1.kernel_size, c.pool1.stride) == (3, 2)
    assert (c.pool2.kernel_size, c.pool2.stride) == (2, 1)
    assert isinstance(c.norm1, nn.LocalResponseNorm) and isinstance(c.norm2, nn.LocalResponseNorm)
    assert parse_arch("M(64, 0, 64)") == ("M", [64, 0, 64], {})
    assert parse_arch("lenet(num_classes=5)") == ("lenet", [], {"num_classes": 5})
    assert set(ARCHITECTURES) >= {"lenet", "vgg4", "M", "C", "vgg16", "alexnet", "squeezenet1_1"}


@pytest.mark.parametrize("fmt", ["pt", "safetensors", "npz"])
def test_state_dict_formats(tmp_path, fmt):
    src = load_model("lenet")
    sd = {k: v.clone() for k, v in src.net.state_dict().items()}
    path = tmp_path / f"w.{fmt}"
    if fmt == "pt":
        torch.save(sd, path)
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        np.savez(path, **{k: v.numpy() for k, v in sd.items()})
    m = load_model("lenet", weights=path)
    for k, v in m.net.state_dict().items():
        assert torch.equal(v, sd[k])


def test_full_pickle_needs_trust(tmp_path):
    net = load_model("lenet").net
    torch.save(net, tmp_path / "whole.pt")
    with pytest.raises(ValueError, match=r"full pickle.*--trust-pickle"):
        load_model(tmp_path / "whole.pt")
    m = load_model(tmp_path / "whole.pt", trust_pickle=True)
    assert isinstance(m.net, nn.Module)


def test_state_dict_without_architecture_says_so(tmp_path):
    torch.save(load_model("lenet").net.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(ValueError, match="needs its architecture"):
        load_model(tmp_path / "sd.pt")


def test_mismatched_state_dict_names_the_keys(tmp_path):
    torch.save(load_model("lenet").net.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(ValueError, match=r"do not fit this architecture: missing .*unexpected"):
        load_model("vgg4", weights=tmp_path / "sd.pt")


def test_unknown_model_and_missing_weights():
    with pytest.raises(FileNotFoundError, match="neither a file nor a known name"):
        load_model("no-such-model")
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        load_model("lenet", weights="/nonexistent/w.pt")
    with pytest.raises(ValueError, match="bad arguments for M"):
        load_model("M(1,2)")


def test_torchscript_and_factory(tmp_path):
    net = load_model("lenet").net
    torch.jit.script(net).save(str(tmp_path / "net.ts"))
    m = load_model(tmp_path / "net.ts")
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(m(x), net(x))
    (tmp_path / "mine.py").write_text(
        "import torch.nn as nn\n"
        "def build():\n    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten())\n"
    )
    f = load_model(f"{tmp_path / 'mine.py'}:build")
    assert f.spec.channels == 3
    with pytest.raises(ValueError, match="has no callable 'nope'"):
        load_model(f"{tmp_path / 'mine.py'}:nope")


def test_model_card_and_input_spec(tmp_path):
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    (tmp_path / "card.yaml").write_text("arch: lenet(num_classes=3)\ninput_spec: {mean: [0.5], std: [0.25]}\nclasses: classes.txt\n")
    m = load_model(tmp_path / "card.yaml")
    assert m.class_names == ("a", "b", "c") and m.spec.mean == (0.5,) and m.spec.std == (0.25,)
    with pytest.raises(ValueError, match="unknown input spec"):
        load_model("lenet", input_spec="nonsense")


def test_input_spec_caffe_round_trip():
    spec = PRESETS["caffe"]
    x = torch.rand(2, 3, 5, 5)
    y = spec.normalize(x)
    # BGR, 0-255, minus the BGR mean: blue channel first
    torch.testing.assert_close(y[:, 0], x[:, 2] * 255 - 104)
    torch.testing.assert_close(spec.denormalize(y), x)
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 3, H, W\)"):
        spec.normalize(torch.rand(1, 1, 5, 5))
    with pytest.raises(ValueError, match="channel_order"):
        InputSpec(channel_order="RGBA")


def test_builtin_lenet_card_has_its_training(lenet):
    assert lenet.meta["arch"] == "lenet"
    assert lenet.meta["val_accuracy"] >= 0.97
    assert lenet.class_names == tuple(str(i) for i in range(10))


def test_squeezenet_classifies_zebra():
    from convlens.data import conform, from_folder, read_image  # noqa: F401
    from convlens.data._transforms import Resize

    m = load_model("squeezenet1_1", weights=shared_path("models", "squeezenet1_1-caffe.pth"),
                   input_spec="caffe", classes=shared_path("models", "imagenet_classes.txt"))
    x = Resize((227, 227))(read_image(shared_path("data", "photos", "zebra.jpg")))[None]
    with torch.no_grad():
        p = m(x).softmax(1)[0]
    assert m.class_names[int(p.argmax())] == "zebra"
    assert p.max() > 0.9


def test_vgg4_variants_for_dissection_comparisons():
    from torch import nn

    plain, bn = load_model("vgg4").net, load_model("vgg4(batch_norm=True, dropout=0.0)").net
    names = [n for n, _ in bn.named_children()]
    assert names[:4] == ["conv1", "bn1", "relu1", "conv2"] and "bn4" in names
    assert all(isinstance(getattr(bn, f"bn{i}"), nn.BatchNorm2d) for i in range(1, 5))
    assert bn.dropout.p == 0.0 and plain.dropout.p == 0.5
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    x = torch.rand(2, 3, 32, 32)
    assert bn.eval()(x).shape == plain(x).shape == (2, 10)


@pytest.mark.parametrize("preset", ["imagenet", "caffe", "unit-gray"])
def test_input_spec_affine_is_normalize(preset):
    spec = PRESETS[preset]
    x = torch.rand(2, spec.channels, 5, 7, dtype=torch.float64)
    mix, bias = spec.affine()
    got = torch.einsum("ij,njhw->nihw", mix, x) + bias.view(1, -1, 1, 1)
    torch.testing.assert_close(got, spec.normalize(x))

"""The torchvision-layout built-ins: parameter counts, state-dict round trips, key layout."""

import pytest
import torch

from convlens import load_model
from convlens.nets import ARCHITECTURES
from tests._zoo import TORCHVISION_PARAMS, ZOO, one_thread, zoo_model

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)

# a few keys and shapes of torchvision's models, written down from its source independently of ours
_SPOT = {
    "resnet18": {"layer2.0.downsample.0.weight": (128, 64, 1, 1), "layer4.1.bn2.running_var": (512,),
                 "fc.weight": (1000, 512)},
    "resnet34": {"layer3.5.conv2.weight": (256, 256, 3, 3)},
    "resnet50": {"layer1.0.downsample.0.weight": (256, 64, 1, 1), "layer4.2.conv3.weight": (2048, 512, 1, 1),
                 "layer2.0.conv2.weight": (128, 128, 3, 3)},
    "mobilenet_v2": {"features.0.0.weight": (32, 3, 3, 3), "features.1.conv.0.0.weight": (32, 1, 3, 3),
                     "features.1.conv.1.weight": (16, 32, 1, 1), "features.2.conv.1.0.weight": (96, 1, 3, 3),
                     "features.18.0.weight": (1280, 320, 1, 1), "classifier.1.weight": (1000, 1280)},
    "mobilenet_v3_small": {"features.1.block.0.0.weight": (16, 1, 3, 3),
                           "features.1.block.1.fc1.weight": (8, 16, 1, 1),
                           "features.4.block.2.fc2.weight": (96, 24, 1, 1),
                           "features.12.0.weight": (576, 96, 1, 1), "classifier.0.weight": (1024, 576),
                           "classifier.3.weight": (1000, 1024)},
    "densenet121": {"features.conv0.weight": (64, 3, 7, 7),
                    "features.denseblock1.denselayer1.conv1.weight": (128, 64, 1, 1),
                    "features.denseblock4.denselayer16.conv2.weight": (32, 128, 3, 3),
                    "features.transition3.conv.weight": (512, 1024, 1, 1), "features.norm5.weight": (1024,),
                    "classifier.weight": (1000, 1024)},
    "efficientnet_b0": {"features.0.0.weight": (32, 3, 3, 3), "features.1.0.block.0.0.weight": (32, 1, 3, 3),
                        "features.1.0.block.1.fc1.weight": (8, 32, 1, 1),
                        "features.2.0.block.0.0.weight": (96, 16, 1, 1),
                        "features.8.0.weight": (1280, 320, 1, 1), "classifier.1.weight": (1000, 1280)},
    "convnext_tiny": {"features.0.0.weight": (96, 3, 4, 4), "features.0.1.weight": (96,),
                      "features.1.0.layer_scale": (96, 1, 1), "features.1.0.block.0.weight": (96, 1, 7, 7),
                      "features.1.0.block.3.weight": (384, 96), "features.2.1.weight": (192, 96, 2, 2),
                      "features.5.8.block.5.weight": (384, 1536), "classifier.0.weight": (768,),
                      "classifier.2.weight": (1000, 768)},
}


@pytest.mark.parametrize("name", ZOO)
def test_layout_matches_torchvision_counts_and_keys(name):
    net = zoo_model(name).net
    assert name in ARCHITECTURES
    assert sum(p.numel() for p in net.parameters()) == TORCHVISION_PARAMS[name]
    sd = net.state_dict()
    for key, shape in _SPOT[name].items():
        assert tuple(sd[key].shape) == shape, key


@pytest.mark.parametrize("name", ZOO)
def test_random_state_dict_saves_and_loads_back(name, tmp_path):
    src = zoo_model(name)
    path = tmp_path / f"{name}.pth"
    torch.save(src.net.state_dict(), path)
    back = load_model(name, weights=path, input_spec=src.spec, device="cpu")
    a, b = src.net.state_dict(), back.net.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(2, 3, *src.spec.size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(src(x), back(x))


@pytest.mark.parametrize("name", ZOO)
def test_keys_equal_torchvision_models_where_it_imports(name):
    try:
        import torchvision
    except Exception as e:  # not importable beside our CPU torch: see /work/shared/STACK.md
        pytest.skip(f"torchvision does not import here ({type(e).__name__})")
    ref = torchvision.models.get_model(name, weights=None).state_dict()
    ours = zoo_model(name).net.state_dict()
    assert list(ours) == list(ref)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in ref.items()}


def test_resnet50_weights_given_to_resnet18_name_the_keys(tmp_path):
    path = tmp_path / "r50.pth"
    torch.save(zoo_model("resnet50").net.state_dict(), path)
    with pytest.raises(ValueError) as e:
        load_model("resnet18", weights=path)
    msg = str(e.value)
    assert "do not fit this architecture" in msg and "layer1.0.conv3.weight" in msg
    assert "shape mismatch" in msg and "vs model" in msg


def test_eval_mode_forward_is_deterministic_and_finite():
    for name in ("efficientnet_b0", "convnext_tiny"):  # stochastic depth off in eval mode
        m = zoo_model(name)
        x = torch.rand(2, 3, *m.spec.size, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            y1, y2 = m(x), m(x)
        assert torch.equal(y1, y2) and torch.isfinite(y1).all()

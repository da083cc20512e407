"""Every method on every torchvision-layout built-in (random weights, 32 px): each one works, or
refuses in one line that says why it does not apply.

The table of which cells work and which refuse (and why) is in docs/notes/issue-16.md; a cell
listed in ``REFUSES`` must raise ``ValueError`` whose message matches, every other cell must run
and give a result of the right shape.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from convlens.data import ImageDataset
from tests._zoo import ZOO, one_thread, zoo_model

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
SIZE = 32
# a spatial layer inside the first blocks (through a residual addition, a concatenation, BatchNorm,
# depthwise convolutions), and the first convolution
MID = {"resnet18": "layer1.0.relu", "resnet34": "layer1.1", "resnet50": "layer1.0.relu#2",
       "mobilenet_v2": "features.2", "mobilenet_v3_small": "features.1.block.0",
       "densenet121": "features.denseblock1", "efficientnet_b0": "features.1",
       "convnext_tiny": "features.1"}
FIRST = {"resnet18": "conv1", "resnet34": "conv1", "resnet50": "conv1", "densenet121": "features.conv0"}
CANNOT = "DeconvNet cannot reverse layer"
# (arch, method) -> what the one-line refusal says
REFUSES = {
    ("mobilenet_v3_small", "deconvnet"): f"{CANNOT} 'features.0.2' .Hardswish.",
    ("efficientnet_b0", "deconvnet"): f"{CANNOT} 'features.0.2' .SiLU.",
    ("convnext_tiny", "deconvnet"): f"{CANNOT} 'features.0.1': it calls layer_norm, which has no DeconvNet rule",
}
METHODS = ("capture", "extraction", "top_images", "deconvnet", "guided_backprop", "saliency", "lime",
           "occlusion", "am", "inversion", "dissection", "adversarial", "topology", "report")
# the report on every architecture: its layer table and pages. Its analysis sections run the
# methods of the other cells; their full run (ResNet-50 at 224 px) is measured in
# docs/notes/issue-16.md -- the attribution section alone (an activation grid of every spatial
# layer) took over 10 minutes here for resnet18 at 32 px under load 40, too much for CI x 8.
REPORT = ["summary"]
TINY = {"budget": {"images": 6, "units": 1, "steps": 2, "samples": 1, "seconds": 1}}


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(6, 3, SIZE, SIZE, generator=g)


@pytest.fixture(scope="module")
def dataset(images):
    return ImageDataset([f"r{i}" for i in range(len(images))], lambda i: images[i], labels=[0, 1] * 3,
                        class_names=("a", "b"), name="random32")


@pytest.fixture(scope="module")
def concepts():
    from convlens.dissect import make_concepts

    return make_concepts(6, SIZE, seed=0)


def _run(method: str, m, arch: str, x: torch.Tensor, ds, concepts, tmp=None):
    import convlens as cl
    from convlens.dissect import dissect

    mid = MID[arch]
    if method == "capture":
        out = cl.capture(m, x, [mid])[mid]
        assert out.ndim == 4 and out.shape[0] == len(x) and torch.isfinite(out).all()
    elif method == "extraction":
        f = cl.extract_features(m, ds, mid, batch_size=4)
        assert f.values.shape[0] == len(ds)
    elif method == "top_images":
        t = cl.top_images(m, ds, mid, k=2, units=[0, 1], batch_size=4)
        assert t.values.shape[:2] == (2, 2)
    elif method == "deconvnet":
        p = cl.deconvnet(m, x[:2], f"{mid}:0", spread="map")
        assert p.maps.shape == tuple(x[:2].shape) and np.isfinite(p.maps).all()
    elif method == "guided_backprop":
        p = cl.guided_backprop(m, x[:2], f"{mid}:0", spread="map")
        q = cl.guided_backprop(m, x[:2], 3)
        assert p.maps.shape == q.maps.shape == tuple(x[:2].shape) and np.abs(q.maps).sum() > 0
    elif method == "saliency":
        s = cl.saliency(m, x[:2])
        assert s.saliency().shape == (2, SIZE, SIZE) and s.saliency().max() > 0
    elif method == "lime":
        r = cl.lime(m, x[0], labels=[0], n_segments=8, num_samples=24, seed=0)
        assert r.coefs.shape[0] == 1 and np.isfinite(r.coefs).all()
    elif method == "occlusion":
        o = cl.occlusion(m, x[0], window=16, stride=16, unit=f"{mid}:0")
        assert np.isfinite(np.asarray(o.sensitivity)).all()
    elif method == "am":
        a = cl.activation_maximization(m, mid, [0], steps=3, seed=0)
        assert np.isfinite(np.asarray(a.images)).all()
    elif method == "inversion":
        r = cl.invert(m, x[0], [mid], steps=3)
        assert np.isfinite(np.asarray(r.images)).all()
    elif method == "dissection":
        d = dissect(m, concepts, mid, batch_size=3)
        iou = d[mid].iou
        assert ((iou >= 0) & (iou <= 1)).all()
    elif method == "adversarial":
        r = cl.attack(m, x[:2], eps=0.03, steps=2)
        assert r.images.shape == tuple(x[:2].shape) if hasattr(r, "images") else r is not None
    elif method == "topology":
        layer = FIRST.get(arch, "features.0.0")
        cloud = cl.filter_cloud(m, layer)
        k = int(m.net.get_submodule(layer).weight.shape[-1])
        assert cloud.points.shape[1] == k * k and len(cloud) > 0
    elif method == "report":
        from convlens.report import build_report

        out = build_report(m, ds, tmp, only=REPORT, config=TINY)
        errors = {p.parent.name: p.read_text()[:300] for p in tmp.glob("*/_error.json")}
        assert errors == {} and out == tmp / "index.html" and out.is_file(), errors
        assert (tmp / "layer-conv1.html").is_file() or (tmp / "layer-features.0.0.html").is_file() \
            or (tmp / "layer-features.conv0.html").is_file()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", ZOO)
def test_method_works_or_says_why(arch, method, images, dataset, concepts, tmp_path):
    m = zoo_model(arch, SIZE)
    before = {k: v.clone() for k, v in list(m.net.state_dict().items())[:4]}
    why = REFUSES.get((arch, method))
    if why is None:
        _run(method, m, arch, images, dataset, concepts, tmp_path)
    else:
        with pytest.raises(ValueError) as e:
            _run(method, m, arch, images, dataset, concepts, tmp_path)
        msg = str(e.value)
        assert re.search(why, msg), msg
        assert "\n" not in msg
    assert not m.net.training
    assert all(torch.equal(v, m.net.state_dict()[k]) for k, v in before.items())


def test_relu6_rules_by_hand():
    """ReLU6 (MobileNetV2) is a ReLU with a ceiling: DeconvNet rectifies the signal, guided
    backpropagation and the gradient pass only where 0 < x < 6."""
    from torch import nn

    from convlens import Model
    from convlens.attribute import backproject
    from convlens.inputspec import PRESETS

    conv = nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(10.0)
    m = Model(nn.Sequential(conv, nn.ReLU6(inplace=True)), PRESETS["unit-gray"].__class__(
        (2, 3), 1, "RGB", (0.0, 1.0), (0.0,), (1.0,)))
    x = torch.tensor([[[[0.0, 0.3, 0.55], [0.65, 0.9, 1.0]]]])
    inside = ((10 * x > 0) & (10 * x < 6)).float() * 10
    for rule, want in [("gradient", inside), ("guided", inside), ("deconv", torch.full_like(x, 10.0))]:
        p = backproject(m, x, "1:0", rule=rule, spread="map", scale="one")
        np.testing.assert_allclose(p.maps, want.numpy(), rtol=0, atol=1e-6, err_msg=rule)

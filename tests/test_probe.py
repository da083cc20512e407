"""Hooks are always removed, the forward pass stops early, the user's model is left as it was."""

import pytest
import torch
from torch import nn

from convlens import capture, get_layer, load_model
from convlens.probe import Capture, LayerNotFoundError, frozen
from convlens.units import Unit, parse_unit, parse_unit_list


def hook_count(net: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in net.modules())


class Recorder(nn.Module):
    """Runs a list of modules in order and records which ran."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.b = nn.Conv2d(2, 2, 3, padding=1)
        self.c = nn.Linear(2 * 4 * 4, 3)
        self.ran: list[str] = []

    def forward(self, x):
        self.ran.append("a")
        x = self.relu(self.a(x))
        self.ran.append("b")
        x = self.b(x)
        self.ran.append("c")
        return self.c(x.flatten(1))


def test_forward_stops_after_deepest_requested_layer():
    net = Recorder()
    out = capture(net, torch.rand(1, 1, 4, 4), ["a"])
    # the first run on a network goes to the end, counting how often each module runs; any
    # later pass (the runner's cost probes) stops after "a"
    assert net.ran[:3] == ["a", "b", "c"] and set(net.ran[3:]) <= {"a"} and set(out) == {"a"}
    net.ran.clear()
    out = capture(net, torch.rand(1, 1, 4, 4), ["a"])
    assert net.ran == ["a"] and set(out) == {"a"}
    net.ran.clear()
    capture(net, torch.rand(1, 1, 4, 4), ["b", "a"])
    assert net.ran == ["a", "b"]


def test_hooks_removed_after_success_and_exception():
    net = Recorder()
    before = hook_count(net)
    capture(net, torch.rand(1, 1, 4, 4), ["a", "c"])
    assert hook_count(net) == before
    with pytest.raises(RuntimeError, match="boom"):
        with Capture(net, ["b"]) as cap:
            assert hook_count(net) == before + 1
            cap.run(lambda x: (_ for _ in ()).throw(RuntimeError("boom")), torch.rand(1, 1, 4, 4))
    assert hook_count(net) == before

    class Raises(Recorder):
        def forward(self, x):
            self.relu(self.a(x))
            raise RuntimeError("model raised")

    bad = Raises()
    with pytest.raises(RuntimeError, match="model raised"):
        capture(bad, torch.rand(1, 1, 4, 4), ["a", "b"], stop=False)
    assert hook_count(bad) == 0


def test_inplace_relu_does_not_overwrite_captured_output():
    net = Recorder()
    x = torch.randn(1, 1, 4, 4)
    conv_out = capture(net, x, ["a"])["a"]
    expected = net.a(x)  # before the in-place ReLU
    torch.testing.assert_close(conv_out, expected.detach())
    assert (conv_out < 0).any()  # the ReLU did not clip the captured tensor


def test_model_left_as_it_was():
    m = load_model("lenet")
    m.net.train()
    m.net.fc1.weight.requires_grad_(False)
    capture(m, m.example_input(2), ["conv2"])
    assert m.net.training and all(mod.training for mod in m.net.modules())
    assert not m.net.fc1.weight.requires_grad and m.net.conv1.weight.requires_grad
    with pytest.raises(ZeroDivisionError):
        with frozen(m.net):
            raise ZeroDivisionError("inside frozen")
    assert m.net.training and m.net.conv1.weight.requires_grad


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 4)
        self.out = nn.Linear(4, 2)
        self.ran = 0

    def forward(self, x):
        h = self.relu(self.fc(self.relu(x.clone())))
        self.ran += 1  # counts passes that got past the second ReLU
        return self.out(h)


@pytest.mark.parametrize("stop", [True, False])
def test_a_module_that_runs_twice_gives_each_call_and_its_last(stop):
    net = Twice()
    x = torch.randn(3, 4)
    first = x.clamp_min(0)
    second = net.fc(first).clamp_min(0).detach()
    for _ in range(2):  # the first run learns the counts, the second may stop early
        out = capture(net, x, ["relu#1", "relu#2", "relu"], stop=stop)
        torch.testing.assert_close(out["relu#1"], first)  # not overwritten by the in-place reuse
        torch.testing.assert_close(out["relu#2"], second)
        torch.testing.assert_close(out["relu"], second)
        alone = capture(net, x, ["relu#1"], stop=stop)["relu#1"]
        torch.testing.assert_close(alone, first)
    with Capture(net, ["relu"]) as cap:
        cap.run(net, x)
        assert cap.calls["relu"] == 2 and cap.calls["fc"] == 1
    with pytest.raises(ValueError, match=r"call 3 of 'relu', which runs 2 time"):
        capture(net, x, ["relu#3"])
    assert get_layer(net, "relu#2") is net.relu


def test_reused_relu_in_a_residual_block_stops_early_once_counted():
    from tests._zoo import zoo_model

    m = zoo_model("resnet18")
    blk = m.net.layer1[0]
    x = torch.rand(2, 3, *m.spec.size)
    with torch.no_grad():
        h = m.net.maxpool(m.net.relu(m.net.bn1(m.net.conv1(m.spec.normalize(x)))))
        inner = torch.relu(blk.bn1(blk.conv1(h)))
        block = torch.relu(blk.bn2(blk.conv2(inner)) + h)
    out = capture(m, x, ["layer1.0.relu#1", "layer1.0.relu"])
    torch.testing.assert_close(out["layer1.0.relu#1"], inner)
    torch.testing.assert_close(out["layer1.0.relu"], block)
    ran = []
    with Capture(m.net, ["layer1.0.relu"]) as cap, torch.no_grad():
        h2 = m.net.layer2.register_forward_pre_hook(lambda mod, a: ran.append("layer2"))
        try:
            cap.run(m, x)
        finally:
            h2.remove()
    assert ran == [] and cap.calls["layer1.0.relu"] == 2


def test_unknown_layer_lists_closest_names():
    net = load_model("lenet").net
    with pytest.raises(LayerNotFoundError, match=r"no layer named .conv3. in this network. Closest: conv2, conv1"):
        get_layer(net, "conv3")


def test_unit_addresses():
    assert parse_unit("features.28:12") == Unit("features.28", 12)
    assert parse_unit("classifier.6:981") == Unit("classifier.6", 981)
    assert parse_unit("conv1:3@5,7").position == (5, 7)
    with pytest.raises(ValueError, match="write LAYER:INDEX"):
        parse_unit("features.28")
    with pytest.raises(ValueError, match="out of range: layer 'conv1' has 6 units"):
        parse_unit("conv1:6").validate((6, 28, 28))
    with pytest.raises(ValueError, match="does not fit"):
        parse_unit("conv1:1@30,1").validate((6, 28, 28))
    assert parse_unit_list("all", 4) == [0, 1, 2, 3]
    assert parse_unit_list("0-2,5", 6) == [0, 1, 2, 5]
    with pytest.raises(ValueError, match="out of range"):
        parse_unit_list("0-63", 10)


def test_capture_with_gradient():
    m = load_model("lenet")
    x = m.example_input(1).requires_grad_(True)
    out = capture(m, x, ["conv2"], grad=True)["conv2"]
    out[0, 3].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert m.net.conv1.weight.grad is None

"""Hooks are always removed, the forward pass stops early, the user's model is left as it was."""

import warnings

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


def test_warns_when_a_hooked_module_runs_twice():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = nn.ReLU()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.relu(self.fc(self.relu(x)))

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        capture(Twice(), torch.randn(2, 4), ["relu"], stop=False)
    assert any("ran more than once" in str(x.message) for x in w)


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

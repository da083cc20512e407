"""convlens.fast: channels-last and bfloat16 evaluation give the plain results, and leave the
network as they found it."""

import warnings

import pytest
import torch

from convlens import load_model
from convlens.fast import bf16_native, can_fuse, fast, resolve_precision
from convlens.runner import capture
from tests.conftest import dtype_tol


def test_fast_matches_plain_and_restores_the_network():
    model = load_model("lenet-digits")
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = model(x)
    conv = [p for p in model.net.parameters() if p.ndim == 4][1]  # 6 input channels
    assert conv.is_contiguous()
    with fast(model.net) as dtype:
        assert dtype == torch.float32
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
        out = model(x)
        assert not out.requires_grad
        acts = capture(model, x, "conv2")["conv2"]
    assert conv.is_contiguous()
    torch.testing.assert_close(out, plain, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(acts, capture(model, x, "conv2")["conv2"], rtol=1e-5, atol=1e-5)


def test_fast_bfloat16_is_close_and_grad_can_stay_on():
    model = load_model("lenet-digits")
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        p = model(x).softmax(1)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        with fast(model.net, "bfloat16") as dtype:
            q = model(x).float().softmax(1)
    assert bool(said) != bf16_native()  # warned exactly when bfloat16 would be emulated
    assert dtype == torch.bfloat16
    assert (q - p).abs().max() < 0.05
    assert (q.argmax(1) == p.argmax(1)).float().mean() >= 0.85
    x.requires_grad_(True)
    with fast(model.net, grad=True):
        model(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_unknown_precision_is_named():
    with pytest.raises(ValueError, match="unknown precision 'half'.*float32, bfloat16, auto"):
        resolve_precision("half")
    assert resolve_precision("auto") == (torch.bfloat16 if bf16_native() else torch.float32)


class _Fusable(torch.nn.Module):
    """conv->ReLU module pairs (fusable), a conv feeding F.relu and a ReLU module shared with a
    pooling output (both left alone)."""

    def __init__(self):
        super().__init__()
        self.c1, self.r1 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(inplace=True)
        self.c2, self.c3 = torch.nn.Conv2d(8, 8, 3, stride=2), torch.nn.Conv2d(8, 8, 1)
        self.shared = torch.nn.ReLU()
        self.pool = torch.nn.MaxPool2d(2, ceil_mode=True)

    def forward(self, x):
        x = self.pool(self.r1(self.c1(x)))
        y = torch.nn.functional.relu(self.c2(x))
        return torch.cat([self.shared(self.c3(y)), self.shared(y)], 1).mean((2, 3))


@pytest.mark.parametrize("kernel", ["emulated", "native"])
def test_fused_conv_relu_gives_the_unfused_bfloat16_result_and_is_undone(kernel, monkeypatch):
    """The emulated case runs on every CPU (the composed conv+ReLU, bfloat16 emulated where the
    CPU has no bfloat16 units: what such a CPU runs); oneDNN's fused kernel where can_fuse().
    The pairing, patching and undoing are the same code either way."""
    if kernel == "native" and not can_fuse():
        pytest.skip("oneDNN's fused bfloat16 kernel needs native bfloat16 (the emulated case ran)")
    if kernel == "emulated":
        monkeypatch.setattr("convlens.fast.can_fuse", lambda device="cpu": False)
    net = _Fusable().eval()
    x = torch.rand(4, 3, 15, 15, generator=torch.Generator().manual_seed(0))
    with fast(net, "bfloat16"):
        plain = net(x).float()
    calls = []
    with fast(net, "bfloat16", fuse=True):
        fused_here = [n for n, m in net.named_modules() if "forward" in vars(m)]
        fused = net(x).float()
        with fast(net, "bfloat16", fuse=True):  # nested: the same result
            torch.testing.assert_close(net(x).float(), fused)
    assert fused_here == ["c1", "r1"]  # c2 feeds F.relu; `shared` also follows y
    # both round each convolution's output to bfloat16 (one unit: eps/2 relative), in another
    # order; the reference is float32
    with torch.no_grad():
        exact = net(x)
    eps = torch.finfo(torch.bfloat16).eps
    big = exact.abs().max().item()
    torch.testing.assert_close(fused, plain, rtol=eps, atol=dtype_tol(torch.bfloat16, big, 8 * 9))
    torch.testing.assert_close(fused, exact, rtol=eps, atol=dtype_tol(torch.bfloat16, big, 8 * 9))
    assert not any("forward" in vars(m) for m in net.modules())  # undone
    net.c1.register_forward_hook(lambda *a: calls.append(1))
    with fast(net, "bfloat16", fuse=True):  # a watched convolution is not fused
        assert not any("forward" in vars(m) for m in net.modules())
        net(x)
    assert calls == [1]


def test_freed_memory_is_kept_for_reuse():
    """After fast(), a large tensor allocated and freed again and again stops costing page
    faults once the heap has grown to hold it (glibc otherwise unmaps every block over 32 MiB on
    free: 16384 faults for each 64 MiB round)."""
    import platform
    import resource

    from convlens.fast import keep_freed_memory

    model = load_model("lenet-digits")
    with fast(model.net):
        pass
    if not (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"):
        assert keep_freed_memory() is False
        return
    assert keep_freed_memory() is True
    faults = []
    for _ in range(6):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = torch.empty(16 * 2**20)          # 64 MiB, written to the end
        t.fill_(1.0)
        del t
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    assert max(faults[3:]) < 1000, faults


def test_kept_memory_is_handed_back_above_a_bound():
    """What keep_freed_memory keeps is bounded: above ``above`` bytes resident, the free pages go
    back to the kernel (so a long run's heap cannot fragment without limit: issue 14's 4.2 GiB
    over 10 000 images); below it nothing is released."""
    import platform

    from convlens.fast import keep_freed_memory, release_kept_memory, resident_memory

    with fast(load_model("lenet-digits").net):
        pass
    if not (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"):
        assert release_kept_memory(0) is False
        return
    assert keep_freed_memory() is True
    t = torch.empty(64 * 2**20)              # 256 MiB on the heap, written to the end, freed
    t.fill_(1.0)
    del t
    kept = resident_memory()
    assert release_kept_memory(kept + 2**30) is False        # under the bound: kept
    assert resident_memory() > kept - 2**26
    assert release_kept_memory(kept - 2**27) is True
    assert resident_memory() < kept - 2**27, (kept, resident_memory())  # most of the 256 MiB went back

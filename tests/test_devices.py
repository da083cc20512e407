"""--device and device=: resolved once, checked with a message that names the fix; no library
code assumes the CPU."""

import ast
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from convlens import load_model
from convlens.devices import resolve_device, to_numpy

SRC = Path(__file__).resolve().parents[1] / "src" / "convlens"
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def test_auto_and_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu0': use cpu, cuda, cuda:N, mps"):
        resolve_device("gpu0")


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_cuda_says_the_fix(name):
    with pytest.raises(ValueError, match=r"CUDA is not available here.*Use --device cpu"):
        resolve_device(name)
    with pytest.raises(ValueError, match="CUDA is not available"):
        load_model("lenet", device=name)


@no_cuda
def test_cli_device_cuda_without_cuda_is_one_line_and_exit_2():
    from convlens.cli import app

    r = CliRunner().invoke(app, ["layers", "lenet", "--device", "cuda"])
    assert r.exit_code == 2, r.output
    msg = r.output.strip()
    assert "CUDA is not available here" in msg and "--device cpu" in msg
    assert "Traceback" not in r.output


def test_load_model_moves_what_it_builds_and_leaves_a_given_module():
    m = load_model("lenet", device="cpu")
    assert m.device == torch.device("cpu")
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3)).double()
    given = load_model(net)
    assert given.net is net and next(net.parameters()).dtype == torch.float64


def test_every_command_that_runs_a_network_takes_device():
    from typer.main import get_command

    from convlens.cli import app

    without = []

    def walk(group, prefix=""):
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                walk(cmd, f"{prefix}{name} ")
                continue
            opts = {o for p in cmd.params for o in p.opts}
            runs_a_model = any(p.name in ("model", "arch", "run") for p in cmd.params) or name == "demo"
            if runs_a_model and "--device" not in opts:
                without.append(prefix + name)

    walk(get_command(app))
    # topology analyze reads weights only (filter clouds), on the CPU
    assert without == ["topology analyze"], without


def test_to_numpy_takes_bfloat16_and_grad_tensors():
    t = torch.ones(2, dtype=torch.bfloat16, requires_grad=True)
    assert to_numpy(t).dtype.name == "float32"


def _bare_numpy_calls(path: Path) -> list[int]:
    """Lines where ``.numpy()`` is called on something that is not ``.cpu()``: a tensor on a
    GPU would fail there."""
    def calls_cpu(node) -> bool:  # .cpu() somewhere in the chain: x.cpu().double().numpy()
        while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "cpu":
                return True
            node = node.func.value
        return False

    bad = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "numpy":
            if not calls_cpu(node.func.value):
                bad.append(node.lineno)
    return bad


def test_no_library_code_calls_numpy_on_a_tensor_that_may_be_on_a_device():
    found = {str(p.relative_to(SRC)): lines for p in sorted(SRC.rglob("*.py"))
             if (lines := _bare_numpy_calls(p))}
    assert found == {}, f"call .cpu().numpy() (or convlens.devices.to_numpy) instead: {found}"


def test_fast_layout_and_precision_choices_per_device():
    from convlens.fast import bf16_native, channels_last_pays, resolve_precision

    assert channels_last_pays("cpu") and channels_last_pays("cuda") and not channels_last_pays("mps")
    assert not bf16_native("mps") and resolve_precision("auto", "mps") == torch.float32
    if not torch.cuda.is_available():
        assert not bf16_native("cuda")  # no GPU: never a bfloat16 pick for it

"""The command line: layers, errors as one line with exit status 2, the demo report."""

import subprocess
import sys

from typer.testing import CliRunner

from convlens.cli import app

runner = CliRunner()


def test_layers_lists_every_layer(tmp_path):
    r = runner.invoke(app, ["layers", "lenet-digits", "--csv", str(tmp_path / "l.csv")])
    assert r.exit_code == 0, r.output
    for name in ("conv1", "pool2", "fc3", "16x10x10", "61,706"):
        assert name in r.output
    assert (tmp_path / "l.csv").read_text().splitlines()[1].startswith("conv1,Conv2d,6x28x28,156")


def test_user_errors_are_one_clear_line():
    r = runner.invoke(app, ["layers", "nonexistent-model"])
    assert r.exit_code == 2
    assert "error:" in r.output and "neither a file nor a known name" in r.output
    assert "Traceback" not in r.output


def test_demo_writes_report(tmp_path):
    r = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--only", "summary", "--only", "training"])
    assert r.exit_code == 0, r.output
    html = (tmp_path / "demo" / "index.html").read_text()
    assert "Held-out accuracy" in html and "conv1" in html
    assert (tmp_path / "demo" / "summary" / "layers.csv").is_file()
    assert (tmp_path / "demo" / "training" / "curve.png").stat().st_size > 1000


def test_train_command_writes_curve_and_card(tmp_path):
    r = runner.invoke(app, ["train", "lenet", "digits", "--steps", "6", "--batch-size", "16",
                            "--limit", "200", "--snapshot-every", "3", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "curve.png").is_file() and (tmp_path / "model.json").is_file()
    assert (tmp_path / "snapshots" / "step_0000006.json").is_file()


def test_help_is_fast_and_lazy():
    code = "import sys, convlens.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

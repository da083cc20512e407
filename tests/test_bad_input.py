"""Bad input on the command line: for every case, exit status 2, one line on stderr that names
the problem (and the way out), no traceback, and nothing left in the output folder."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from convlens.cli import app

runner = CliRunner()


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` with almost no pixel data (what a
    decompression bomb looks like to a reader that trusts the header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every bad file once: weights, cards, factories, class lists, images, manifests, arrays."""
    from PIL import Image

    from convlens import load_model

    d = tmp_path_factory.mktemp("bad")
    lenet = load_model("lenet-digits").net
    state = lenet.state_dict()
    (d / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    (d / "empty.pt").write_bytes(b"")
    buf = io.BytesIO()
    torch.save(state, buf)
    (d / "truncated.pt").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    torch.save(lenet, d / "pickle.pt")  # a whole module: a full pickle
    torch.save({k: v.clone().fill_(float("nan")) if k == "conv1.weight" else v for k, v in state.items()},
               d / "nan.pt")
    torch.save({k: v.clone().fill_(float("inf")) if k == "fc3.bias" else v for k, v in state.items()},
               d / "inf.pt")
    torch.save(load_model("vgg4").net.state_dict(), d / "vgg4.pt")
    torch.save([1, 2, 3], d / "list.pt")
    (d / "weights-folder").mkdir()
    (d / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    (d / "bad-weights.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (d / "misspelt.yaml").write_text("arch: lenet\nweight: lenet.pt\n")
    (d / "malformed.yaml").write_text("arch: lenet\nweights: [unclosed\n")
    (d / "list.yaml").write_text("- lenet\n- weights.pt\n")
    (d / "noarch.yaml").write_text("weights: x.pt\n")
    (d / "nullarch.json").write_text(json.dumps({"arch": None, "weights": "model.pt"}))
    (d / "factory.py").write_text("import torch\ndef build():\n    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))\n"
                                  "def broken():\n    raise RuntimeError('no GPU here')\n"
                                  "def not_a_net():\n    return 42\n")
    (d / "factory-card.yaml").write_text(f"arch: {d / 'factory.py'}:build\n")
    (d / "lenet_factory.py").write_text("from convlens.nets.small import lenet\ndef build():\n    return lenet()\n")
    (d / "syntax.py").write_text("def build(:\n    pass\n")
    (d / "raises.py").write_text("raise ImportError('needs a package that is not installed')\n")
    (d / "five.txt").write_text("a\nb\nc\nd\ne\n")
    (d / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1") * 10)
    (d / "blank.txt").write_text("\n\n")
    (d / "spec.yaml").write_text("channels: 3\nsize: [28, 28]\n")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(d / "tiny.png")
    _png_header_only(d / "bomb.png", 20000, 10000)
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (d / "empty.csv").write_text("")
    (d / "header-only.csv").write_text("path,label\n")
    (d / "nopath.csv").write_text("file,label\na.png,0\n")
    (d / "missing-files.csv").write_text("path,label\nnope1.png,0\nnope2.png,1\n")
    (d / "latin1.csv").write_bytes("path,label\ncaf\xe9.png,0\n".encode("latin-1"))
    (d / "corrupt.npz").write_bytes(b"garbage that is not a zip file at all")
    np.savez(d / "wrongkeys.npz", images=np.zeros((2, 8, 8)))
    np.savez(d / "flat.npz", x=np.zeros((4, 10)), y=np.zeros(4))
    np.savez(d / "noimages.npz", x=np.zeros((0, 8, 8)), y=np.zeros(0))
    (d / "emptydir").mkdir()
    (d / "corrupt-only").mkdir()
    (d / "corrupt-only" / "a.png").write_bytes(b"not a png")
    (d / "unknownkey.yaml").write_text("sectons: [summary]\n")
    (d / "unknownsection.yaml").write_text("summry: {}\n")
    (d / "badbudget.yaml").write_text("budget: {imags: 10}\n")
    (d / "badyaml.yaml").write_text("sections: [summary\n")
    (d / "badseed.yaml").write_text("seed: -3\n")
    (d / "afile").write_text("I am a file\n")
    (d / "previous").mkdir()
    (d / "previous" / "old.png").write_bytes(b"old")
    (d / "foreign").mkdir()
    (d / "foreign" / "notes.txt").write_text("mine")
    (d / "foreign" / ".convlens").write_text("")
    return d


# (id, argv with {d} = the files folder and {out} = a fresh output folder, words the line must
# contain: the problem, and where there is one, the fix)
CASES = [
    # -- models and weights
    ("unknown-model", ["layers", "no-such-model"], ["neither a file nor a known name", "architectures"]),
    ("weights-missing", ["layers", "lenet", "-w", "{d}/nope.pt"], ["not found", "nope.pt"]),
    ("weights-folder", ["layers", "lenet", "-w", "{d}/weights-folder"], ["is a folder", "give the"]),
    ("weights-random-bytes", ["layers", "lenet", "-w", "{d}/random.pt"], ["not a weights file", "corrupt"]),
    ("weights-random-trusted", ["layers", "lenet", "-w", "{d}/random.pt", "--trust-pickle"], ["corrupt"]),
    ("weights-empty", ["layers", "lenet", "-w", "{d}/empty.pt"], ["empty", "again"]),
    ("weights-truncated", ["layers", "lenet", "-w", "{d}/truncated.pt"], ["truncated", "again"]),
    ("weights-truncated-trusted", ["layers", "lenet", "-w", "{d}/truncated.pt", "--trust-pickle"], ["truncated"]),
    ("weights-full-pickle", ["layers", "lenet", "-w", "{d}/pickle.pt"], ["full pickle", "--trust-pickle"]),
    ("weights-list", ["layers", "lenet", "-w", "{d}/list.pt"], ["not a state dict"]),
    ("weights-nan", ["layers", "lenet", "-w", "{d}/nan.pt"], ["NaN or infinite", "conv1.weight", "snapshot"]),
    ("weights-inf", ["layers", "lenet", "-w", "{d}/inf.pt"], ["NaN or infinite", "fc3.bias"]),
    ("weights-wrong-arch", ["layers", "lenet", "-w", "{d}/vgg4.pt"], ["do not fit this architecture", "convlens layers"]),
    ("weights-bad-safetensors", ["layers", "lenet", "-w", "{d}/bad.safetensors"], ["safetensors", "again"]),
    ("weights-bad-npz", ["layers", "lenet", "-w", "{d}/bad-weights.npz"], ["not a readable .npz"]),
    ("state-dict-without-arch", ["layers", "{d}/vgg4.pt"], ["needs its architecture", "--weights"]),
    ("arch-bad-arguments", ["layers", "M(64,"], ["neither a file nor a known name"]),
    ("card-misspelt-key", ["layers", "{d}/misspelt.yaml"], ["unknown key 'weight'", "did you mean 'weights'"]),
    ("card-malformed-yaml", ["layers", "{d}/malformed.yaml"], ["not valid YAML", "line"]),
    ("card-not-mapping", ["layers", "{d}/list.yaml"], ["must be a mapping"]),
    ("card-no-arch", ["layers", "{d}/noarch.yaml"], ["needs at least an 'arch'"]),
    ("card-null-arch", ["layers", "{d}/nullarch.json"], ["no architecture", "FILE.py:FUNCTION"]),
    ("card-factory-untrusted", ["layers", "{d}/factory-card.yaml"], ["run that file's code", "--trust-pickle"]),
    ("factory-missing-file", ["layers", "{d}/nope.py:build"], ["factory file not found"]),
    ("factory-missing-function", ["layers", "{d}/factory.py:nope"], ["no callable 'nope'", "build"]),
    ("factory-syntax-error", ["layers", "{d}/syntax.py:build"], ["syntax error at line 1", "fix the file"]),
    ("factory-raises-on-import", ["layers", "{d}/raises.py:build"], ["ImportError", "fix the file"]),
    ("factory-raises", ["layers", "{d}/factory.py:broken"], ["raised RuntimeError", "no GPU here"]),
    ("factory-not-a-module", ["layers", "{d}/factory.py:not_a_net"], ["returned int", "nn.Module"]),
    ("spec-rgb-on-grey-model", ["layers", "lenet-digits", "--input-spec", "unit-rgb"], ["3-channel", "--input-spec unit-gray"]),
    ("spec-file-rgb-on-grey", ["layers", "lenet-digits", "--input-spec", "{d}/spec.yaml"], ["3-channel", "unit-gray"]),
    ("spec-unknown", ["layers", "lenet-digits", "--input-spec", "imagenett"], ["imagenett"]),
    ("classes-missing", ["layers", "lenet-digits", "--classes", "{d}/nope.txt"], ["class-name file not found"]),
    ("classes-wrong-count", ["layers", "lenet-digits", "--classes", "{d}/five.txt"], ["5 classes", "10 outputs", "one name per output"]),
    ("classes-latin1", ["layers", "lenet-digits", "--classes", "{d}/latin1.txt"], ["latin1.txt", "not UTF-8", "iconv"]),
    ("classes-blank", ["layers", "lenet-digits", "--classes", "{d}/blank.txt"], ["holds no names"]),
    # -- data
    ("data-missing", ["top-images", "lenet-digits", "nowhere", "--layer", "conv1", "--out", "{out}"], ["not found", "built-in"]),
    ("data-photo-missing", ["lime", "lenet-digits", "{d}/nope.jpg", "--out", "{out}"], ["not found", "nope.jpg"]),
    ("data-empty-folder", ["top-images", "lenet-digits", "{d}/emptydir", "--layer", "conv1", "--out", "{out}"], ["no images found"]),
    ("data-only-corrupt", ["top-images", "lenet-digits", "{d}/corrupt-only", "--layer", "conv1", "--out", "{out}"], ["is empty: none of 1 file(s) could be read", "a.png"]),
    ("data-empty-csv", ["top-images", "lenet-digits", "{d}/empty.csv", "--layer", "conv1", "--out", "{out}"], ["is empty", "header"]),
    ("data-csv-no-rows", ["top-images", "lenet-digits", "{d}/header-only.csv", "--layer", "conv1", "--out", "{out}"], ["no rows"]),
    ("data-csv-no-path", ["top-images", "lenet-digits", "{d}/nopath.csv", "--layer", "conv1", "--out", "{out}"], ["'path' column", "file,label"]),
    ("data-csv-missing-strict", ["top-images", "lenet-digits", "{d}/missing-files.csv", "--layer", "conv1", "--strict", "--out", "{out}"], ["do not exist"]),
    ("data-csv-latin1", ["top-images", "lenet-digits", "{d}/latin1.csv", "--layer", "conv1", "--out", "{out}"], ["latin1.csv", "not UTF-8"]),
    ("data-npz-corrupt", ["top-images", "lenet-digits", "{d}/corrupt.npz", "--layer", "conv1", "--out", "{out}"], ["not a readable .npz"]),
    ("data-npz-wrong-keys", ["top-images", "lenet-digits", "{d}/wrongkeys.npz", "--layer", "conv1", "--out", "{out}"], ["expected 'x'"]),
    ("data-npz-flat", ["top-images", "lenet-digits", "{d}/flat.npz", "--layer", "conv1", "--out", "{out}"], ["(N, H, W)"]),
    ("data-npz-no-images", ["top-images", "lenet-digits", "{d}/noimages.npz", "--layer", "conv1", "--out", "{out}"], ["no images"]),
    ("data-npz-bad-split", ["top-images", "lenet-digits", "{d}/wrongkeys.npz:valid", "--layer", "conv1", "--out", "{out}"], ["expected 'x'"]),
    ("image-1px", ["lime", "lenet-digits", "{d}/tiny.png", "--out", "{out}"], ["1x1 px", "too small"]),
    ("image-bomb", ["lime", "lenet-digits", "{d}/bomb.png", "--out", "{out}"], ["bomb.png", "too large", "shrink"]),
    ("image-corrupt", ["lime", "lenet-digits", "{d}/corrupt.jpg", "--out", "{out}"], ["cannot read image", "corrupt.jpg"]),
    ("index-out-of-range", ["lime", "lenet-digits", "digits:99999", "--out", "{out}"], ["image 99999 is out of range", "1797"]),
    ("index-option-gone", ["lime", "lenet-digits", "digits", "-i", "3", "--out", "{out}"], ["--index is gone", "digits:3"]),
    ("index-not-a-list", ["occlusion", "lenet-digits", "digits:3-1", "--out", "{out}"], ["empty image range"]),
    ("image-one-only", ["invert", "lenet-digits", "digits:0,1", "--out", "{out}"], ["names 2 images", "takes one"]),
    ("image-missing", ["invert", "lenet-digits", "nope.png", "--out", "{out}"], ["image not found", "DATA:INDEX"]),
    ("limit-zero", ["top-images", "lenet-digits", "digits", "--layer", "conv1", "--limit", "0", "--out", "{out}"], ["--limit must be at least 1"]),
    ("tile-zero", ["embed", "lenet-digits", "digits", "--layer", "relu4", "--tile", "0", "--out", "{out}"], ["--tile must be at least 1"]),
    ("tile-too-big", ["embed", "lenet-digits", "digits", "--layer", "relu4", "--tile", "64", "--resize", "none", "--out", "{out}"], ["larger than the image", "--tile 28 or less"]),
    ("resize-garbage", ["embed", "lenet-digits", "digits", "--layer", "relu4", "--resize", "big", "--out", "{out}"], ["cannot read size 'big'", "224x256"]),
    # -- options
    ("steps-zero", ["visualize", "lenet-digits", "--layer", "conv1", "--steps", "0", "--out", "{out}"], ["--steps must be at least 1"]),
    ("seeds-negative", ["embed", "lenet-digits", "digits", "--layer", "relu4", "--seeds", "-1", "--out", "{out}"], ["--seeds must be 0 or more"]),
    ("lime-n-segments-zero", ["lime", "lenet-digits", "digits", "--n-segments", "0", "--out", "{out}"], ["--n-segments must be at least 1"]),
    ("lime-samples-zero", ["lime", "lenet-digits", "digits", "--samples", "0", "--out", "{out}"], ["--samples must be at least 1"]),
    ("occlusion-window-zero", ["occlusion", "lenet-digits", "digits", "--window", "0", "--out", "{out}"], ["--window must be at least 1"]),
    ("top-images-k-zero", ["top-images", "lenet-digits", "digits", "--layer", "conv1", "--k", "0", "--out", "{out}"], ["--k must be at least 1"]),
    ("train-epochs-zero", ["train", "lenet", "digits", "--epochs", "0", "--out", "{out}"], ["--epochs must be at least 1"]),
    ("train-batch-zero", ["train", "lenet", "digits", "--batch-size", "0", "--out", "{out}"], ["--batch-size must be at least 1"]),
    ("unit-without-index", ["deconv", "lenet-digits", "digits", "--unit", "conv2", "--out", "{out}"], ["is a layer, not a unit", "conv2:0"]),
    ("unit-unknown-layer", ["deconv", "lenet-digits", "digits", "--unit", "conv9:1", "--out", "{out}"], ["conv9"]),
    ("unit-out-of-range", ["deconv", "lenet-digits", "digits", "--unit", "conv2:99", "--out", "{out}"], ["out of range", "16 units"]),
    ("layer-unknown", ["top-images", "lenet-digits", "digits", "--layer", "conv22", "--out", "{out}"], ["conv22"]),
    ("class-unknown", ["lime", "lenet-digits", "digits", "-l", "elephant", "--out", "{out}"], ["no class named 'elephant'", "--classes"]),
    ("class-ambiguous", ["lime", "lenet-digits", "digits", "--classes", "{d}/ten.txt", "-l", "elephant", "--out", "{out}"],
     ["matches 2 classes", "Indian elephant", "African elephant"]),
    ("class-out-of-range", ["lime", "lenet-digits", "digits", "-l", "12", "--out", "{out}"], ["class 12 is out of range", "0-9"]),
    ("precision-unknown", ["lime", "lenet-digits", "digits", "--precision", "half", "--out", "{out}"], ["unknown precision 'half'"]),
    # -- report configuration
    ("report-only-unknown", ["report", "lenet-digits", "digits", "--only", "sumary", "--out", "{out}"], ["unknown report section 'sumary'", "summary"]),
    ("report-config-unknown-key", ["report", "lenet-digits", "digits", "-c", "{d}/unknownkey.yaml", "--out", "{out}"], ["unknown key 'sectons'", "'sections'"]),
    ("report-config-unknown-section", ["report", "lenet-digits", "digits", "-c", "{d}/unknownsection.yaml", "--out", "{out}"], ["'summry'", "'summary'"]),
    ("report-config-bad-budget", ["report", "lenet-digits", "digits", "-c", "{d}/badbudget.yaml", "--out", "{out}"], ["imags", "images"]),
    ("report-config-bad-yaml", ["report", "lenet-digits", "digits", "-c", "{d}/badyaml.yaml", "--out", "{out}"], ["not valid YAML"]),
    ("report-config-bad-seed", ["report", "lenet-digits", "digits", "-c", "{d}/badseed.yaml", "--out", "{out}"], ["'seed' must be a non-negative integer"]),
    ("report-config-missing", ["report", "lenet-digits", "digits", "-c", "{d}/nope.yaml", "--out", "{out}"], ["report configuration not found"]),
    # -- output folders (checked before any work)
    ("out-is-a-file", ["top-images", "lenet-digits", "digits", "--layer", "conv1", "--out", "{d}/afile"], ["is an existing file", "choose a folder"]),
    ("out-below-a-file", ["top-images", "lenet-digits", "digits", "--layer", "conv1", "--out", "{d}/afile/sub"], ["is a file"]),
    ("out-not-empty", ["top-images", "lenet-digits", "digits", "--layer", "conv1", "--out", "{d}/previous"], ["already holds 1 file", "--overwrite"]),
    ("out-not-ours", ["top-images", "lenet-digits", "digits", "--layer", "conv1", "--out", "{d}/previous", "--overwrite"], ["not written by convlens", "empty folder"]),
]


@pytest.fixture(scope="module", autouse=True)
def _ten_names(files):
    names = ["Indian elephant, Elephas maximus", "African elephant, Loxodonta africana"] + [f"c{i}" for i in range(8)]
    (files / "ten.txt").write_text("\n".join(names) + "\n")


def test_there_are_enough_cases():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("argv,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(files, tmp_path, argv, words):
    out = tmp_path / "out"
    args = [a.replace("{d}", str(files)).replace("{out}", str(out)) for a in argv]
    before = {p: sorted(x.name for x in p.iterdir()) for p in (files / "previous", files / "foreign")}
    r = runner.invoke(app, args)
    err = r.stderr.strip()
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])
    assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())
    after = {p: sorted(x.name for x in p.iterdir()) for p in before}
    assert after == before  # earlier results are neither removed nor added to


def test_overwrite_replaces_a_previous_run_and_a_failed_rerun_restores_it(tmp_path):
    out = tmp_path / "top"
    args = ["top-images", "lenet-digits", "digits", "--layer", "conv1", "--limit", "20", "--k", "2", "--out", str(out)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    first = sorted(p.name for p in out.iterdir())
    assert ".convlens" in first
    (out / "stale-from-an-older-version.png").write_bytes(b"old")
    r = runner.invoke(app, args)  # without --overwrite: refused, nothing changed
    assert r.exit_code == 2 and "--overwrite" in r.stderr
    r = runner.invoke(app, [*args[:4], "conv22", *args[5:], "--overwrite"])  # fails: old files back
    assert r.exit_code == 2
    assert sorted(p.name for p in out.iterdir()) == sorted([*first, "stale-from-an-older-version.png"])
    r = runner.invoke(app, [*args, "--overwrite"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == first  # the stale file is gone


def test_untrained_imagenet_architecture_is_a_yellow_warning():
    r = runner.invoke(app, ["layers", "squeezenet1_1"])
    assert r.exit_code == 0
    assert "random weights" in r.stderr and "--weights" in r.stderr


CTRL_C_IN_GC = """
import gc, signal, sys, time
from convlens.cli._common import stop_on_interrupt
signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job starts with SIGINT ignored
before = signal.getsignal(signal.SIGINT)
fired = []
def callback(phase, info):
    if phase == "start" and not fired:
        fired.append(phase)
        signal.raise_signal(signal.SIGINT)  # the handler raises here; Python drops it
gc.callbacks.append(callback)
t0 = time.monotonic()
try:
    with stop_on_interrupt() if sys.argv[1] == "guarded" else open(__file__):
        gc.collect()
        while time.monotonic() - t0 < 30:
            sum(range(1000))
    print("ran to the end", fired)
except KeyboardInterrupt:
    print("stopped", fired, signal.getsignal(signal.SIGINT) is before)
"""


def test_ctrl_c_is_not_lost_in_a_garbage_collection_callback(tmp_path):
    """An exception raised inside a gc callback is printed and dropped by Python, and the run
    went on; the command's handler raises again until the interrupt has reached the command
    (and then puts the previous handler back). Run in a child process: pytest hooks the
    exceptions Python drops."""
    import subprocess
    import sys

    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_IN_GC)
    src = str(Path(__file__).resolve().parents[1] / "src")
    run = subprocess.run([sys.executable, str(script), "guarded"], capture_output=True, text=True,
                         env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"}, timeout=120)
    assert run.stdout.strip() == "stopped ['start'] True", run.stdout + run.stderr


def test_a_model_trained_from_a_factory_reloads_with_explicit_trust(files, tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", f"{files}/lenet_factory.py:build", "digits", "--steps", "2",
                            "--limit", "40", "--batch-size", "8", "--out", str(out)])
    assert r.exit_code == 0, r.output
    card = json.loads((out / "model.json").read_text())
    assert card["arch"] == f"{(files / 'lenet_factory.py').resolve()}:build"
    for target in (out / "model.json", out / "model.pt"):
        r = runner.invoke(app, ["layers", str(target)])
        assert r.exit_code == 2 and "--trust-pickle" in r.stderr and "lenet_factory.py" in r.stderr
        r = runner.invoke(app, ["layers", str(target), "--trust-pickle"])
        assert r.exit_code == 0, r.output
        assert "conv1" in r.output


def test_random_bytes_are_corrupt_never_a_pickle(files):
    from convlens.model import read_state_dict

    for trust in (False, True):
        with pytest.raises(ValueError, match="not a weights file") as e:
            read_state_dict(files / "random.pt", trust_pickle=trust)
        assert "pickle" not in str(e.value)

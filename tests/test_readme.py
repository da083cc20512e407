"""Every snippet of the README runs as written, in order, in one folder: the YAML files it
shows are written, each ``convlens`` command runs through the CLI and each Python block runs in
one shared namespace. Only the data are made tiny (the built-in datasets are cut to a few dozen
images, and the few counts that size a long run are reduced, listed in SHRINK); commands that
need ../shared are skipped when it is absent."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import SHARED

README = Path(__file__).resolve().parents[1] / "README.md"

# The counts that make a README run long, and what this test uses instead (same code paths).
SHRINK = [
    (r"--n 2000", "--n 60"), (r"make_concepts\(2000\)", "make_concepts(60)"),
    (r"--limit 2000", "--limit 100"), (r"--networks 20 --steps 300 --snapshot-every 100",
                                       "--networks 2 --steps 4 --snapshot-every 2 --limit 64"),
    (r"--k 50 --p 0.3", "--k 10 --p 0.3"), (r"-n 500", "-n 8"), (r"-n 200", "-n 8"), (r"n=500", "n=8"),
    (r"--epochs 60", "--epochs 2"), (r"epochs=60", "epochs=2"), (r"--sweep 5,30,50 --seeds 5", "--sweep 5,10 --seeds 2"),
    (r"steps=128", "steps=8"),
]
# Per command: options appended so that optimizations and samplers take a few steps.
FEW_STEPS = {
    "visualize": ["--steps", "4"], "class-model": ["--steps", "2"], "invert": ["--steps", "4"],
    "fool": ["--max-steps", "4"], "style": ["--steps", "4"], "lime": ["--samples", "40"],
    "adversarial": ["--images", "16"], "dgn-am": ["--steps", "4"], "train-decoder": ["--epochs", "1"],
    "report": ["--limit", "40"], "faithfulness": ["--steps", "4"], "inverse-set": ["--max-steps", "20"],
    "topology": [],
}
NEEDS_SHARED = ("../shared", "squeezenet", "runs/mnist", "my_images", "results/dissect-squeezenet")


def readme_blocks() -> list[tuple[str, str]]:
    """``(language, text)`` of every fenced block, in order."""
    return re.findall(r"^```(\w+)\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def commands(bash: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", bash)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def shrink(text: str) -> str:
    for pattern, repl in SHRINK:
        text = re.sub(pattern, repl, text)
    return text


@pytest.fixture
def tiny_builtins(monkeypatch):
    """digits, textures and gratings cut to a few dozen images (every class kept)."""
    from convlens.data import _builtin

    for name, step in (("digits", 15), ("textures", 4), ("gratings", 8)):
        full = _builtin.BUILTIN_DATASETS[name]
        monkeypatch.setitem(_builtin.BUILTIN_DATASETS, name,
                            lambda full=full, step=step: (lambda d: d.subset(range(0, len(d), step)))(full()))


def test_readme_has_the_examples_the_issue_names():
    text = README.read_text(encoding="utf-8")
    assert "from convlens import load_model, dissect" in text
    assert 'r.heatmap("Indian elephant")' in text and "--only summary,embedding" in text
    assert 'load_dataset("../shared/data/photos/elephant.jpg")' in text


@pytest.mark.slow
def test_every_readme_snippet_runs(tmp_path, monkeypatch, tiny_builtins):
    from convlens.cli import app

    have_shared = (SHARED / "data").is_dir() and (SHARED / "models").is_dir()
    work = tmp_path / "work"
    work.mkdir()
    if have_shared:
        (tmp_path / "shared").symlink_to(SHARED)
        (work / "my_images").mkdir()
        for name in ("elephant.jpg", "zebra.jpg", "goldfish.jpg"):
            shutil.copy(SHARED / "data" / "photos" / name, work / "my_images" / name)
    monkeypatch.chdir(work)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # caches under ~ stay in this test
    runner = CliRunner()
    namespace: dict = {}
    ran, skipped, failed = [], [], []
    for lang, text in readme_blocks():
        if lang == "yaml":
            first = text.splitlines()[0]
            m = re.match(r"#\s*(\S+\.ya?ml)", first)
            assert m, f"a YAML block must start with '# name.yaml': {first!r}"
            (work / m.group(1)).write_text(text, encoding="utf-8")
            continue
        if lang == "python":
            if not have_shared and any(s in text for s in NEEDS_SHARED):
                skipped.append(text.splitlines()[0])
                continue
            t0 = time.perf_counter()
            try:
                exec(compile(shrink(text), "README.md", "exec"), namespace)  # noqa: S102
            except Exception as e:  # every failing snippet is listed at the end
                failed.append(f"python block ending {text.splitlines()[-1]!r}: {type(e).__name__}: {e}")
            ran.append(text.splitlines()[0])
            print(f"{time.perf_counter() - t0:6.1f} s  python: {text.splitlines()[-1][:60]}")
            continue
        assert lang == "bash", lang
        for line in commands(text):
            if line.startswith("make "):
                continue  # the set-up itself: what this test runs in
            if not have_shared and any(s in line for s in NEEDS_SHARED):
                skipped.append(line)
                continue
            argv = shlex.split(shrink(line), comments=True)
            assert argv[0] == "convlens", line
            name = argv[1]
            extra = FEW_STEPS.get(name, [])
            if extra and extra[0] in argv:
                extra = []
            t0 = time.perf_counter()
            result = runner.invoke(app, argv[1:] + extra)
            if result.exit_code != 0:
                tail = [ln for ln in result.output.splitlines() if "INFO" not in ln][-3:]
                failed.append(f"{line}: exit {result.exit_code}: {' | '.join(tail)} {result.exception!r}")
            ran.append(line)
            print(f"{time.perf_counter() - t0:6.1f} s  {line}")
    assert not failed, "\n".join(failed)
    assert len(ran) >= 40, ran
    if have_shared:
        assert not skipped
    assert os.path.isfile("results/lenet/index.html")

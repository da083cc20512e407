"""Every snippet of the README runs as written, in order, in one folder: the YAML files it
shows are written, each ``convlens`` command runs through the CLI and each Python block runs in
one shared namespace. Only the data are made tiny (the built-in datasets are cut to a few dozen
images, and the few counts that size a long run are reduced, listed in SHRINK); commands that
need ../shared are skipped when it is absent."""

from __future__ import annotations

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
    (r"--k 50 --p 0.3", "--k 10 --p 0.3"), (r"-n 500", "-n 12"), (r"-n 200", "-n 12"), (r"\bn=500\b(?!, k)", "n=20"),
    (r"--epochs 60", "--epochs 2"), (r"epochs=60", "epochs=2"), (r"--sweep 5,30,50 --seeds 5", "--sweep 5,10 --seeds 2"),
    (r"steps=128", "steps=8"), (r"snapshot_every=100", "snapshot_every=1"), (r"n=500, k=10", "n=20, k=10"),
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


def readme_sections() -> list[tuple[str, list[tuple[str, str]]]]:
    """``(heading, [(language, text), ...])`` for each part of the README, in order."""
    parts = re.split(r"^#{2,3} (.+)$", README.read_text(encoding="utf-8"), flags=re.M)
    out = [("top", parts[0])] + list(zip(parts[1::2], parts[2::2]))
    return [(h.strip(), re.findall(r"^```(\w+)\n(.*?)^```", body, flags=re.S | re.M)) for h, body in out]


SECTIONS = [(h, blocks) for h, blocks in readme_sections() if blocks]


def commands(bash: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", bash)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def shrink(text: str) -> str:
    for pattern, repl in SHRINK:
        text = re.sub(pattern, repl, text)
    return text


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """One folder and one Python namespace for the whole README, as a reader would have, with
    digits, textures and gratings cut to a few dozen images (every class kept)."""
    from convlens.data import _builtin

    tmp = tmp_path_factory.mktemp("readme")
    have_shared = (SHARED / "data").is_dir() and (SHARED / "models").is_dir()
    work = tmp / "work"
    work.mkdir()
    if have_shared:
        (tmp / "shared").symlink_to(SHARED)
        (work / "my_images").mkdir()
        for photo in sorted((SHARED / "data" / "photos").glob("*.jpg")):  # enough for a t-SNE map
            shutil.copy(photo, work / "my_images" / photo.name)
    with pytest.MonkeyPatch.context() as mp:
        for name, step in (("digits", 15), ("textures", 4), ("gratings", 8)):
            full = _builtin.BUILTIN_DATASETS[name]
            mp.setitem(_builtin.BUILTIN_DATASETS, name,
                       lambda full=full, step=step: (lambda d: d.subset(range(0, len(d), step)))(full()))
        mp.chdir(work)
        mp.setenv("MPLBACKEND", "Agg")
        mp.setenv("HOME", str(tmp / "home"))  # caches under ~ stay in this test
        yield {"namespace": {}, "have_shared": have_shared, "work": work, "ran": []}


def test_readme_has_the_examples_the_issue_names():
    text = README.read_text(encoding="utf-8")
    assert "from convlens import load_model, dissect" in text
    assert 'r.heatmap("Indian elephant")' in text and "--only summary,embedding" in text
    assert 'load_dataset("../shared/data/photos/elephant.jpg")' in text


@pytest.mark.slow
@pytest.mark.parametrize("heading,blocks", SECTIONS, ids=[h for h, _ in SECTIONS])
def test_readme_section_runs(readme_run, heading, blocks):
    """Each part of the README in order (later parts use what earlier ones wrote)."""
    from convlens.cli import app

    runner = CliRunner()
    have_shared, work, namespace = readme_run["have_shared"], readme_run["work"], readme_run["namespace"]
    failed: list[str] = []
    for lang, text in blocks:
        if lang == "yaml":
            first = text.splitlines()[0]
            m = re.match(r"#\s*(\S+\.ya?ml)", first)
            assert m, f"a YAML block must start with '# name.yaml': {first!r}"
            (work / m.group(1)).write_text(text, encoding="utf-8")
            continue
        if not have_shared and any(s in text for s in NEEDS_SHARED):
            continue  # needs ../shared, absent here
        if lang == "python":
            t0 = time.perf_counter()
            try:
                exec(compile(shrink(text), "README.md", "exec"), namespace)  # noqa: S102
            except Exception as e:  # every failing snippet is listed at the end
                failed.append(f"python block ending {text.splitlines()[-1]!r}: {type(e).__name__}: {e}")
            readme_run["ran"].append(text)
            print(f"{time.perf_counter() - t0:6.1f} s  python: {text.splitlines()[-1][:60]}")
            continue
        assert lang == "bash", lang
        for line in commands(text):
            if line.startswith("make "):
                continue  # the set-up itself: what this test runs in
            argv = shlex.split(shrink(line), comments=True)
            assert argv[0] == "convlens", line
            extra = FEW_STEPS.get(argv[1], [])
            if extra and extra[0] in argv:
                extra = []
            t0 = time.perf_counter()
            result = runner.invoke(app, argv[1:] + extra)
            if result.exit_code != 0:
                tail = [ln for ln in result.output.splitlines() if "INFO" not in ln][-3:]
                failed.append(f"{line}: exit {result.exit_code}: {' | '.join(tail)} {result.exception!r}")
            readme_run["ran"].append(line)
            print(f"{time.perf_counter() - t0:6.1f} s  {line}")
    assert not failed, "\n".join(failed)


def test_the_readme_test_covers_every_snippet():
    n_commands = sum(len([c for c in commands(t) if not c.startswith("make ")])
                     for _, blocks in SECTIONS for lang, t in blocks if lang == "bash")
    n_python = sum(lang == "python" for _, blocks in SECTIONS for lang, _ in blocks)
    assert n_commands >= 35 and n_python >= 10, (n_commands, n_python)
    assert sum(len(b) for _, b in SECTIONS) == len(re.findall(r"^```\w+$", README.read_text(), flags=re.M))

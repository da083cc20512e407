"""The study of Gabrielsson & Carlsson, Sec. 5: train many networks of one architecture in
parallel on a Dask cluster, keeping snapshots, so that filter clouds can be pooled over networks
and followed over training (``filter_cloud(study_dir, layer, step=...)``).

Every network is one task: a module-level function that trains with
:func:`convlens.training.train` into ``out/net_NNN`` and returns a small summary. The data set
is loaded once per worker process and kept for the worker's next networks; each worker trains
with one torch thread (workers = cores). A finished network (``model.json`` at the study's step
count) is not trained again, an interrupted one resumes from its last snapshot, and a study can
be extended: the same command with a larger ``--steps`` (or ``--networks``) continues every
network from its last snapshot. So a study too long for one sitting is run in stages.

While networks train, each task writes ``net_NNN/progress.json`` (step, CPU seconds per step)
about once a second; :func:`train_study` reads those files and reports progress over all steps
of all networks through its ``progress`` callback.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from convlens.files import read_json, write_json
from convlens.progress import Callback, notify

log = logging.getLogger(__name__)

PROGRESS_EVERY = 1.0  # seconds between progress.json writes of one network


@dataclass
class StudyConfig:
    """The settings of a study. The training recipe (optimizer ... augment_flip) defaults to ADAM
    without augmentation; :func:`study_recipe` gives the paper's for M and C networks."""

    arch: str
    data: str
    networks: int
    steps: int
    snapshot_every: int | None = None
    batch_size: int = 128
    seed: int = 0
    limit: int | None = None  # train on a seeded sample of this many images
    optimizer: str = "adam"
    lr: float | None = None
    val_fraction: float = 0.05
    weight_decay: float = 0.0
    augment_shift: int = 0  # random translation of up to this many pixels
    augment_flip: bool = False  # random left-right flips

    def __post_init__(self):
        for name in ("networks", "steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        from convlens.training import OPTIMIZERS

        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if self.weight_decay < 0 or self.augment_shift < 0 or (self.lr is not None and self.lr <= 0):
            raise ValueError("the learning rate must be positive, the weight decay and the shifts at least 0 "
                             f"(got lr {self.lr}, weight decay {self.weight_decay}, shifts {self.augment_shift})")
        k = self.snapshot_every
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ValueError(f"snapshot_every must be a positive integer, got {k!r}")
        if k is not None and self.steps % k:
            lo, hi = self.steps // k * k, (self.steps // k + 1) * k
            raise ValueError(
                f"--steps {self.steps} is not a multiple of --snapshot-every {k}: the last "
                f"{self.steps - lo} steps would end without a snapshot, so the final weights could "
                "not be followed over training, nor the study resumed or extended from them; use "
                f"--steps {hi}" + (f" or {lo}" if lo else "") + f", or a --snapshot-every that divides {self.steps}")

    def same_study(self, other: StudyConfig) -> bool:
        """True when ``other`` trains the same networks, perhaps longer or more of them."""
        a, b = asdict(self), asdict(other)
        for key in ("steps", "networks"):
            a.pop(key), b.pop(key)
        return a == b


@dataclass
class Study:
    """A finished (or partly finished) study folder: its config and one summary per network."""

    out: Path
    config: StudyConfig
    networks: list[dict] = field(default_factory=list)

    @property
    def run_dirs(self) -> list[Path]:
        return [self.out / n["dir"] for n in self.networks]

    def save(self) -> Path:
        return write_json(self.out / "study.json", {"config": asdict(self.config), "networks": self.networks})

    @classmethod
    def load(cls, out: str | Path) -> Study:
        out = Path(out)
        if not (out / "study.json").is_file():
            raise FileNotFoundError(f"{out} is not a topology study (no study.json); run "
                                    "`convlens topology train` first")
        r = read_json(out / "study.json")
        return cls(out, StudyConfig(**r["config"]), r["networks"])


# How the paper trains each family (Gabrielsson & Carlsson, Tables 1 and 2, Sec. 5.2): M with
# ADAM; C with SGD, on random 24 x 24 crops of the 32 px CIFAR images and random left-right flips
# (here: shifts of up to 4 px of the image fitted to the model's 24 px, and flips).
PAPER_RECIPES = {"M": {"optimizer": "adam"},
                 "C": {"optimizer": "sgd", "augment_shift": 4, "augment_flip": True}}
RECIPE_KEYS = ("optimizer", "lr", "weight_decay", "augment_shift", "augment_flip")


def study_recipe(arch: str, out: str | Path | None = None, **given) -> tuple[dict, str]:
    """The training recipe of a study, and where it came from: the options ``given`` (None: not
    given), else the recipe of the study already in ``out`` (so resuming or extending never
    changes it), else the paper's for the architecture's family (``PAPER_RECIPES``), else
    :class:`StudyConfig`'s defaults."""
    from convlens.nets import parse_arch

    unknown = set(given) - set(RECIPE_KEYS)
    if unknown:
        raise TypeError(f"unknown recipe options: {', '.join(sorted(unknown))}")
    stored = out is not None and (Path(out) / "study.json").is_file()
    if stored:
        base, source = {k: getattr(Study.load(out).config, k) for k in RECIPE_KEYS}, f"the study in {out}"
    else:
        family = (parse_arch(arch) or ("",))[0]
        base = PAPER_RECIPES.get(family, {})
        source = f"the paper's for {family}(X,Y,Z)" if base else "the defaults"
    recipe = {k: getattr(StudyConfig, k) for k in RECIPE_KEYS} | base
    chosen = {k: v for k, v in given.items() if v is not None}
    if chosen:
        source += " and your options (" + ", ".join(f"{k}={v}" for k, v in chosen.items()) + ")"
    return recipe | chosen, source


_DATA: dict = {}  # per worker process: (data, limit, seed, arch) -> the conformed data set in memory


def _worker_data(cfg: dict, model):
    """The study's data set, read and fitted to the model once per worker process, then kept."""
    from convlens.data import ImageDataset, conform, load_dataset

    key = (cfg["data"], cfg["limit"], cfg["seed"], cfg["arch"])
    if key not in _DATA:
        ds = load_dataset(cfg["data"], limit=cfg["limit"], seed=cfg["seed"]) if cfg["limit"] else load_dataset(cfg["data"])
        ds = conform(ds, model)
        x, _ = ds.tensors()
        _DATA.clear()
        _DATA[key] = ImageDataset(ds.ids, x.__getitem__, ds.labels, ds.class_names, ds.name,
                                  source_fingerprint=ds.fingerprint)
    return _DATA[key]


def _trained_steps(run: Path) -> int:
    card = read_json(run / "model.json")
    hist = (card.get("train") or {}).get("history") or []
    return int(hist[-1]["step"]) if hist else int(((card.get("train") or {}).get("config") or {}).get("steps") or 0)


def _summary(index: int, run: Path, seed: int, val_accuracy, cached: bool, timing: dict | None = None) -> dict:
    return {"index": index, "dir": run.name, "seed": seed, "val_accuracy": val_accuracy, "cached": cached,
            **(timing or {})}


def _train_one(cfg: dict, index: int, out: str) -> dict:
    """One network of the study (runs on a Dask worker)."""
    import torch

    torch.set_num_threads(1)
    from convlens.model import load_model
    from convlens.training import TrainConfig, latest_snapshot, train

    run = Path(out) / f"net_{index:03d}"
    seed = cfg["seed"] + index
    if (run / "model.json").is_file():
        done = _trained_steps(run)
        if done >= cfg["steps"]:
            return _summary(index, run, seed, read_json(run / "model.json").get("val_accuracy"), True)
        if latest_snapshot(run) is None:
            raise ValueError(f"{run} was trained to {done} steps without snapshots, so it cannot be "
                             f"extended to {cfg['steps']}; start a new study with --snapshot-every")
    tc = TrainConfig(seed=seed, steps=cfg["steps"], batch_size=cfg["batch_size"],
                     snapshot_every=cfg["snapshot_every"], optimizer=cfg["optimizer"], lr=cfg["lr"],
                     val_fraction=cfg["val_fraction"], eval_every=cfg["steps"],
                     weight_decay=cfg.get("weight_decay", 0.0), augment_shift=cfg.get("augment_shift", 0),
                     augment_flip=cfg.get("augment_flip", False))
    torch.manual_seed(seed)  # the initial weights too: train() seeds only after the model exists
    model = load_model(cfg["arch"], device=cfg.get("device"))
    ds = _worker_data(cfg, model)
    clock = {"first": None, "last": None, "written": 0.0, "steps": 0}

    def tick(p) -> None:  # after every step: CPU time per step, progress.json now and then
        now, cpu = time.perf_counter(), time.process_time()
        if clock["first"] is None:
            clock["first"] = (p.done, now, cpu)
        if "val_accuracy" not in p.info:  # the held-out evaluation at the end is not a step
            clock["last"] = (p.done, now, cpu)
        if now - clock["written"] >= PROGRESS_EVERY or p.done == p.total:
            clock["written"] = now
            write_json(run / "progress.json", {"step": p.done, "total": p.total, **_timing(clock)})

    _, result = train(model, ds, tc, out=run, resume=True, progress=tick)
    return _summary(index, run, seed, result.val_accuracy, False, _timing(clock))


def _timing(clock: dict) -> dict:
    if clock["first"] is None or clock["last"][0] == clock["first"][0]:
        return {}
    (s0, t0, c0), (s1, t1, c1) = clock["first"], clock["last"]
    return {"cpu_per_step": (c1 - c0) / (s1 - s0), "wall_per_step": (t1 - t0) / (s1 - s0), "timed_steps": s1 - s0}


def _steps_done(run: Path, total: int) -> int:
    """Steps a network has behind it: its progress file, else its last snapshot, else 0."""
    from convlens.training import latest_snapshot, snapshot_step

    if (run / "model.json").is_file() and _trained_steps(run) >= total:
        return total
    best = 0
    if (run / "progress.json").is_file():
        try:
            best = int(read_json(run / "progress.json")["step"])
        except (ValueError, KeyError, OSError):
            pass
    snap = latest_snapshot(run)
    if snap is not None and snap.with_suffix(".json").is_file():
        best = max(best, snapshot_step(snap))
    return min(best, total)


def train_study(config: StudyConfig, out: str | Path, *, workers: int | None = None,
                scheduler: str | None = None, client=None,
                progress: Callback | None = None, device=None) -> Study:
    """Train ``config.networks`` networks in parallel (seeds ``seed, seed+1, ...``).

    Parameters
    ----------
    config : StudyConfig
    out : folder of the study (``study.json`` and ``net_NNN/`` runs). A folder that holds the
        same study with fewer steps or networks is extended from the networks' last snapshots.
    workers, scheduler : passed to :func:`convlens.parallel.get_client` when no ``client``
    client : an existing ``distributed.Client``
    progress : receives a :class:`~convlens.progress.Progress` event ``("training steps",
        steps done, steps in all)`` about once a second and as networks finish (steps over all
        networks), its ``info`` holding ``steps_before`` (steps done before this call, e.g. by an
        interrupted run), ``networks_done``, ``networks`` and ``running`` (``{index: step}``);
        the work cannot be stopped from it (interrupt and rerun to resume)
    device : where the workers train (see :func:`convlens.load_model`; not part of the study's
        settings, so a study can be continued elsewhere)

    Examples
    --------
    >>> cfg = StudyConfig("M(64,0,64)", "mnist.npz", networks=20, steps=500, snapshot_every=100)
    >>> study = train_study(cfg, "runs/mnist")                              # doctest: +SKIP
    >>> cloud = filter_cloud("runs/mnist", "conv1")                          # doctest: +SKIP
    """
    from convlens.model import load_model

    load_model(config.arch, device=device)  # fail early on a bad architecture or device
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "study.json").is_file():
        old = Study.load(out).config
        if not old.same_study(config):
            raise ValueError(f"{out} already holds a study with other settings ({asdict(old)}); "
                             "choose another --out folder (only --steps and --networks may grow)")
        if config.steps < old.steps:
            raise ValueError(f"{out} holds this study trained to {old.steps} steps; --steps {config.steps} "
                             "would not train anything: analyse the earlier snapshots with "
                             "`convlens topology analyze --step` instead")
    study = Study(out, config)
    if (out / "study.json").is_file():
        study.networks = [n for n in Study.load(out).networks if n["index"] < config.networks]
    study.save()
    cfg = {**asdict(config), "device": None if device is None else str(device)}
    if client is not None:
        return _run(client, cfg, study, progress)
    from convlens.parallel import get_client

    with get_client(workers=workers, scheduler=scheduler) as c:
        return _run(c, cfg, study, progress)


def _run(client, cfg: dict, study: Study, progress: Callback | None) -> Study:
    from distributed import wait

    n, steps = cfg["networks"], cfg["steps"]
    runs = [study.out / f"net_{i:03d}" for i in range(n)]
    before = sum(_steps_done(r, steps) for r in runs)
    futures = {client.submit(_train_one, cfg, i, str(study.out.resolve()),
                             key=f"convlens-topology-{study.out.name}-{i}-{steps}", pure=False): i
               for i in range(n)}
    pending = set(futures)
    done = {n["index"]: n for n in study.networks if n.get("steps", 0) >= steps}
    while pending:
        try:
            finished, pending = wait(pending, timeout=PROGRESS_EVERY, return_when="FIRST_COMPLETED")
        except TimeoutError:  # nothing finished in this second: just report progress
            finished = set()
        for fut in finished:
            summary = {**fut.result(), "steps": steps}
            done[summary["index"]] = summary
            study.networks = sorted(done.values(), key=lambda s: s["index"])
            study.save()
            log.info("network %d finished (held-out accuracy %s)", summary["index"], summary["val_accuracy"])
        if progress is not None:
            at = {i: _steps_done(r, steps) for i, r in enumerate(runs)}
            notify(progress, "training steps", sum(at.values()), n * steps, steps_before=before,
                   networks_done=sum(f.done() for f in futures), networks=n,
                   running={i: s for i, s in at.items() if 0 < s < steps})
    return study

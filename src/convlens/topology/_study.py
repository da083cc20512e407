"""The study of Gabrielsson & Carlsson, Sec. 5: train many networks of one architecture in
parallel on a Dask cluster, keeping snapshots, so that filter clouds can be pooled over networks
and followed over training (``filter_cloud(study_dir, layer, step=...)``).

Every network is one task: a module-level function that loads the data itself, trains with
:func:`convlens.training.train` into ``out/net_NNN`` and returns a small summary. A finished
network (``model.json`` present) is not trained again, and an interrupted one resumes from its
last snapshot, so a study can be re-run to complete it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from convlens.files import read_json, write_json

log = logging.getLogger(__name__)


@dataclass
class StudyConfig:
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

    def __post_init__(self):
        for name in ("networks", "steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.snapshot_every is not None and (not isinstance(self.snapshot_every, int) or self.snapshot_every < 1):
            raise ValueError(f"snapshot_every must be a positive integer, got {self.snapshot_every!r}")


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


def _train_one(cfg: dict, index: int, out: str) -> dict:
    """One network of the study (runs on a Dask worker)."""
    import torch

    torch.set_num_threads(1)
    from convlens.data import load_dataset
    from convlens.model import load_model
    from convlens.training import TrainConfig, train

    run = Path(out) / f"net_{index:03d}"
    seed = cfg["seed"] + index
    if (run / "model.json").is_file():
        card = read_json(run / "model.json")
        return {"index": index, "dir": run.name, "seed": seed, "val_accuracy": card.get("val_accuracy"),
                "cached": True}
    ds = load_dataset(cfg["data"], limit=cfg["limit"], seed=cfg["seed"]) if cfg["limit"] else load_dataset(cfg["data"])
    tc = TrainConfig(seed=seed, steps=cfg["steps"], batch_size=cfg["batch_size"],
                     snapshot_every=cfg["snapshot_every"], optimizer=cfg["optimizer"], lr=cfg["lr"],
                     val_fraction=cfg["val_fraction"], eval_every=cfg["steps"])
    torch.manual_seed(seed)  # the initial weights too: train() seeds only after the model exists
    _, result = train(load_model(cfg["arch"], device=cfg.get("device")), ds, tc, out=run, resume=True)
    return {"index": index, "dir": run.name, "seed": seed, "val_accuracy": result.val_accuracy, "cached": False}


def train_study(config: StudyConfig, out: str | Path, *, workers: int | None = None,
                scheduler: str | None = None, client=None,
                callback: Callable[[int, int, dict], None] | None = None, device=None) -> Study:
    """Train ``config.networks`` networks in parallel (seeds ``seed, seed+1, ...``).

    Parameters
    ----------
    config : StudyConfig
    out : folder of the study (``study.json`` and ``net_NNN/`` runs)
    workers, scheduler : passed to :func:`convlens.parallel.get_client` when no ``client``
    client : an existing ``distributed.Client``
    callback : called with ``(done, total, summary)`` as networks finish
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
        if asdict(old) != asdict(config):
            raise ValueError(f"{out} already holds a study with other settings ({asdict(old)}); "
                             "choose another --out folder")
    study = Study(out, config)
    study.save()
    cfg = {**asdict(config), "device": None if device is None else str(device)}
    if client is not None:
        return _run(client, cfg, study, callback)
    from convlens.parallel import get_client

    with get_client(workers=workers, scheduler=scheduler) as c:
        return _run(c, cfg, study, callback)


def _run(client, cfg: dict, study: Study, callback) -> Study:
    from distributed import as_completed

    n = cfg["networks"]
    futures = [client.submit(_train_one, cfg, i, str(study.out.resolve()), key=f"convlens-topology-{study.out.name}-{i}",
                             pure=False) for i in range(n)]
    done = []
    for fut in as_completed(futures):
        summary = fut.result()
        done.append(summary)
        study.networks = sorted(done, key=lambda s: s["index"])
        study.save()
        log.info("network %d finished (held-out accuracy %s)", summary["index"], summary["val_accuracy"])
        if callback is not None:
            callback(len(done), n, summary)
    return study

"""Training with seeds, held-out split, snapshots (state dict + JSON, written atomically) and
resumption; callable from Python (the topology study trains hundreds of networks with it)."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from convlens.data import ImageDataset, conform
from convlens.files import atomic_path, read_json, write_json
from convlens.model import Model, load_model
from convlens.nets import parse_arch
from convlens.progress import Callback, notify
from convlens.runner import OUTPUT, Runner

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "sgd", "adadelta", "rmsprop")


@dataclass
class TrainConfig:
    seed: int = 0
    epochs: int | None = 20
    steps: int | None = None  # overrides epochs when given
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float | None = None  # optimizer default when None
    weight_decay: float = 0.0
    val_fraction: float = 0.2
    snapshot_every: int | None = None
    augment_shift: int = 0  # random translation of up to this many pixels
    augment_flip: bool = False  # random left-right flips (half the images of each batch)
    eval_every: int | None = None  # steps; default once per epoch

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if self.steps is None and (self.epochs is None or self.epochs <= 0):
            raise ValueError("give a positive number of epochs or steps")
        if self.steps is not None and self.steps <= 0:
            raise ValueError(f"steps must be positive, got {self.steps}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.snapshot_every is not None and self.snapshot_every <= 0:
            raise ValueError(f"snapshot_every must be positive, got {self.snapshot_every}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class TrainResult:
    arch: str | None
    config: TrainConfig
    history: list[dict] = field(default_factory=list)  # {step, epoch, loss, val_loss, val_accuracy}
    val_accuracy: float | None = None
    snapshots: list[str] = field(default_factory=list)
    dataset: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["config"] = asdict(self.config)
        return d


def classification_scores(model: Model, ds: ImageDataset, batch_size: int = 256) -> dict:
    """Accuracy, mean cross-entropy loss and predictions of ``model`` on ``ds`` (labels required); the network
    runs through :mod:`convlens.runner` (at most ``batch_size`` images a pass, fewer when the
    memory budget allows fewer)."""
    preds, losses, n = [], 0.0, 0
    run = Runner(model)
    with run:
        if len(ds):
            batch_size = run.batch_size(tuple(ds.image(0).shape), batch_size)
        for x, y, _ in ds.batches(batch_size):
            logits = run.step(x)[OUTPUT]
            if y.min() >= 0:
                losses += F.cross_entropy(logits, y.to(logits.device), reduction="sum").item()
            preds.append(logits.argmax(1).cpu())
            n += len(x)
    pred = torch.cat(preds).cpu().numpy()
    acc = float((pred == ds.labels).mean()) if (ds.labels >= 0).all() else float("nan")
    return {"accuracy": acc, "loss": losses / n, "predictions": pred}


def evaluate(model: Model, ds: ImageDataset, batch_size: int = 256) -> dict:
    """Deprecated name of :func:`classification_scores` (``evaluate`` also named the objective
    loss of :mod:`convlens.optimize`, now :func:`convlens.optimize.objective_loss`)."""
    import warnings

    warnings.warn("convlens.training.evaluate is now classification_scores", DeprecationWarning, stacklevel=2)
    return classification_scores(model, ds, batch_size)


def _arch_of(model: Model) -> str | None:
    arch = model.meta.get("arch") or model.name
    if arch and ".py:" in arch:  # a factory: load_model records it as an absolute file.py:function
        return arch
    return arch if arch and parse_arch(arch) is not None else None


def _make_optimizer(cfg: TrainConfig, params):
    lr = cfg.lr
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr or 1e-3, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr or 0.01, momentum=0.9, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=lr or 1.0, rho=0.95, eps=1e-8, weight_decay=cfg.weight_decay)
    return torch.optim.RMSprop(params, lr=lr or 1e-3, weight_decay=cfg.weight_decay)


def _shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    if max_shift <= 0:
        return x
    pad = F.pad(x, (max_shift,) * 4)
    out = torch.empty_like(x)
    offs = torch.randint(0, 2 * max_shift + 1, (len(x), 2), generator=gen)
    h, w = x.shape[-2:]
    for i, (dy, dx) in enumerate(offs.tolist()):
        out[i] = pad[i, :, dy : dy + h, dx : dx + w]
    return out


def _snapshot_name(step: int) -> str:
    return f"step_{step:07d}"


def latest_snapshot(out: Path) -> Path | None:
    snaps = sorted((out / "snapshots").glob("step_*.pt"))
    snaps = [s for s in snaps if re.fullmatch(r"step_\d+\.pt", s.name)]
    return snaps[-1] if snaps else None


def train(
    model: Model | str,
    dataset: ImageDataset,
    config: TrainConfig | None = None,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    progress: Callback | None = None,
) -> tuple[Model, TrainResult]:
    """Train ``model`` on ``dataset`` with a held-out split; returns the trained model and a
    :class:`TrainResult`. With ``out``, snapshots go to ``out/snapshots/step_NNNNNNN.{pt,json}``
    and the final weights to ``out/model.pt`` + ``out/model.json`` (a loadable model card).

    ``progress`` receives a :class:`~convlens.progress.Progress` event ``("training", step,
    total)`` after every step, with the batch ``loss`` (and ``val_loss``, ``val_accuracy`` after a
    held-out evaluation) in its ``info``; when it returns ``True`` training stops there and the
    model trained so far is evaluated, saved and returned.
    """
    cfg = config or TrainConfig()
    torch.manual_seed(cfg.seed)  # a model built here from its name gets seeded initial weights
    model = load_model(model) if isinstance(model, str) else model
    arch = _arch_of(model)
    train_ds, val_ds = _split(model, dataset, cfg)
    torch.manual_seed(cfg.seed)
    steps_per_epoch = max(1, math.ceil(len(train_ds) / cfg.batch_size))
    total = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch
    eval_every = cfg.eval_every or steps_per_epoch

    net = model.net
    opt = _make_optimizer(cfg, net.parameters())
    result = TrainResult(arch=arch, config=cfg, dataset=dataset.name)
    out_dir = Path(out) if out else None
    step = _resume(out_dir, net, opt, result) if resume and out_dir is not None else 0
    x_all, y_all = train_ds.tensors()
    was_training = net.training
    net.train()
    try:
        while step < total:
            loss = _step(model, opt, x_all, y_all, cfg, step, steps_per_epoch)
            step += 1
            record = {"step": step, "epoch": step / steps_per_epoch, "loss": loss}
            if val_ds is not None and (step % eval_every == 0 or step == total):
                ev = classification_scores(model, val_ds)
                record.update(val_loss=ev["loss"], val_accuracy=ev["accuracy"])
                result.val_accuracy = ev["accuracy"]
                net.train()
            if step % eval_every == 0 or step == total or "val_accuracy" in record:
                result.history.append(record)
            if out_dir is not None and cfg.snapshot_every and step % cfg.snapshot_every == 0:
                _write_snapshot(out_dir, model, arch, step, opt, result)
            if notify(progress, "training", step, total, **{k: v for k, v in record.items() if k != "step"}):
                log.info("training stopped at step %d of %d (asked by the progress callback)", step, total)
                break
    finally:
        net.train(was_training)
    return _finish(model, arch, val_ds, result, out_dir), result


def _finish(model: Model, arch, val_ds: ImageDataset | None, result: TrainResult, out_dir: Path | None) -> Model:
    """The trained model in eval mode, its held-out accuracy measured and recorded, saved."""
    model.net.eval()
    if val_ds is not None and result.val_accuracy is None:
        result.val_accuracy = classification_scores(model, val_ds)["accuracy"]
    if out_dir is not None:
        save_trained(out_dir / "model.pt", model, arch, result)
    model.meta.update(arch=arch, val_accuracy=result.val_accuracy)
    return model


def _split(model: Model, dataset: ImageDataset, cfg: TrainConfig) -> tuple[ImageDataset, ImageDataset | None]:
    """``dataset`` conformed to ``model`` (whose class names it takes when it has none), split
    into training and held-out images (``None`` without a held-out share)."""
    if not model.class_names and dataset.class_names:
        model.spec = model.spec.with_classes(dataset.class_names)
    ds = conform(dataset, model)
    if not ds.has_labels:
        raise ValueError(f"dataset {dataset.name!r} has no labels: training needs labelled images")
    if cfg.val_fraction > 0:
        return ds.split(cfg.val_fraction, cfg.seed)
    return ds, None


def _resume(out_dir: Path, net, opt, result: TrainResult) -> int:
    """Load the last snapshot in ``out_dir`` (weights, optimizer, history) and return its step;
    0 when there is none."""
    snap = latest_snapshot(out_dir)
    if snap is None:
        return 0
    net.load_state_dict(torch.load(snap, map_location="cpu", weights_only=True))
    opt_file = snap.with_suffix(".opt.pt")
    if opt_file.is_file():
        opt.load_state_dict(torch.load(opt_file, map_location="cpu", weights_only=True))
    meta = read_json(snap.with_suffix(".json"))
    result.history = meta.get("history", [])
    result.snapshots = meta.get("snapshots", [])
    log.info("resuming from %s (step %d)", snap, int(meta["step"]))
    return int(meta["step"])


def _step(model: Model, opt, x_all: torch.Tensor, y_all: torch.Tensor, cfg: TrainConfig, step: int,
          steps_per_epoch: int) -> float:
    """One optimizer step on the batch of ``step`` (the shuffling and the shifts are seeded by
    the epoch and the step, so a resumed run takes the same batches); returns its loss."""
    epoch, offset = divmod(step, steps_per_epoch)
    perm = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + step)
    idx = perm[offset * cfg.batch_size : (offset + 1) * cfg.batch_size]
    x = _shift(x_all[idx], cfg.augment_shift, gen)
    if cfg.augment_flip:  # drawn after the shifts, so runs without flips keep their batches
        flip = torch.rand(len(x), generator=gen) < 0.5
        x[flip] = x[flip].flip(-1)
    x = x.to(model.device)
    y = y_all[idx].to(model.device)
    loss = F.cross_entropy(model(x), y)
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"training diverged at step {step} (loss {loss.item()}); lower the learning rate"
        )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.item())


def _card(model: Model, arch: str | None, extra: dict) -> dict:
    spec = model.spec.to_dict()
    return {"arch": arch, "input_spec": spec, "classes": list(model.spec.class_names), **extra}


def _write_snapshot(out: Path, model: Model, arch, step: int, opt, result: TrainResult) -> None:
    base = out / "snapshots" / _snapshot_name(step)
    with atomic_path(base.with_suffix(".opt.pt")) as tmp:
        torch.save(opt.state_dict(), tmp)
    with atomic_path(base.with_suffix(".pt")) as tmp:
        torch.save(model.net.state_dict(), tmp)
    result.snapshots.append(str(base.with_suffix(".pt").name))
    # the JSON is written last: a snapshot counts only once its metadata exists
    write_json(base.with_suffix(".json"), _card(model, arch, {
        "step": step, "seed": result.config.seed, "history": result.history,
        "snapshots": result.snapshots, "dataset": result.dataset,
    }))


def save_trained(path: Path, model: Model, arch, result: TrainResult) -> Path:
    """``model.pt`` (state dict) + ``model.json`` (a model card ``load_model`` reads)."""
    with atomic_path(path) as tmp:
        torch.save(model.net.state_dict(), tmp)
    write_json(path.with_suffix(".json"), _card(model, arch, {
        "weights": path.name, "train": result.to_dict(), "val_accuracy": result.val_accuracy,
    }))
    return path


def list_snapshots(run_dir: str | Path) -> list[Path]:
    """The snapshots of a training run, in step order (only complete ones: JSON present)."""
    snaps = sorted(Path(run_dir, "snapshots").glob("step_*.json"))
    return [s.with_suffix(".pt") for s in snaps if s.with_suffix(".pt").is_file()]


def snapshot_step(path: str | Path) -> int:
    return int(read_json(Path(path).with_suffix(".json"))["step"])


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def plot_training_curve(history: list[dict], path: str | Path) -> Path:
    """Batch loss and held-out loss (log scale) beside held-out accuracy, against the step."""
    from convlens.figures import subplots
    from convlens.files import save_figure

    if not history:
        raise ValueError("no training history to plot")
    steps = [h["step"] for h in history]
    fig, ax = subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(steps, [h["loss"] for h in history], label="training loss (batch)")
    val = [(h["step"], h["val_loss"]) for h in history if "val_loss" in h]
    if val:
        ax[0].plot(*zip(*val), label="held-out loss")
    ax[0].set_xlabel("step")
    ax[0].set_yscale("log")
    ax[0].legend()
    acc = [(h["step"], h["val_accuracy"]) for h in history if "val_accuracy" in h]
    if acc:
        ax[1].plot(*zip(*acc), color="C2")
        ax[1].set_ylabel("held-out accuracy")
        ax[1].set_xlabel("step")
        ax[1].set_ylim(max(0.0, min(a for _, a in acc) - 0.05), 1.0)
    return save_figure(fig, path)

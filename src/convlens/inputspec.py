"""What a network expects as input, and the conversion from convlens' display space to it.

Everywhere in convlens an image is a float tensor ``(N, C, H, W)`` in ``[0, 1]``, channels in RGB
order (or one grey channel): the *display space*. :class:`InputSpec` maps it to what the network
was trained on (channel order, value range, mean and standard deviation) and back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import torch


@dataclass(frozen=True)
class InputSpec:
    """Input size, channels and normalisation of a network.

    ``mean`` and ``std`` are given in the network's channel order and value range, as the
    original training code wrote them (Caffe's BGR mean ``[104, 117, 123]`` for example).
    """

    size: tuple[int, int] = (224, 224)
    channels: int = 3
    channel_order: str = "RGB"
    value_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    class_names: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self):
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if len(v) not in (1, self.channels):
                raise ValueError(f"{name} needs 1 or {self.channels} values, got {len(v)}")
        if any(s == 0 for s in self.std):
            raise ValueError("std must not contain 0")

    # -- conversions -------------------------------------------------------------------------
    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return mean, std

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Display space ``[0, 1]`` RGB -> network input. Differentiable.

        The channel flip (BGR), the value range and ``(x - mean) / std`` are computed as one
        channel mix plus a bias (:meth:`affine`, one batched matrix product): one pass and one
        backward instead of five. The same map up to float rounding; an identity spec returns
        ``x`` itself. Every run of a network in convlens normalises here."""
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"expected images of shape (N, {self.channels}, H, W), got {tuple(x.shape)}; "
                "convert them with convlens.data.conform(dataset, model)"
            )
        if not x.is_floating_point():
            x = x.float()
        a = _affine_on(self, x.device, x.dtype)
        if a is None:
            return x
        mix, bias = a
        n, c, h, w = x.shape
        return torch.baddbmm(bias, mix.expand(n, c, c), x.reshape(n, c, h * w)).view(n, c, h, w)

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`normalize` as one channel mix: ``(mix (C, C), bias (C,))`` in float64 with
        ``normalize(x)[:, i] = sum_j mix[i, j] * x[:, j] + bias[i]`` (the same map up to float
        rounding; the channel flip, value range and mean/std folded together)."""
        c = self.channels
        lo, hi = self.value_range
        mean = torch.as_tensor(self.mean, dtype=torch.float64).expand(c)
        std = torch.as_tensor(self.std, dtype=torch.float64).expand(c)
        src = list(range(c))[::-1] if self.channel_order == "BGR" and c == 3 else list(range(c))
        mix = torch.zeros(c, c, dtype=torch.float64)
        mix[torch.arange(c), torch.tensor(src)] = (hi - lo) / std
        return mix, (lo - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Network input -> display space (not clipped)."""
        mean, std = self._stats(x)
        x = x * std + mean
        lo, hi = self.value_range
        x = (x - lo) / (hi - lo)
        if self.channel_order == "BGR" and self.channels == 3:
            x = x.flip(1)
        return x

    # -- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> InputSpec:
        d = dict(d)
        for key in ("size", "value_range", "mean", "std", "class_names"):
            if key in d and d[key] is not None:
                d[key] = tuple(d[key])
        if isinstance(d.get("size"), tuple) and len(d["size"]) == 1:
            d["size"] = (d["size"][0], d["size"][0])
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown input-spec keys {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)

    def with_classes(self, names) -> InputSpec:
        return replace(self, class_names=tuple(str(n) for n in names))


@lru_cache(maxsize=64)
def _affine_on(spec: InputSpec, device: torch.device, dtype: torch.dtype):
    """:meth:`InputSpec.affine` as ``(mix (1, C, C), bias (1, C, 1))`` on ``device`` in ``dtype``,
    or None for the identity."""
    mix, bias = spec.affine()
    c = spec.channels
    if bool((mix == torch.eye(c, dtype=mix.dtype)).all() and (bias == 0).all()):
        return None
    return mix.to(device, dtype)[None], bias.to(device, dtype).view(1, c, 1)


PRESETS: dict[str, InputSpec] = {
    # torchvision's ImageNet models
    "imagenet": InputSpec((224, 224), 3, "RGB", (0.0, 1.0), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # Caffe models (the SqueezeNet in ../shared/models): BGR, 0-255, minus the mean, no std
    "caffe": InputSpec((227, 227), 3, "BGR", (0.0, 255.0), (104.0, 117.0, 123.0), (1.0, 1.0, 1.0)),
    "unit-rgb": InputSpec((224, 224), 3, "RGB", (0.0, 1.0), (0.0,), (1.0,)),
    "unit-gray": InputSpec((28, 28), 1, "RGB", (0.0, 1.0), (0.0,), (1.0,)),
}


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """One class name per line (blank lines ignored), or a JSON list."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"class-name file not found: {p}; give a text file with one name per line")
    if p.is_dir():
        raise FileNotFoundError(f"class-name file {p} is a folder; give a text file with one name per line")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"class-name file {p} is not UTF-8 (byte {e.object[e.start]:#x} at offset "
                         f"{e.start}); save it as UTF-8, e.g. iconv -f latin1 -t utf-8") from None
    if p.suffix == ".json":
        try:
            names = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"class-name file {p} is not valid JSON (line {e.lineno}: {e.msg})") from None
        if not isinstance(names, list):
            raise ValueError(f"class-name file {p} must hold a JSON list of names")
        out = tuple(str(n) for n in names)
    else:
        out = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not out:
        raise ValueError(f"class-name file {p} holds no names; give one name per line")
    return out


def _synonyms(name: str) -> list[str]:
    """``"Indian elephant, Elephas maximus"`` -> ``["indian elephant", "elephas maximus"]``."""
    return [part.strip().lower() for part in name.split(",") if part.strip()]


def find_class(names, target, n_outputs: int | None = None) -> int:
    """A class index from an index or a name, the one matching rule of every convlens function
    and command: an index (int or digits); else the exact name; else any case; else one of
    ImageNet's comma-separated synonyms (``"Indian elephant"``); else a unique partial match
    (``"zebra"``, ``"hopper"``). Several partial matches or none are an error listing the
    candidates or the closest names."""
    import difflib

    names = [str(n) for n in names]
    n = n_outputs if n_outputs is not None else len(names)
    if isinstance(target, str) and target.strip().lstrip("-").isdigit():
        target = int(target)
    if not isinstance(target, (str, bool)) and hasattr(target, "__index__"):  # int, numpy integer
        idx = int(target)
        if not 0 <= idx < n:
            raise ValueError(f"class {idx} is out of range: the model has {n} classes (0-{n - 1})")
        return idx
    if not isinstance(target, str):
        raise TypeError(f"a class is an int or a name, got {type(target).__name__}")
    want = target.strip().lower()
    if not names:
        raise ValueError(f"no class named {target!r}: this model has no class names; give an index "
                         "or name the classes (--classes FILE, one name per line)")
    rules = (lambda c: c == target.strip(), lambda c: c.lower() == want,
             lambda c: want in _synonyms(c), lambda c: any(want in part for part in _synonyms(c)))
    for stage, match in enumerate(rules):
        hits = [i for i, c in enumerate(names) if match(c)]
        if len(hits) == 1 or (hits and stage < 3):  # a name given in full: its first class
            return hits[0]
        if len(hits) > 1:
            listing = "; ".join(f"{names[i].split(',')[0]} ({i})" for i in hits[:8])
            more = f" and {len(hits) - 8} more" if len(hits) > 8 else ""
            raise ValueError(f"class name {target!r} matches {len(hits)} classes: {listing}{more}; "
                             "give the full name or the index")
    pool = {syn: i for i, c in enumerate(names) for syn in _synonyms(c)}
    close = difflib.get_close_matches(want, list(pool), n=3, cutoff=0.6)
    hint = (" Closest: " + ", ".join(f"{names[pool[c]].split(',')[0]} ({pool[c]})" for c in close) + "."
            if close else "")
    raise ValueError(f"no class named {target!r} in this model.{hint} Give a class index or a name "
                     "(a unique part of one is enough); --classes FILE names the model's classes.")


def resolve_input_spec(value: str | dict | InputSpec | None, default: InputSpec) -> InputSpec:
    """A preset name, a JSON/YAML file, a dict of overrides, or an InputSpec."""
    if value is None:
        return default
    if isinstance(value, InputSpec):
        return value
    if isinstance(value, dict):
        merged = {**default.to_dict(), **value}
        return InputSpec.from_dict(merged)
    if value in PRESETS:
        preset = PRESETS[value]
        return replace(preset, class_names=default.class_names)
    p = Path(value)
    if p.is_file():
        if p.suffix in (".yaml", ".yml"):
            import yaml

            return resolve_input_spec(yaml.safe_load(p.read_text()), default)
        return resolve_input_spec(json.loads(p.read_text()), default)
    raise ValueError(
        f"unknown input spec {value!r}: give a preset ({', '.join(PRESETS)}) or a JSON/YAML file"
    )

"""Unit addresses: ``features.28:12`` (channel 12 of layer ``features.28``),
``conv1:3@5,7`` (channel 3 at row 5, column 7), and unit lists such as ``all`` or ``0-63,70``."""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNIT = re.compile(r"^(?P<layer>[^:\s]+):(?P<index>\d+)(?:@(?P<pos>\d+(?:,\d+)*))?$")


@dataclass(frozen=True)
class Unit:
    layer: str
    index: int
    position: tuple[int, ...] | None = None

    def __str__(self) -> str:
        pos = "" if self.position is None else "@" + ",".join(map(str, self.position))
        return f"{self.layer}:{self.index}{pos}"

    def validate(self, shape: tuple[int, ...]) -> Unit:
        """Check against a layer's output shape (without the batch dimension)."""
        if len(shape) == 0:
            raise ValueError(f"layer {self.layer!r} has a scalar output; it has no units")
        if not 0 <= self.index < shape[0]:
            raise ValueError(
                f"unit {self} is out of range: layer {self.layer!r} has {shape[0]} units (0-{shape[0] - 1})"
            )
        if self.position is not None:
            spatial = shape[1:]
            if len(self.position) != len(spatial) or any(
                not 0 <= p < s for p, s in zip(self.position, spatial)
            ):
                raise ValueError(
                    f"position {self.position} of unit {self} does not fit layer "
                    f"{self.layer!r}, whose maps are {tuple(spatial)}"
                )
        return self


def parse_unit(text: str) -> Unit:
    """Parse ``LAYER:INDEX`` or ``LAYER:INDEX@Y,X``."""
    m = _UNIT.match(text.strip())
    if not m:
        raise ValueError(
            f"cannot read unit address {text!r}: write LAYER:INDEX, e.g. features.28:12 "
            "or conv1:3@5,7 for a position"
        )
    pos = tuple(int(v) for v in m.group("pos").split(",")) if m.group("pos") else None
    return Unit(m.group("layer"), int(m.group("index")), pos)


def parse_unit_list(text: str | None, n: int, *, noun: str = "unit", whole: str = "the layer") -> list[int]:
    """``all`` / ``None`` -> every index; ``0-63`` -> a range; ``1,5,9-12`` -> a list. Checked
    against ``n`` units (``noun``: what is counted, ``whole``: what holds them, for messages)."""
    if text is None or (text.strip().lower() == "all" and noun == "unit"):
        return list(range(n))
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(f"cannot read {noun} list {text!r}: write "
                             f"{'all, ' if noun == 'unit' else ''}0-63 or 1,5,9-12")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if hi < lo:
            raise ValueError(f"empty {noun} range {part!r} in {text!r}")
        if hi >= n:
            raise ValueError(f"{noun} {hi} is out of range: {whole} has {n} {noun}s (0-{n - 1})")
        out.extend(range(lo, hi + 1))
    return list(dict.fromkeys(out))

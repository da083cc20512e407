"""The one progress protocol of every long-running function (openTSNE's shape).

A function that works for long takes ``progress: Callback | None`` (one name, one type,
everywhere; ``tests/test_progress_everywhere.py`` lists them); it calls it through
:func:`notify` with a small :class:`Progress` event after each unit of work, with a known
``total``. Where stopping early makes sense (training, optimization, sampling) it stops when the
callback returns ``True`` and returns what it has; its docstring says so, and elsewhere the answer
is ignored. Progress bars live in the command line (``convlens.cli.progress_events``), which
turns events into rich bars; the library only reports.

>>> seen = []
>>> def cb(p: Progress) -> bool:
...     seen.append((p.done, p.total))
...     return p.done >= 2          # ask to stop after two steps
>>> for i in range(5):
...     if notify(cb, "demo", i + 1, 5):
...         break
>>> seen
[(1, 5), (2, 5)]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["Callback", "Progress", "notify"]


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` steps of ``task`` (``total`` is ``None`` only when it cannot be
    known in advance); ``info`` carries a few numbers or words worth showing (a loss, a name)."""

    task: str
    done: int
    total: int | None
    info: Mapping[str, object] = field(default_factory=dict)

    @property
    def fraction(self) -> float | None:
        return None if not self.total else min(1.0, self.done / self.total)

    def describe(self) -> str:
        """``info`` as a short line (``loss 0.0123 · layer conv2``)."""
        return " · ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in self.info.items())


Callback = Callable[[Progress], "bool | None"]


def notify(callback: Callback | None, task: str, done: int, total: int | None, **info) -> bool:
    """Report one event; ``True`` when the callback asked the work to stop."""
    if callback is None:
        return False
    return bool(callback(Progress(task, int(done), None if total is None else int(total), info)))

"""An image dataset: ids, labels, class names, and a loader that yields display-space tensors."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch


class ImageDataset(torch.utils.data.Dataset):
    """Images as ``(C, H, W)`` float tensors in ``[0, 1]`` with integer labels (``-1``: none).

    ``ids`` name each image (a path, or ``digits/17``) for reports and caches; ``transforms``
    are applied in order on load and are part of :attr:`fingerprint`.
    """

    def __init__(
        self,
        ids: Sequence[str],
        load: Callable[[int], torch.Tensor],
        labels: Sequence[int] | np.ndarray | None = None,
        class_names: Sequence[str] = (),
        name: str = "dataset",
        transforms: Sequence[Callable] = (),
        source_fingerprint: str | None = None,
    ):
        self.ids = list(ids)
        if not self.ids:
            raise ValueError(f"dataset {name!r} is empty: no readable images were found")
        self._load = load
        self.labels = (
            np.full(len(self.ids), -1, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
        )
        if len(self.labels) != len(self.ids):
            raise ValueError(f"{len(self.ids)} images but {len(self.labels)} labels")
        self.class_names = tuple(str(c) for c in class_names)
        self.name = name
        self.transforms = tuple(transforms)
        self._source_fp = source_fingerprint or hashlib.sha256("\n".join(self.ids).encode()).hexdigest()

    # -- access --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def image(self, i: int) -> torch.Tensor:
        x = self._load(i)
        for t in self.transforms:
            x = t(x)
        return x

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.image(i), int(self.labels[i])

    @property
    def has_labels(self) -> bool:
        return bool((self.labels >= 0).any())

    @property
    def fingerprint(self) -> str:
        """Identifies the images and their transforms (for caches)."""
        h = hashlib.sha256(self._source_fp.encode())
        h.update(repr(self.transforms).encode())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return f"ImageDataset({self.name!r}, n={len(self)}, classes={len(self.class_names)})"

    # -- derived datasets ------------------------------------------------------------------------
    def _derive(self, ids, load, labels, transforms, fp_extra: str) -> ImageDataset:
        return ImageDataset(
            ids, load, labels, self.class_names, self.name, transforms,
            hashlib.sha256((self._source_fp + fp_extra).encode()).hexdigest(),
        )

    def with_transforms(self, *transforms: Callable) -> ImageDataset:
        """A view with ``transforms`` appended."""
        ds = ImageDataset(self.ids, self._load, self.labels, self.class_names, self.name,
                          self.transforms + tuple(transforms), self._source_fp)
        return ds

    def subset(self, indices: Sequence[int]) -> ImageDataset:
        idx = [int(i) for i in indices]
        return self._derive(
            [self.ids[i] for i in idx], lambda j: self._load(idx[j]), self.labels[idx],
            self.transforms, "subset:" + ",".join(map(str, idx)),
        )

    def split(self, val_fraction: float, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
        """Seeded, stratified by label when there are labels."""
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        rng = np.random.default_rng(seed)
        val: list[int] = []
        groups = [np.flatnonzero(self.labels == c) for c in np.unique(self.labels)]
        for g in groups:
            g = rng.permutation(g)
            val.extend(g[: max(1, round(len(g) * val_fraction))].tolist())
        val_set = set(val)
        train = [i for i in rng.permutation(len(self)).tolist() if i not in val_set]
        return self.subset(train), self.subset(sorted(val))

    def sample(self, n: int, seed: int = 0) -> ImageDataset:
        """``n`` images chosen at random (all of them when ``n >= len``), in index order."""
        if n >= len(self):
            return self
        return self.subset(sorted(np.random.default_rng(seed).choice(len(self), n, replace=False).tolist()))

    # -- batches ---------------------------------------------------------------------------------
    def batches(self, batch_size: int = 64, indices: Sequence[int] | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
        """``(images, labels, indices)`` in order. Images of different sizes are an error."""
        order = np.arange(len(self)) if indices is None else np.asarray(indices)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            xs = [self.image(int(i)) for i in idx]
            yield stack_images(xs, [self.ids[int(i)] for i in idx]), torch.as_tensor(self.labels[idx]), idx

    def tensors(self, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Every image and label in memory (for small datasets)."""
        xs, ys = [], []
        for x, y, _ in self.batches(batch_size):
            xs.append(x)
            ys.append(y)
        return torch.cat(xs), torch.cat(ys)


def stack_images(xs: list[torch.Tensor], ids: list[str]) -> torch.Tensor:
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) > 1:
        by_shape: dict[tuple, str] = {}
        for x, i in zip(xs, ids):
            by_shape.setdefault(tuple(x.shape), i)
        examples = "; ".join(f"{i} is {s[0]}x{s[1]}x{s[2]}" for s, i in list(by_shape.items())[:3])
        raise ValueError(
            f"images have different sizes ({examples}) and no resize was given: pass "
            "--resize H[xW] (resize=... in Python) or tile them (--tile)"
        )
    return torch.stack(xs)


def short_id(image_id: str, max_chars: int = 18) -> str:
    """A short title for an image id: the file's stem (``/data/photos/zebra.jpg`` -> ``zebra``),
    ``#i`` for an array's image (``cifar10-small/17`` -> ``#17``), with a tile's ``#r..c..``
    kept; cut to ``max_chars`` with an ellipsis so titles of neighbouring panels never overlap."""
    from pathlib import PurePath

    base, _, tile = str(image_id).partition("#")
    stem = PurePath(base).stem if base else base
    if stem.isdigit():
        stem = f"#{stem}"
    text = f"{stem}#{tile}" if tile else stem
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def short_name(class_name: str, max_chars: int = 16) -> str:
    """A class name short enough for a panel title: its first synonym (``"great white shark,
    white shark, ..."`` -> ``"great white shark"``), cut to ``max_chars`` with an ellipsis."""
    text = str(class_name).split(",")[0].strip()
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"

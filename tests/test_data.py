"""Datasets: every loader, the transforms of Kitahara & Holm, and each bad input's message."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from convlens import load_dataset, load_model
from convlens.data import (
    CLAHE,
    UnreadableImagesError,
    conform,
    from_folder,
    from_manifest,
    from_npz,
    gratings,
    read_image,
    tile_grid,
    tiled,
)


def _folder(tmp_path, corrupt=False):
    root = tmp_path / "imgs"
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(root / "cats" / "a.png")
    Image.fromarray(rng.integers(0, 255, (12, 10), dtype=np.uint8)).save(root / "cats" / "b.bmp")
    Image.fromarray(rng.integers(0, 65535, (12, 10), dtype=np.uint16)).save(root / "dogs" / "c.tif")
    Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(root / "dogs" / "d.jpg")
    if corrupt:
        (root / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return root


def test_folder_loader_formats_and_labels(tmp_path):
    ds = from_folder(_folder(tmp_path))
    assert ds.class_names == ("cats", "dogs")
    assert list(ds.labels) == [0, 0, 1, 1]
    x16 = ds.image(2)
    raw = np.asarray(Image.open(tmp_path / "imgs" / "dogs" / "c.tif")).astype(np.float32) / 65535
    np.testing.assert_allclose(x16[0].numpy(), raw, rtol=1e-6)  # 16-bit kept at full depth
    assert ds.image(0).shape == (3, 12, 10) and ds.image(1).shape == (1, 12, 10)
    assert 0 <= float(ds.image(3).min()) and float(ds.image(3).max()) <= 1


def test_unreadable_files_listed_and_skipped(tmp_path, caplog):
    root = _folder(tmp_path, corrupt=True)
    with caplog.at_level(logging.WARNING):
        ds = from_folder(root)
    assert len(ds) == 4 and any("broken.png" in r.message for r in caplog.records)
    assert ds.unreadable == [str(root / "dogs" / "broken.png")]
    with pytest.raises(UnreadableImagesError, match=r"1 unreadable image\(s\) \(--strict\):\n.*broken.png"):
        from_folder(root, strict=True)


def test_empty_and_missing(tmp_path):
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images found in"):
        from_folder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        from_folder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="dataset 'nope' not found"):
        load_dataset("nope")
    bad = tmp_path / "bad"
    (bad / "c").mkdir(parents=True)
    (bad / "c" / "x.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="is empty: none of 1 file"):
        from_folder(bad)


def test_manifest(tmp_path):
    root = _folder(tmp_path)
    (tmp_path / "m.csv").write_text("path,label\nimgs/cats/a.png,cat\nimgs/dogs/d.jpg,dog\nimgs/dogs/c.tif,dog\n")
    ds = from_manifest(tmp_path / "m.csv")
    assert ds.class_names == ("cat", "dog") and list(ds.labels) == [0, 1, 1]
    assert torch.equal(ds.image(0), read_image(root / "cats" / "a.png"))
    (tmp_path / "bad.csv").write_text("file,label\na.png,1\n")
    with pytest.raises(ValueError, match="needs a header with a 'path' column"):
        from_manifest(tmp_path / "bad.csv")
    (tmp_path / "missing.csv").write_text("path\nimgs/none.png\n")
    with pytest.raises(FileNotFoundError, match="do not exist"):
        from_manifest(tmp_path / "missing.csv", strict=True)


def test_npz_plain_and_keras_keys(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (5, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(5) % 2)
    ds = from_npz(tmp_path / "a.npz")
    assert len(ds) == 5 and ds.image(0).shape == (1, 8, 8)
    np.testing.assert_allclose(ds.image(3)[0].numpy(), x[3] / 255, rtol=1e-6)
    np.savez(tmp_path / "k.npz", x_train=x, y_train=np.arange(5), x_test=x[:2], y_test=np.arange(2))
    assert len(load_dataset(str(tmp_path / "k.npz") + ":test")) == 2
    assert len(load_dataset(str(tmp_path / "k.npz") + ":all")) == 7
    xc = np.random.default_rng(0).integers(0, 255, (3, 6, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "c.npz", x=xc)
    assert from_npz(tmp_path / "c.npz").image(0).shape == (3, 6, 6)
    np.savez(tmp_path / "w.npz", images=x)
    with pytest.raises(ValueError, match="expected 'x'"):
        from_npz(tmp_path / "w.npz")
    np.savez(tmp_path / "nan.npz", x=np.full((2, 4, 4), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        from_npz(tmp_path / "nan.npz").image(0)


def test_builtins(digits):
    assert len(digits) == 1797 and digits.image(0).shape == (1, 28, 28)
    assert digits.image(0)[:, :4].abs().sum() == 0  # MNIST-like border
    tex = load_dataset("textures")
    assert tex.class_names == ("brick", "grass", "gravel") and tex.image(0).shape == (1, 32, 32)
    g = gratings()
    assert len(g.class_names) == 8
    # a vertical edge (0 degrees) varies along x only
    img = g.image(g.ids.index("gratings/edge/0deg/phase4"))[0]
    assert torch.allclose(img[0], img[-1]) and img[:, 0].mean() < img[:, -1].mean()


def test_tiles_follow_kitahara_and_holm():
    # 2048x1768 micrographs -> a centred grid of 56 tiles of 224 px (7 rows x 8 columns)
    corners = tile_grid(1768, 2048, 224, grid=(7, 8))
    assert len(corners) == 56 and corners[0] == ((1768 - 7 * 224) // 2, (2048 - 8 * 224) // 2)
    assert len(tile_grid(1768, 2048, 224)) == 7 * 9  # the largest grid that fits
    from convlens.data import ImageDataset

    big = torch.rand(1, 1768, 2048)
    t = tiled(ImageDataset(["m"], lambda i: big, [0], ["a"]), 224, grid=(7, 8))
    assert len(t) == 56 and t.ids[0] == "m#r100c128"
    assert torch.equal(t.image(9), big[:, 324:548, 352:576])  # row 1, column 1
    with pytest.raises(ValueError, match="does not fit"):
        tile_grid(100, 100, 224)


def test_conform_channels_size_and_clahe(digits):
    sq = load_model("squeezenet1_1")
    ds = conform(digits.subset(range(3)), sq)
    x = ds.image(0)
    assert x.shape == (3, 227, 227) or x.shape == (3, 224, 224)
    assert torch.equal(x[0], x[1])
    cl = CLAHE()(digits.image(5))
    assert cl.shape == (1, 28, 28) and 0 <= cl.min() and cl.max() <= 1


def test_mixed_sizes_without_resize(tmp_path):
    root = tmp_path / "mixed" / "c"
    root.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "a.png")
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(root / "b.png")
    ds = conform(from_folder(tmp_path / "mixed"), load_model("lenet"), resize=None)
    with pytest.raises(ValueError, match="different sizes .* no resize was given"):
        next(ds.batches(2))
    ok = conform(from_folder(tmp_path / "mixed"), load_model("lenet"))
    assert next(ok.batches(2))[0].shape == (2, 1, 28, 28)


def test_split_is_stratified_and_seeded(digits):
    a, b = digits.split(0.2, seed=3)
    a2, b2 = digits.split(0.2, seed=3)
    assert a.ids == a2.ids and not set(a.ids) & set(b.ids) and len(a) + len(b) == len(digits)
    counts = np.bincount(b.labels, minlength=10)
    assert counts.min() >= 30

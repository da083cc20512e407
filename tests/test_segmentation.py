"""A user's label-index segmentation set dissects like the same set in our concept format."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from convlens import load_model
from convlens.dissect import dissect, load_concepts, load_segmentation

CLASSES = ["void", "sky", "road", "car", "tree"]  # 0 is void; 255 is unlabelled
SIZE = 24


def _make_set(root, n=10, seed=0):
    """Images with blocky regions; masks as VOC ships them (palette PNG of class numbers with 255
    on borders); and the same set written by hand in our format (one PNG per concept)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "ours" / "images").mkdir(parents=True)
    (root / "ours" / "masks").mkdir()
    colours = {1: (90, 150, 240), 2: (90, 90, 90), 3: (200, 30, 30), 4: (30, 160, 40), 0: (0, 0, 0)}
    rows = []
    for i in range(n):
        lab = np.full((SIZE, SIZE), 1, np.uint8)
        lab[SIZE // 2:] = 2
        for _ in range(2):
            r, c, s = rng.integers(0, SIZE - 8, 2).tolist() + [int(rng.integers(4, 9))]
            lab[r:r + s, c:c + s] = rng.choice([3, 4])
        lab[:, :2] = 0
        lab[0, :] = 255
        img = np.zeros((SIZE, SIZE, 3), np.uint8)
        for k, col in colours.items():
            img[lab == k] = col
        img = np.clip(img + rng.integers(0, 30, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"{i:03d}.jpg", quality=95)
        p = Image.fromarray(lab, mode="P")
        p.putpalette([v for k in range(256) for v in colours.get(k, (255, 255, 255))])
        p.save(root / "masks" / f"{i:03d}.png")
        Image.open(root / "images" / f"{i:03d}.jpg").save(root / "ours" / "images" / f"{i:03d}.png")
        for k in sorted(set(np.unique(lab).tolist()) - {0, 255}):
            path = f"masks/{i:03d}_{CLASSES[k]}.png"
            Image.fromarray(((lab == k) * 255).astype(np.uint8)).save(root / "ours" / path)
            rows.append([f"images/{i:03d}.png", CLASSES[k], "object", path])
    with open(root / "ours" / "concepts.csv", "w", newline="") as f:
        csv.writer(f).writerows([["concept", "category"]] + [[c, "object"] for c in CLASSES[1:]])
    with open(root / "ours" / "index.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image", "concept", "category", "mask"]] + rows)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


@pytest.fixture(scope="module")
def segset(tmp_path_factory):
    return _make_set(tmp_path_factory.mktemp("seg"))


@pytest.fixture(scope="module")
def vgg4():
    torch.manual_seed(0)
    return load_model("vgg4(in_size=24)", device="cpu")


def test_label_index_set_dissects_like_our_format(segset, vgg4):
    seg = load_segmentation(segset / "images", segset / "masks", segset / "classes.txt")
    ours = load_concepts(segset / "ours")
    assert seg.concepts == ours.concepts == tuple(CLASSES[1:])  # void is no concept
    ids, masks = seg.masks(3)
    lab = np.asarray(Image.open(segset / "masks" / "003.png"))
    for c, m in zip(ids, masks):
        np.testing.assert_array_equal(m, lab == CLASSES.index(seg.concepts[c]))
    assert not masks[:, 0, :].any()  # the 255 row belongs to no concept
    a = dissect(vgg4, seg, ["conv2", "conv4"], quantile=0.05, batch_size=4)
    b = dissect(vgg4, ours, ["conv2", "conv4"], quantile=0.05, batch_size=4)
    for layer in ("conv2", "conv4"):
        assert a[layer].iou.shape == (vgg4.net.get_submodule(layer).out_channels, 4)
        np.testing.assert_array_equal(a[layer].iou, b[layer].iou)
        assert a[layer].iou.max() > 0


def test_cli_dissects_images_with_masks_and_classes(segset, tmp_path):
    from convlens.cli import app

    r = CliRunner().invoke(app, ["dissect", "vgg4(in_size=24)", str(segset / "images"), "--masks",
                                 str(segset / "masks"), "--classes", str(segset / "classes.txt"),
                                 "-l", "conv2", "--out", str(tmp_path / "d"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert any((tmp_path / "d").iterdir())


def _cli_error(args) -> str:
    from convlens.cli import app

    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    return " ".join(r.output.split())


def test_bad_masks_say_which_file_and_the_fix(segset, tmp_path):
    bad = tmp_path / "bad"
    (bad / "masks").mkdir(parents=True)
    for p in (segset / "masks").iterdir():
        (bad / "masks" / p.name).write_bytes(p.read_bytes())
    Image.fromarray(np.ones((SIZE, SIZE + 1), np.uint8)).save(bad / "masks" / "004.png")
    base = ["dissect", "vgg4(in_size=24)", str(segset / "images"), "--classes", str(segset / "classes.txt"),
            "-l", "conv2", "--out", str(tmp_path / "out")]
    msg = _cli_error(base + ["--masks", str(bad / "masks")])
    assert "004.png is 24x25 but its image 004.jpg is 24x24" in msg and "nearest-neighbour" in msg
    Image.fromarray(np.full((SIZE, SIZE), 7, np.uint8)).save(bad / "masks" / "004.png")
    msg = _cli_error(base + ["--masks", str(bad / "masks")])
    assert "004.png holds class number(s) [7] beyond the class list (5 classes, 0..4)" in msg
    assert "--ignore" in msg
    msg = _cli_error(base + ["--masks", str(segset / "masks"), "--ignore", "0"])
    assert "[255]" in msg
    assert not (tmp_path / "out").exists()  # nothing written before the data is checked

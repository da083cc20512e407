from convlens.training import evaluate


def test_builtin_lenet_reaches_97_percent_held_out(lenet, digits):
    cfg = lenet.meta["train"]["config"]
    from convlens.data import conform

    _, held_out = conform(digits, lenet).split(cfg["val_fraction"], cfg["seed"])
    assert evaluate(lenet, held_out)["accuracy"] >= 0.97

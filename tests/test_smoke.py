from convlens.training import classification_scores


def test_builtin_lenet_reaches_97_percent_held_out(lenet, digits):
    cfg = lenet.meta["train"]["config"]
    from convlens.data import conform

    _, held_out = conform(digits, lenet).split(cfg["val_fraction"], cfg["seed"])
    assert classification_scores(lenet, held_out)["accuracy"] >= 0.97


def test_renamed_evaluate_keeps_a_warning_alias(lenet, digits):
    """``evaluate`` named two things (accuracy here, an objective's loss in optimize); the old
    names still work for one release, with a DeprecationWarning naming the new one."""
    import pytest
    import torch

    import convlens
    from convlens import optimize as opt
    from convlens.data import conform

    ds = conform(digits, lenet).subset(range(64))
    with pytest.warns(DeprecationWarning, match="classification_scores"):
        old = convlens.evaluate(lenet, ds)
    assert old["accuracy"] == classification_scores(lenet, ds)["accuracy"]
    x = torch.rand(2, 1, 28, 28)
    with pytest.warns(DeprecationWarning, match="objective_loss"):
        loss = opt.evaluate(lenet, opt.objectives.channel("conv1", 0), x)
    assert torch.equal(loss, opt.objective_loss(lenet, opt.objectives.channel("conv1", 0), x))
    assert "evaluate" not in convlens.__all__ and "evaluate" not in opt.__all__

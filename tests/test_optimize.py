"""The input-optimization engine: parametrizations, transforms, objectives, projections, loop."""

import doctest
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

import convlens.optimize as opt
from convlens.model import Model
from convlens.optimize import objectives as O


def _tiny(weights=(1.0, -2.0, 3.0)):
    """Grey 4x4 input -> 1x1 conv with hand-set weights (no bias) -> ReLU -> flatten -> dense."""
    c = len(weights)
    conv = nn.Conv2d(1, c, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(weights).view(c, 1, 1, 1))
    net = nn.Sequential(OrderedDict(conv=conv, relu=nn.ReLU(), flatten=nn.Flatten(),
                                    fc=nn.Linear(c * 16, 2)))
    from convlens.inputspec import PRESETS

    return Model(net, PRESETS["unit-gray"], "tiny")


def _ctx(acts, n=2):
    x = torch.zeros(n, 1, 4, 4)
    return O.ObjectiveContext(acts, x, x)


def test_module_docstring_examples_run():
    torch.manual_seed(0)
    result = doctest.testmod(opt, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0


def test_objectives_compose_with_arithmetic_and_declare_layers():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[5.0, 6.0, 7.0], [8.0, 9.0, 10.0]])
    ctx = _ctx({"a": a, "b": b})
    u, v = O.unit("a", 1), O.unit("b", [0, 2])
    combo = 2 * u - v / 4 + 1.5
    np.testing.assert_allclose(combo(ctx), 2 * -a[:, 1] - (-torch.tensor([5.0, 10.0])) / 4 + 1.5)
    assert combo.layers == {"a", "b"}
    assert "unit a:1" in str(combo) and "unit b:[0, 2]" in str(combo)
    assert (-u)(ctx).tolist() == a[:, 1].tolist()


def test_index_out_of_range_and_channel_on_dense_layer_give_clear_messages():
    ctx = _ctx({"fc": torch.zeros(2, 5), "conv": torch.zeros(2, 3, 4, 4)})
    with pytest.raises(ValueError, match=r"unit 7 is out of range: layer 'fc' has 5 units \(0-4\)"):
        O.unit("fc", 7)(ctx)
    with pytest.raises(ValueError, match=r"channel 3 is out of range: layer 'conv' has 3 units"):
        O.channel("conv", [0, 3])(ctx)
    with pytest.raises(ValueError, match=r"channel objective needs a layer with spatial dimensions"):
        O.channel("fc", 0)(ctx)
    with pytest.raises(ValueError, match=r"one loss per image"):
        O.custom(lambda c: torch.tensor(1.0), [], "scalar")(ctx)


def test_render_reports_out_of_range_unit_and_leaves_no_hook():
    m = _tiny()
    with pytest.raises(ValueError, match="out of range"):
        opt.render(m, O.channel("conv", 9), opt.PixelImage(1, 1, 4), steps=3)
    assert all(not mod._forward_hooks for mod in m.net.modules())


def test_nan_gradient_is_reported_with_its_step():
    m = _tiny()

    def bad(ctx):  # sqrt at 0 has an infinite derivative: the grey start sums to exactly 8
        return torch.sqrt((ctx.raw.flatten(1).sum(1) - 8.0).clamp_min(0)) + 0 * ctx.acts["conv"].sum()

    param = opt.PixelImage(init=torch.full((1, 1, 4, 4), 0.5))
    with pytest.raises(FloatingPointError, match="at step 0"):
        opt.render(m, O.custom(bad, ["conv"]), param, steps=3)


def test_channel_gradient_per_image_matches_closed_form():
    """1x1 conv, ReLU-free layer: d mean(channel c) / d pixel = w_c / 16. One SGD step of lr 1
    moves image i by w_{idx_i}/16 -- each image follows its own objective."""
    w = (1.0, -2.0, 3.0)
    m = _tiny(w)
    init = torch.full((3, 1, 4, 4), 0.5)
    param = opt.PixelImage(init=init)
    r = opt.render(m, O.channel("conv", [2, 0, 1]), param, steps=1, lr=1.0, optimizer="sgd")
    moved = (r.images - init)[:, 0, 0, 0]
    np.testing.assert_allclose(moved, torch.tensor([w[2], w[0], w[1]]) / 16, rtol=1e-5)
    # and the loss reported is the objective of the final image
    np.testing.assert_allclose(r.losses, -(0.5 + moved) * torch.tensor([w[2], w[0], w[1]]), rtol=1e-5)


def test_forward_stops_after_the_deepest_needed_layer_and_model_is_restored():
    m = _tiny()
    m.net.train()
    # the first pass on a network runs to the end once, counting how often each module runs
    opt.render(m, O.channel("conv", 0), opt.PixelImage(2, 1, 4), steps=1)
    calls = []
    handle = m.net.fc.register_forward_hook(lambda *a: calls.append(1))
    try:
        opt.render(m, O.channel("conv", 0), opt.PixelImage(2, 1, 4), steps=3)
        assert calls == [] and m.net.training
        assert all(p.requires_grad for p in m.net.parameters())
        opt.render(m, O.class_logit(1), opt.PixelImage(2, 1, 4), steps=2)
        assert len(calls) >= 2   # the output objective runs the whole network
    finally:
        handle.remove()
    assert all(len(mod._forward_hooks) == 0 for mod in m.net.modules())


def test_gradient_normalisation_gives_unit_rms_steps():
    m = _tiny()
    init = torch.full((2, 1, 4, 4), 0.5) + 0.1 * torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    r = opt.render(m, O.channel("conv", [0, 2]), opt.PixelImage(init=init), steps=1, lr=0.01,
                   optimizer="sgd", normalize_grad=True)
    rms = (r.images - init).pow(2).flatten(1).mean(1).sqrt()
    np.testing.assert_allclose(rms, [0.01, 0.01], rtol=1e-3)


def test_linf_and_l2_budgets_hold_per_image():
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(3, 1, 6, 6, generator=g)
    p = opt.Perturbation(x0)
    with torch.no_grad():
        p.delta.copy_(torch.randn(3, 1, 6, 6, generator=g))
    opt.LinfBall([0.1, 0.2, 0.0])(p, 0)
    assert torch.all(p.delta.flatten(1).abs().amax(1) <= torch.tensor([0.1, 0.2, 0.0]) + 1e-7)
    assert torch.all((x0 + p.delta >= -1e-7) & (x0 + p.delta <= 1 + 1e-7))
    with torch.no_grad():
        p.delta.copy_(torch.randn(3, 1, 6, 6, generator=g) * 0.01)
    small = p.delta.clone()
    opt.L2Ball(10.0)(p, 0)  # inside the ball and in range: unchanged where x0+delta is in [0, 1]
    assert torch.allclose(p.delta, (x0 + small).clamp(0, 1) - x0)
    with torch.no_grad():
        p.delta.copy_(torch.randn(3, 1, 6, 6, generator=g))
    opt.L2Ball(0.5)(p, 0)
    assert torch.all(p.delta.flatten(1).norm(dim=1) <= 0.5 + 1e-6)
    with pytest.raises(TypeError, match="Perturbation"):
        opt.LinfBall(0.1)(opt.PixelImage(1, 1, 4), 0)


def test_pgd_style_run_keeps_the_budget_and_raises_the_target_loss():
    m = _tiny()
    x0 = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    before = opt.objective_loss(m, O.class_log_prob([0, 1]), x0)
    r = opt.render(m, -O.class_log_prob([0, 1]), opt.Perturbation(x0, init="uniform", eps=0.05),
                   steps=20, lr=0.01, optimizer="sgd", normalize_grad=True, project=opt.LinfBall(0.05))
    assert float((r.images - x0).abs().max()) <= 0.05 + 1e-6
    # the objective is log p(class), minimized: each image's class became less likely
    assert torch.all(torch.as_tensor(r.losses) < -before)


def test_callback_stops_single_images_which_keep_their_state():
    m = _tiny()
    init = torch.full((2, 1, 4, 4), 0.5)
    seen = []

    def cb(step, loss, state):
        seen.append(step)
        return torch.tensor([True, False])

    r = opt.render(m, O.channel("conv", 0), opt.PixelImage(init=init.clone()), steps=4, callback=cb)
    assert torch.equal(r.images[0], init[0]) and not torch.equal(r.images[1], init[1])
    assert r.stopped_at.tolist() == [0, -1] and seen == [0, 1, 2, 3]
    r = opt.render(m, O.channel("conv", 0), opt.PixelImage(1, 1, 4), steps=50,
                   callback=lambda s, loss, st: s == 4)
    assert r.steps == 5


def test_progress_events_count_the_steps_and_stop_the_run_across_chunks():
    m = _tiny()
    events = []
    r = opt.render(m, O.channel("conv", 0), opt.PixelImage(2, 1, 4), steps=10,
                   progress=lambda e: events.append(e) or e.done == 3)
    assert [(e.task, e.done, e.total) for e in events] == [("optimization", k, 10) for k in (1, 2, 3)]
    assert r.steps == 3 and r.halted and r.stopped_at.tolist() == [-1, -1]
    assert events[-1].info["loss"] == pytest.approx(r.history[-1])
    # chunked: one count over all chunks; stopping in the second chunk leaves the third unmoved
    start = torch.full((5, 1, 4, 4), 0.5)

    def build(a, b):
        return O.channel("conv", 0), opt.PixelImage(init=start[a:b].clone()), None

    seen = []
    r = opt.render_chunked(m, 5, build, (1, 4, 4), limit=2, steps=4, task="demo",
                           progress=lambda e: seen.append((e.task, e.done, e.total)) or e.done == 6)
    assert seen == [("demo", k, 12) for k in range(1, 7)] and r.halted
    assert not torch.equal(r.images[2], start[2]) and torch.equal(r.images[4], start[4])


def test_total_variation_alpha_norm_and_l2_closed_forms():
    a = 0.1
    x = (torch.arange(5.0) * a).expand(1, 1, 5, 5).clone()       # horizontal ramp
    ctx = O.ObjectiveContext({}, x, x)
    assert float(O.total_variation(2.0)(ctx)) == pytest.approx(4 * 4 * a * a)
    assert float(O.total_variation(1.0)(ctx)) == pytest.approx(4 * 4 * a, rel=1e-3)
    np.testing.assert_allclose(float(O.alpha_norm(6, center=0)(ctx)), float((x.abs() ** 6).sum()), rtol=1e-6)
    np.testing.assert_allclose(float(O.l2(center=0.2)(ctx)), float(((x - 0.2) ** 2).sum()), rtol=1e-6)


def test_gram_and_feature_match_against_numpy():
    g = torch.Generator().manual_seed(2)
    f = torch.randn(2, 3, 4, 5, generator=g)
    fn = f.numpy().reshape(2, 3, 20)
    np.testing.assert_allclose(O.gram(f).numpy(), np.einsum("ncx,ndx->ncd", fn, fn) / 60, rtol=1e-5)
    t = torch.randn(1, 3, 4, 5, generator=g)
    ctx = _ctx({"L": f})
    expect = ((fn - t.numpy().reshape(1, 3, 20)) ** 2).sum((1, 2)) / (t.numpy() ** 2).sum()
    np.testing.assert_allclose(O.feature_match("L", t)(ctx).numpy(), expect, rtol=1e-5)
    assert float(O.feature_match("L", f)(ctx).abs().max()) < 1e-10
    assert float(O.style(["L"], [O.gram(f)])(ctx).abs().max()) < 1e-10


def test_per_image_objectives_match_the_vectorised_form():
    a = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    ctx = _ctx({"L": a}, n=3)
    each = O.per_image([O.channel("L", 1), O.channel("L", 3), O.unit("L", 0)])(ctx)
    np.testing.assert_allclose(each[:2], O.channel("L", [1, 3, 0])(ctx)[:2])
    assert float(each[2]) == pytest.approx(-float(a[2, 0, 1, 1]))


def test_parametrizations_are_seeded_and_in_range():
    a = opt.FourierImage(2, 3, (16, 12), seed=5).image().detach()
    b = opt.FourierImage(2, 3, (16, 12), seed=5).image().detach()
    c = opt.FourierImage(2, 3, (16, 12), seed=6).image().detach()
    assert a.shape == (2, 3, 16, 12) and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) > 0 and float(a.max()) < 1
    init = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    for squash in ("none", "sigmoid"):
        for dec in (False, True):
            p = opt.PixelImage(init=init, squash=squash, decorrelate=dec)
            np.testing.assert_allclose(p.image().detach(), init, atol=1e-5)
    with pytest.raises(ValueError, match="3 colour channels"):
        opt.PixelImage(1, 1, 8, decorrelate=True)
    with pytest.raises(TypeError, match="Parametrization"):
        opt.render(_tiny(), O.channel("conv", 0), torch.zeros(1, 1, 4, 4))


def test_transforms_draw_only_from_their_generator_and_keep_size():
    x = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    t = opt.standard_transforms(20)
    y1 = t(x, torch.Generator().manual_seed(7))
    torch.manual_seed(123)
    y2 = t(x, torch.Generator().manual_seed(7))
    assert y1.shape == x.shape and torch.equal(y1, y2)
    j = opt.Jitter(3)(x, torch.Generator().manual_seed(1))
    # a translation: some 14x14 window of the input reappears unchanged
    hits = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
            if torch.equal(j[..., 3:17, 3:17], x[..., 3 - dy:17 - dy, 3 - dx:17 - dx])]
    assert hits


def test_blur_and_clipping_regularizers():
    p = opt.PixelImage(init=torch.rand(1, 1, 9, 9, generator=torch.Generator().manual_seed(0)))
    before = p.pixels.detach().clone()
    with torch.no_grad():
        opt.BlurEvery(1.0, every=2)(p, 0)
        assert torch.equal(p.pixels, before)            # not on this step
        opt.BlurEvery(1.0, every=2)(p, 1)
    assert p.pixels.std() < before.std()
    assert float(p.pixels.detach().mean()) == pytest.approx(float(before.mean()), abs=0.02)
    with torch.no_grad():
        opt.ClipSmallNorm(50.0, fill=0.5)(p, 0)
    assert int((p.pixels == 0.5).sum()) >= 40


def test_function_param_in_generator_code_space():
    torch.manual_seed(0)
    m = _tiny()
    code = torch.zeros(2, 3)
    gen = nn.Sequential(nn.Linear(3, 16), nn.Sigmoid())
    param = opt.FunctionParam([code], lambda: gen(code).view(-1, 1, 4, 4))
    r = opt.render(m, O.channel("conv", [0, 2]), param, steps=30, lr=0.1,
                   project=lambda p, step: code.clamp_(-1, 1))
    assert float(code.abs().max()) <= 1 + 1e-6 and float(code.abs().max()) > 0.5
    assert r.losses[0] < float(opt.objective_loss(m, O.channel("conv", 0), gen(torch.zeros(1, 3)).view(1, 1, 4, 4)))


def test_result_save_and_load(tmp_path):
    r = opt.render(_tiny(), O.channel("conv", 0), opt.PixelImage(2, 1, 4), steps=3)
    back = opt.RenderResult.load(r.save(tmp_path / "r"))
    assert torch.equal(back.images, r.images) and back.history == r.history and back.steps == 3


def test_redirected_relu_gradient_rule_and_escape_from_the_dead_zone():
    # image 0: the ReLU passes gradient somewhere -> ordinary gradient; image 1: blocked
    # everywhere -> the part of the gradient that raises the input goes through
    x = torch.tensor([[1.0, -1.0, -2.0], [-1.0, -2.0, -3.0]], requires_grad=True)
    y = opt.redirected_relu(x)
    assert torch.equal(y, x.clamp_min(0))
    y.backward(torch.tensor([[-1.0, -1.0, 1.0], [-1.0, 1.0, -2.0]]))
    assert x.grad.tolist() == [[-1.0, 0.0, 0.0], [-1.0, 0.0, -2.0]]

    net = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 1, 1), relu=nn.ReLU(inplace=True)))
    with torch.no_grad():
        net.conv.weight.fill_(1.0)
        net.conv.bias.fill_(-0.8)        # off for pixels below 0.8
    from convlens.inputspec import PRESETS

    m = Model(net, PRESETS["unit-gray"], "off")
    init = torch.full((1, 1, 4, 4), 0.1)
    stuck = opt.render(m, O.channel("relu", 0), opt.PixelImage(init=init), steps=30,
                       project=opt.ClampPixels())
    assert torch.equal(stuck.images, init) and stuck.losses[0] == 0
    freed = opt.render(m, O.channel("relu", 0), opt.PixelImage(init=init), steps=30,
                       project=opt.ClampPixels(), redirect_relu=True)
    assert freed.losses[0] < -0.1                     # the channel is on
    assert all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in net.modules())
    assert not any("forward" in vars(mod) for mod in net.modules())    # swapped back
    # a ReLU whose forward is already replaced gets the hooks instead, with the same result
    net.relu.forward = lambda x: torch.relu_(x)
    hooked = opt.render(m, O.channel("relu", 0), opt.PixelImage(init=init), steps=30,
                        project=opt.ClampPixels(), redirect_relu=True)
    torch.testing.assert_close(hooked.images, freed.images)
    assert "forward" in vars(net.relu) and not net.relu._forward_hooks


def _small_cnn():
    """3 -> 8 -> 6 channels with an in-place ReLU and an overlapping ceil-mode max-pool (the
    layers whose NCHW kernels the channels-last engine avoids)."""
    torch.manual_seed(3)
    net = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 8, 3, stride=2), relu1=nn.ReLU(inplace=True),
        pool=nn.MaxPool2d(3, stride=2, ceil_mode=True), conv2=nn.Conv2d(8, 6, 3, padding=1),
        relu2=nn.ReLU(inplace=True), flatten=nn.Flatten(), fc=nn.Linear(6 * 7 * 7, 4)))
    from convlens.inputspec import PRESETS

    return Model(net.eval(), PRESETS["imagenet"], "small")


def test_channels_last_engine_gives_the_nchw_gradient():
    """The engine (channels-last weights, fused channel objective, no clone at the last hooked
    layer) against plain NCHW autograd written out here, on one step with transforms."""
    m = _small_cnn()
    units = [5, 0, 3, 3]
    seen = {}

    def grab(step, loss, state):
        seen["grad"] = state.param.spectrum.grad.clone()
        seen["loss"] = state.losses.clone()
        return True

    opt.render(m, O.channel("conv2", units), opt.FourierImage(4, 3, 32, seed=1), steps=1,
               transforms=opt.standard_transforms(32), seed=7, callback=grab)
    assert all(p.is_contiguous() for p in m.net.parameters())      # layout restored
    ref = opt.FourierImage(4, 3, 32, seed=1)
    x = opt.standard_transforms(32)(ref.image(), torch.Generator().manual_seed(7))
    a = m.net.conv2(m.net.pool(m.net.relu1(m.net.conv1(m.spec.normalize(x)))))
    loss = -a[torch.arange(4), torch.tensor(units)].mean(dim=(1, 2))
    loss.sum().backward()
    torch.testing.assert_close(seen["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(seen["grad"], ref.spectrum.grad, rtol=1e-4, atol=1e-6)


def test_bfloat16_render_reaches_about_the_float32_activation():
    from convlens.fast import bf16_native

    m = _small_cnn()
    runs = {}
    for precision in ("float32", "bfloat16"):
        with pytest.warns(UserWarning, match="no native bfloat16") if (
                precision == "bfloat16" and not bf16_native()) else _no_warning():
            runs[precision] = opt.render(m, O.channel("conv2", range(6)),
                                         opt.FourierImage(6, 3, 32, seed=0), steps=24, lr=0.1,
                                         precision=precision)
    f32, bf16 = runs["float32"], runs["bfloat16"]
    assert (f32.precision, bf16.precision) == ("float32", "bfloat16")
    start = opt.objective_loss(m, O.channel("conv2", range(6)), opt.FourierImage(6, 3, 32, seed=0).image())
    assert (bf16.losses < start.numpy()).all()                   # every unit rose
    ratio = bf16.losses / f32.losses                              # both negative activations
    assert np.median(ratio) > 0.8 and (ratio > 0.5).all()
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        opt.render(m, O.channel("conv2", 0), opt.PixelImage(1, 3, 32), steps=1, precision="half")


def _no_warning():
    from contextlib import nullcontext

    return nullcontext()


def test_fused_input_normalisation_matches_the_spec():
    """The one normalisation (InputSpec.normalize: channel mix + bias, used by Model.__call__ and
    every runner) against the elementwise definition, value and gradient, for an RGB, a BGR
    0-255 and a grey spec."""
    from convlens.inputspec import PRESETS

    def reference(spec, x):  # flip, value range, (x - mean) / std, one step at a time
        x = x.flip(1) if spec.channel_order == "BGR" else x
        lo, hi = spec.value_range
        mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
        std = torch.tensor(spec.std).view(1, -1, 1, 1)
        return (x * (hi - lo) + lo - mean) / std

    for name, c in (("imagenet", 3), ("caffe", 3), ("unit-gray", 1)):
        net = nn.Sequential(nn.Conv2d(c, 4, 3), nn.Flatten())
        spec = PRESETS[name]
        m = Model(net, spec, name)
        x = torch.rand(3, c, 8, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
        w = torch.randn(3, 4 * 36, generator=torch.Generator().manual_seed(1))
        assert (spec.normalize(x) is x) == (name == "unit-gray")  # identity: untouched
        (m(x) * w).sum().backward()
        g, x.grad = x.grad.clone(), None
        (net(reference(spec, x)) * w).sum().backward()
        torch.testing.assert_close(m(x), net(reference(spec, x)), rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(g, x.grad, rtol=1e-5, atol=1e-4)


def test_one_resampling_transform_matches_the_three_stage_composition_inside():
    """JitterScaleRotate draws like Compose([Jitter, RandomAffine, Jitter]) and gives the same
    pixels away from the border (integer shifts are exact in both)."""
    x = torch.nn.functional.interpolate(
        torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)), size=48, mode="bicubic")
    scales, degrees = (1.0, 0.95, 1.05), 5.0
    three = opt.Compose([opt.Jitter(4), opt.RandomAffine(scales, degrees), opt.Jitter(2)])
    one = opt.JitterScaleRotate(4, scales, degrees, after=2)
    for seed in range(6):
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        a, b = three(x, g1), one(x, g2)
        assert torch.equal(g1.get_state(), g2.get_state())             # the same draws
        torch.testing.assert_close(b[..., 12:-12, 12:-12], a[..., 12:-12, 12:-12], rtol=0, atol=1e-5)
        assert b.shape == x.shape
    assert opt.JitterScaleRotate()(x, torch.Generator()) is x           # identity: untouched

"""Generator-based commands: train-decoder, dgn-am, inverse-set."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperCommand

from convlens.cli import app
from convlens.cli._common import (
    DataArg,
    LimitOpt,
    ModelArg,
    ModelOptions,
    OptionGroup,
    OutOpt,
    SeedOpt,
    command,
    console,
    open_data,
    progress_events,
)

DecoderOpt = Annotated[Path | None, typer.Option(
    "--decoder", help="A decoder folder written by `convlens train-decoder` (the generator G). "
                      "Without it, one is trained first on --data.")]
TrainDataOpt = Annotated[str | None, typer.Option(
    "--data", help="Images to train a decoder on when --decoder is not given (default: the data "
                   "the model was trained on, when the model says so).")]
CodeLayerOpt = Annotated[str | None, typer.Option(
    "--code-layer", help="The layer whose features are the codes (default: the first dense layer's "
                         "activation).")]
EpochsOpt = Annotated[int, typer.Option("--epochs", help="Decoder training epochs.")]


class _RangeCommand(TyperCommand):
    """Reads ``--range Z1 Z2`` (two values, repeatable): Typer has no repeatable pair option, so
    the two values are joined into one before parsing and split again in the command."""

    def parse_args(self, ctx, args):
        out, i = [], 0
        while i < len(args):
            if args[i] in ("--range", "-r") and i + 2 < len(args) and _value(args[i + 2]):
                out += [args[i], f"{args[i + 1]} {args[i + 2]}"]
                i += 3
            else:
                out.append(args[i])
                i += 1
        return super().parse_args(ctx, out)


def _value(token: str) -> bool:
    """A value rather than the next option: a number (``-2`` too) or anything not starting with -."""
    try:
        float(token)
        return True
    except ValueError:
        return not token.startswith("-")


def _pair(text: str) -> tuple[str, str]:
    parts = text.split()
    if len(parts) != 2:
        raise ValueError(f"--range takes two values, Z1 Z2 (e.g. --range 8 12); got {text!r}")
    return parts[0], parts[1]


@dataclasses.dataclass(frozen=True)
class GeneratorOptions(OptionGroup):
    """Where the generator comes from (a saved decoder, or one trained first), declared once."""

    decoder: DecoderOpt = None
    data: TrainDataOpt = None
    code_layer: CodeLayerOpt = None
    epochs: EpochsOpt = 10
    limit: LimitOpt = None

    def open(self, m, seed: int, out: Path):
        """Load the decoder, or train one (saved under ``out/decoder``)."""
        from convlens.generative import default_code_layer, load_decoders, train_decoders

        if self.decoder is not None:
            decs = load_decoders(self.decoder)
            if self.code_layer is not None:
                if self.code_layer not in decs:
                    raise ValueError(f"{self.decoder} has decoders for {', '.join(decs)}, not {self.code_layer!r}")
                return decs[self.code_layer]
            return next(iter(decs.values()))
        data = self.data or (m.meta.get("train") or {}).get("dataset")
        if not data:
            raise ValueError("give a generator: --decoder DIR (from `convlens train-decoder`), or --data "
                             "DATA to train one first")
        layer = self.code_layer or default_code_layer(m)
        ds = open_data(data, limit=self.limit, seed=seed)
        with progress_events(f"decoder for {layer}") as progress:
            decs = train_decoders(m, ds, [layer], epochs=self.epochs, seed=seed, progress=progress)
        decs[layer].save(out / "decoder")
        console.print(f"decoder for {layer} written to {out / 'decoder'}")
        return decs[layer]


@command(app, "train-decoder")
def train_decoder_cmd(
    model: ModelArg,
    data: DataArg,
    layer: Annotated[list[str] | None, typer.Option(
        "--layer", "-l", help="Layer to invert (repeat for several; default: the first dense layer's "
                              "activation).")] = None,
    epochs: EpochsOpt = 10,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 32,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 5e-3,
    width: Annotated[int, typer.Option(help="Channels of the decoder's first map.")] = 64,
    compare: Annotated[int, typer.Option(
        help="Also rebuild this many images by regularized inversion (Mahendran & Vedaldi) and "
             "compare pixel and feature errors.")] = 0,
    compare_steps: Annotated[int, typer.Option(help="Optimization steps of that inversion.")] = 200,
    out: OutOpt = Path("results/decoder"),
    limit: LimitOpt = None,
    seed: SeedOpt = 0,
    model_opts: ModelOptions = ModelOptions(),
):
    """Train up-convolutional decoders that rebuild images from a layer's features (Dosovitskiy &
    Brox; the survey's eq. 16), one per layer, and save them under OUT/LAYER."""
    import torch

    from convlens.data import conform
    from convlens.generative import (
        decoder_errors,
        default_code_layer,
        reconstruction_figure,
        save_decoders,
        train_decoders,
    )

    m = model_opts.open(model)
    ds = open_data(data, limit=limit, seed=seed)
    layers = layer or [default_code_layer(m)]
    with progress_events("decoders (epochs)") as progress:
        decs = train_decoders(m, ds, layers, epochs=epochs, batch_size=batch_size, lr=lr, width=width,
                              seed=seed, progress=progress)
    save_decoders(decs, out)
    x, _ = conform(ds.sample(8, seed=seed), m).tensors()
    rows = {}
    for name, dec in decs.items():
        rows[name] = dec.reconstruct(m, x).cpu().numpy()
        err = decoder_errors(m, dec, x, torch.from_numpy(rows[name]))
        console.print(f"{name}: held-out loss {dec.history[-1].get('val_loss', float('nan')):.4g}, "
                      f"pixel RMS error {err['pixel_error'].mean():.3f}, relative feature error "
                      f"{err['feature_error'].mean():.3f} (8 images)")
    reconstruction_figure(x.cpu().numpy(), rows, out / "reconstructions.png")
    if compare:
        _compare_inversion(m, decs, ds, compare, compare_steps, seed, out)
    console.print(f"decoders written to {out}")


def _compare_inversion(m, decs, ds, images: int, steps: int, seed: int, out: Path) -> None:
    """``images`` other images rebuilt by the decoders and by regularized inversion: errors,
    times and both pictures (``train-decoder --compare``)."""
    from convlens.data import conform
    from convlens.generative import compare_inversion, reconstruction_figure

    xc, _ = conform(ds.sample(images, seed=seed + 1), m).tensors()
    cmp = compare_inversion(m, decs, xc, steps=steps, seed=seed)
    cmp.save(out / "comparison")
    reconstruction_figure(xc.cpu().numpy(), {f"{k} {name}": getattr(cmp, k)[i] for i, name in enumerate(cmp.layers)
                                       for k in ("upconv", "regularized")}, out / "comparison.png")
    for row in cmp.table():
        console.print(f"{row['layer']}: pixel RMS error up-conv {row['upconv_pixel_error']:.3f} vs "
                      f"regularized {row['regularized_pixel_error']:.3f}; feature error "
                      f"{row['upconv_feature_error']:.3f} vs {row['regularized_feature_error']:.3f}")
    console.print(f"time: up-conv {cmp.seconds['upconv']:.2f} s, regularized "
                  f"{cmp.seconds['regularized']:.1f} s ({images} images)")


@command(app, "dgn-am")
def dgn_am_cmd(
    model: ModelArg,
    unit: Annotated[str, typer.Option("--unit", "-u", help="Neuron LAYER:INDEX (conv: LAYER:C@Y,X, "
                                                            "or LAYER:C for the channel mean).")],
    n: Annotated[int, typer.Option("-n", help="Random starts (one image each).")] = 10,
    steps: Annotated[int, typer.Option(help="Optimization steps.")] = 200,
    weight: Annotated[float, typer.Option(help="L2 penalty on the code.")] = 1e-3,
    generator: GeneratorOptions = GeneratorOptions(),
    out: OutOpt = Path("results/dgn-am"),
    seed: SeedOpt = 0,
    model_opts: ModelOptions = ModelOptions(),
):
    """Activation maximization in a generator's code space (DGN-AM, Nguyen et al.)."""
    from convlens.generative import dgn_am, sample_rows

    m = model_opts.open(model)
    gen = generator.open(m, seed, out)
    with progress_events("DGN-AM (image-steps)") as progress:
        res = dgn_am(m, gen, unit, n, steps=steps, weight=weight, seed=seed, progress=progress)
    res.save(out)
    sample_rows([(res.images, res.activations[:, None])], [f"DGN-AM {res.unit}"], out / "dgn-am.png",
                per_row=min(10, n))
    console.print(f"{unit}: activation {res.activations.min():.4g} to {res.activations.max():.4g} "
                  f"over {n} starts; written to {out}")


@command(app, "inverse-set", cls=_RangeCommand)
def inverse_set_cmd(
    model: ModelArg,
    unit: Annotated[list[str], typer.Option(
        "--unit", "-u", help="Neuron LAYER:INDEX; repeat with one --range each for an intersection.")],
    range_: Annotated[list[str], typer.Option(
        "--range", "-r", metavar="Z1 Z2", help="Z1 Z2: the activation range. One neuron with several --range: one "
                              "inverse set per range (their Fig. 1).")],
    n: Annotated[int, typer.Option("-n", help="Samples per inverse set (seeds included).")] = 500,
    k: Annotated[int, typer.Option("-k", help="Seeds, and codes moved per sampling step.")] = 10,
    max_steps: Annotated[int | None, typer.Option(help="Sampling step budget.")] = None,
    rounds: Annotated[int, typer.Option(help="Augmented-Lagrangian rounds allowed for the seeds.")] = 8,
    step_size: Annotated[float, typer.Option(help="Sampling step, as a fraction of the codes' spread.")] = 0.05,
    encoder: Annotated[str | None, typer.Option(help="Layer ending the encoder E (default: the code layer).")] = None,
    singles: Annotated[bool, typer.Option(help="With several neurons, also sample each one alone "
                                                "(for the intersection picture, their Fig. 4).")] = True,
    generator: GeneratorOptions = GeneratorOptions(),
    out: OutOpt = Path("results/inverse-set"),
    seed: SeedOpt = 0,
    model_opts: ModelOptions = ModelOptions(),
):
    """Sample the inverse set of a neuron: N diverse images whose activation lies in [Z1, Z2]
    (Hada & Carreira-Perpiñán), or the intersection of several neurons' inverse sets."""
    from convlens.generative import make_constraint

    if len(unit) > 1 and len(range_) != len(unit):
        raise ValueError(f"{len(unit)} neurons need one --range each, got {len(range_)}")
    pairs = [_pair(r) for r in range_]
    cons = [make_constraint(u, *r) for u, r in zip(unit * len(pairs) if len(unit) == 1 else unit, pairs)]
    m = model_opts.open(model)
    gen = generator.open(m, seed, out)
    jobs = [[c] for c in cons] if len(unit) == 1 else [cons] + ([[c] for c in cons] if singles else [])
    results = []
    for j, job in enumerate(jobs):
        res = _one_set(m, gen, job, n, dict(k=k, encoder=encoder, max_rounds=rounds, step_size=step_size,
                                            max_steps=max_steps, seed=seed))
        res.save(out / (f"set-{j}" if len(jobs) > 1 else ""))
        results.append(res)
    console.print(f"results in {out}; picture {_sets_figure(results, len(unit) == 1, singles, out)}")


def _one_set(m, gen, job: list, n: int, options: dict):
    """One inverse set (or intersection) with its bar, and a line on how it went."""
    import warnings

    from convlens.generative import RangeNotReachedWarning, inverse_set

    name = " and ".join(map(str, job))
    with progress_events(name) as progress:
        with warnings.catch_warnings():  # the message is printed below, once
            warnings.simplefilter("ignore", RangeNotReachedWarning)
            res = inverse_set(m, gen, job, n, progress=progress, **options)
    line = (f"{name}: {len(res)} samples; seeds in {res.seed_rounds} rounds ({res.seed_steps} "
            f"steps, {res.seconds['seeding']:.1f} s), then {res.sample_steps} sampling steps "
            f"({res.seconds['sampling']:.1f} s)")
    console.print(line if res.complete else f"[yellow]{res.message}[/]", highlight=False)
    return res


def _sets_figure(results: list, one_neuron: bool, singles: bool, out: Path) -> Path:
    """One neuron: its sets side by side by range; several: the intersection (beside each
    neuron's own set when sampled)."""
    from convlens.generative import intersection_figure, range_figure, sample_rows

    if one_neuron:
        return range_figure(results, out / "ranges.png")
    if singles:
        return intersection_figure(results[1:], results[0], out / "intersection.png")
    return sample_rows(results, ["intersection"], out / "intersection.png")

"""Up-convolutional inversion (Dosovitskiy & Brox 2016): a decoder ``D`` trained to rebuild an
image from one layer's features, ``D(A(x)) ~ x``.

The architecture follows the survey's description of the *UpconvNet* (Qin et al., section 5.2.2):
up-convolutions (a stride-2 transposed convolution is the "unpool by 2, zeros elsewhere, then
convolve" of the paper in one operation), leaky ReLU of slope 0.2 after every layer but the last,
and the reconstruction loss of the survey's eq. 16, ``sum_i ||x_i - D(A(x_i), W)||^2``. The last
layer is a sigmoid so that the output is a display-space image in ``[0, 1]``, which makes the
decoder a generator ``G(c)`` for DGN-AM and inverse-set sampling.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convlens.files import atomic_path, read_json, write_json
from convlens.progress import Callback, notify

log = logging.getLogger(__name__)

LEAK = 0.2  # the leaky ReLU slope of Dosovitskiy & Brox


class UpconvDecoder(nn.Module):
    """Features of shape ``code_shape`` (``(D,)`` or ``(C, h, w)``) -> images ``image_shape``
    ``(channels, H, W)`` in ``[0, 1]``.

    A dense code first goes through a linear layer to a small map (side about 7 px, ``width``
    channels); a spatial code through a 3x3 convolution. Then as many up-convolutions (4x4,
    stride 2, channels halved down to 16) as it takes to reach the image side, a 3x3 convolution
    to the image channels, a bilinear resize when the sides do not match exactly, and a sigmoid.
    """

    def __init__(self, code_shape: Sequence[int], image_shape: Sequence[int], width: int = 64):
        super().__init__()
        code_shape, image_shape = tuple(int(s) for s in code_shape), tuple(int(s) for s in image_shape)
        if len(code_shape) not in (1, 3) or min(code_shape) < 1:
            raise ValueError(f"code_shape must be (D,) or (C, h, w), got {code_shape}")
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be (channels, H, W), got {image_shape}")
        self.code_shape, self.image_shape, self.width = code_shape, image_shape, int(width)
        side = max(image_shape[1:])
        if len(code_shape) == 1:
            ups = max(1, math.ceil(math.log2(side / 7)))
            start = math.ceil(side / 2**ups)
            self.stem = nn.Sequential(nn.Linear(code_shape[0], width * start * start), nn.LeakyReLU(LEAK),
                                      nn.Unflatten(1, (width, start, start)))
        else:
            ups = max(0, math.ceil(math.log2(side / max(code_shape[1:]))))
            self.stem = nn.Sequential(nn.Conv2d(code_shape[0], width, 3, padding=1), nn.LeakyReLU(LEAK))
        layers: list[nn.Module] = []
        ch = width
        for _ in range(ups):
            nxt = max(16, ch // 2)
            layers += [nn.ConvTranspose2d(ch, nxt, 4, stride=2, padding=1), nn.LeakyReLU(LEAK)]
            ch = nxt
        self.up = nn.Sequential(*layers)
        self.out = nn.Conv2d(ch, image_shape[0], 3, padding=1)
        # codes are standardized first (set from the training codes by ``standardize``): raw
        # features of a deep layer can be large enough to saturate the output sigmoid at the start
        self.register_buffer("code_center", torch.zeros(code_shape))
        self.register_buffer("code_scale", torch.ones(code_shape))

    def standardize(self, codes: torch.Tensor) -> None:
        """Centre inputs on the per-feature mean of ``codes`` and divide by one scale, their overall
        standard deviation (one scale, not one per feature: a feature that barely varies in the
        training codes must not become a lever that moves the image a lot)."""
        with torch.no_grad():
            center = codes.mean(0)
            self.code_center.copy_(center)
            self.code_scale.fill_(float((codes - center).pow(2).mean().sqrt()) + 1e-8)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        if tuple(code.shape[1:]) != self.code_shape:
            raise ValueError(f"the decoder takes codes of shape (N, {', '.join(map(str, self.code_shape))}), "
                             f"got {tuple(code.shape)}")
        x = self.out(self.up(self.stem((code - self.code_center) / self.code_scale)))
        if tuple(x.shape[2:]) != self.image_shape[1:]:
            x = F.interpolate(x, size=self.image_shape[1:], mode="bilinear", align_corners=False)
        return torch.sigmoid(x)


class Decoder:
    """A trained up-convolutional decoder for one layer of one model: the generator ``G``.

    Attributes
    ----------
    net : the :class:`UpconvDecoder`
    layer : the layer whose features it inverts (``named_modules()`` name)
    code_low, code_high : per-feature minimum and maximum over the training images (a box that
        keeps codes where the decoder has seen data; DGN-AM clips to it)
    code_mean, code_std : per-feature mean and standard deviation over the training images
    history : ``[{epoch, loss, val_loss}]``, losses as eq. 16 per image (sum over pixels)
    info : model name and weights hash, dataset name and fingerprint, training settings
    """

    def __init__(self, net: UpconvDecoder, layer: str, stats: dict[str, torch.Tensor],
                 history: list[dict] | None = None, info: dict | None = None):
        self.net, self.layer = net, layer
        self.code_low, self.code_high = stats["code_low"], stats["code_high"]
        self.code_mean, self.code_std = stats["code_mean"], stats["code_std"]
        self.history = list(history or [])
        self.info = dict(info or {})

    @property
    def code_shape(self) -> tuple[int, ...]:
        return self.net.code_shape

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.net.image_shape

    def __repr__(self) -> str:
        return (f"Decoder(layer={self.layer!r}, code={self.code_shape}, image={self.image_shape}, "
                f"model={self.info.get('model', '?')!r})")

    def __call__(self, code: torch.Tensor) -> torch.Tensor:
        """``G(code)``: images ``(N, C, H, W)`` in ``[0, 1]``, differentiable in ``code``."""
        return self.net(code)

    def encode(self, model, images: torch.Tensor) -> torch.Tensor:
        """The codes of ``images``: ``model``'s features at :attr:`layer` (no gradient)."""
        return layer_features(model, images, [self.layer])[self.layer]

    def reconstruct(self, model, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """``D(A(x))`` for display-space ``images``: one forward pass, no optimization; both
        networks run through :mod:`convlens.runner`, in chunks that fit the memory budget (at
        most ``batch_size`` images)."""
        from convlens.runner import outputs

        return outputs(self.net, self.encode(model, images), limit=batch_size)

    # -- saving ----------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``decoder.safetensors`` (weights and code statistics) and ``decoder.json``."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        for k in ("code_low", "code_high", "code_mean", "code_std"):
            tensors[f"stats.{k}"] = getattr(self, k).detach().cpu().contiguous()
        with atomic_path(d / "decoder.safetensors") as tmp:
            save_file(tensors, str(tmp))
        write_json(d / "decoder.json", {
            "kind": "upconv-decoder", "layer": self.layer, "code_shape": list(self.code_shape),
            "image_shape": list(self.image_shape), "width": self.net.width,
            "history": self.history, "info": self.info,
        })
        return d

    @classmethod
    def load(cls, directory: str | Path) -> Decoder:
        """Read a decoder written by :meth:`save` (no code is run: safetensors and JSON)."""
        from safetensors.torch import load_file

        d = Path(directory)
        if not (d / "decoder.json").is_file():
            raise FileNotFoundError(
                f"no decoder in {d} (decoder.json is missing); train one with "
                "`convlens train-decoder MODEL DATA --layer L --out DIR`")
        meta = read_json(d / "decoder.json")
        net = UpconvDecoder(meta["code_shape"], meta["image_shape"], meta["width"])
        tensors = load_file(str(d / "decoder.safetensors"))
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        net.eval()
        stats = {k[6:]: v for k, v in tensors.items() if k.startswith("stats.")}
        return cls(net, meta["layer"], stats, meta.get("history"), meta.get("info"))


def layer_features(model, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Features of ``images`` at ``layers`` (detached), the forward pass stopped after the last,
    in chunks that fit the memory budget (:func:`convlens.runner.capture`)."""
    from convlens.runner import capture

    return capture(model, images, list(layers))


def default_code_layer(model) -> str:
    """The layer whose features serve as codes when none is named: the first dense layer's
    activation (its following ReLU-like module), as DGN-AM and Hada & Carreira-Perpiñán use
    CaffeNet's fc6; without a dense layer, the last leaf module that runs."""
    from convlens.summary import describe_layers

    named = dict(model.net.named_modules())
    leaves = [i.name for i in describe_layers(model)
              if i.shape is not None and not any(True for _ in named[i.name].children())]
    for j, name in enumerate(leaves):
        if isinstance(named[name], nn.Linear):
            nxt = leaves[j + 1] if j + 1 < len(leaves) else None
            acts = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid)
            return nxt if nxt is not None and isinstance(named[nxt], acts) else name
    if not leaves:
        raise ValueError("the model has no layers that run; name the code layer (--layer)")
    return leaves[-1]


def save_decoders(decoders: dict[str, Decoder], directory: str | Path) -> Path:
    """One subfolder per layer (``DIR/<layer>/decoder.json``)."""
    d = Path(directory)
    for layer, dec in decoders.items():
        dec.save(d / layer)
    return d


def load_decoders(directory: str | Path) -> dict[str, Decoder]:
    """Every decoder under ``directory`` (the folder itself, or one subfolder per layer)."""
    d = Path(directory)
    if (d / "decoder.json").is_file():
        dec = Decoder.load(d)
        return {dec.layer: dec}
    found = {dec.layer: dec for dec in (Decoder.load(p.parent) for p in sorted(d.glob("*/decoder.json")))}
    if not found:
        raise FileNotFoundError(f"no decoder under {d}: expected decoder.json there or in its subfolders")
    return found


# -- training ------------------------------------------------------------------------------------
def _code_stats(codes: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"code_low": codes.amin(0), "code_high": codes.amax(0),
            "code_mean": codes.mean(0), "code_std": codes.std(0)}


def reconstruction_loss(recon: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Eq. 16 of the survey per image: ``||x - D(A(x))||^2`` summed over pixels, averaged over
    the batch."""
    return (recon - images).pow(2).flatten(1).sum(1).mean()


def train_decoders(model, dataset, layers: str | Sequence[str], *, epochs: int = 10, batch_size: int = 32,
                   lr: float = 5e-3, width: int = 64, val_fraction: float = 0.1, seed: int = 0,
                   progress: Callback | None = None) -> dict[str, Decoder]:
    """Train one up-convolutional decoder per layer on ``dataset`` (eq. 16 of the survey).

    Parameters
    ----------
    model : a :class:`convlens.Model`; it stays as it was (frozen during training)
    dataset : an :class:`~convlens.data.ImageDataset`, conformed to the model here
    layers : one layer name or several; their features are captured in one forward pass
    epochs, batch_size, lr : Adam on the summed squared pixel error
    width : channels of the decoder's first map (halved at each up-convolution, at least 16)
    val_fraction : held-out share for the validation loss in ``history``
    seed : seeds the split, the shuffling and the decoders' initial weights
    progress : receives a :class:`~convlens.progress.Progress` event ``("decoders", epoch,
        epochs)`` after every epoch, its ``info`` holding each layer's training loss (``"LAYER
        loss"``); ``True`` stops the training there (the decoders so far are returned)

    Returns
    -------
    dict mapping each layer to its :class:`Decoder`

    Examples
    --------
    >>> decs = train_decoders(load_model("lenet-digits"), load_dataset("digits"), "relu3",
    ...                       epochs=5)                                   # doctest: +SKIP
    >>> images = decs["relu3"].reconstruct(model, x)                       # doctest: +SKIP
    """
    from convlens.data import conform

    layers = _check_training(layers, epochs, batch_size, val_fraction)
    data = conform(dataset, model)
    images, _ = data.tensors()
    g = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(images), generator=g)
    n_val = int(round(len(images) * val_fraction)) if len(images) > 1 else 0
    val_x, train_x = images[order[:n_val]], images[order[n_val:]]
    chunks = [layer_features(model, train_x[i:i + 512], layers) for i in range(0, len(train_x), 512)]
    codes = {k: torch.cat([c[k] for c in chunks]) for k in layers}
    torch.manual_seed(int(seed))
    nets = {k: UpconvDecoder(tuple(codes[k].shape[1:]), tuple(images.shape[1:]), width) for k in layers}
    for k in layers:
        nets[k].standardize(codes[k])
    opts = {k: torch.optim.Adam(nets[k].parameters(), lr=lr) for k in layers}
    history: dict[str, list[dict]] = {k: [] for k in layers}
    for epoch in range(epochs):
        sums = _epoch(model, nets, opts, train_x, batch_size, g)
        for k in layers:
            history[k].append(_validated(model, nets[k], k, val_x, epoch, sums[k] / len(train_x)))
        log.info("decoder epoch %d: %s", epoch, {k: round(h[-1]["loss"], 3) for k, h in history.items()})
        if notify(progress, "decoders", epoch + 1, epochs, **{f"{k} loss": h[-1]["loss"] for k, h in history.items()}):
            break
    info = {"model": getattr(model, "name", "model"), "model_hash": model.weights_hash(),
            "dataset": getattr(dataset, "name", "data"), "dataset_fingerprint": data.fingerprint,
            "images": int(len(train_x)), "held_out": int(n_val), "epochs": len(history[layers[0]]),
            "batch_size": batch_size, "lr": lr, "seed": seed}
    return {k: Decoder(nets[k], k, _code_stats(codes[k]), history[k], info) for k in layers}


def _check_training(layers, epochs, batch_size, val_fraction) -> list[str]:
    """The layers as a list without repeats; a ``ValueError`` for a bad setting."""
    layers = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
    if not layers:
        raise ValueError("give at least one layer to train a decoder for")
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    return layers


def _epoch(model, nets: dict, opts: dict, train_x: torch.Tensor, batch_size: int, g: torch.Generator) -> dict:
    """One pass over ``train_x`` in a shuffled order, every layer's decoder trained on the same
    batches (their features captured in one forward pass); the summed losses per layer."""
    perm = torch.randperm(len(train_x), generator=g)
    sums = dict.fromkeys(nets, 0.0)
    for net in nets.values():
        net.train()
    for start in range(0, len(train_x), batch_size):
        x = train_x[perm[start:start + batch_size]]
        feats = layer_features(model, x, list(nets))
        for k, net in nets.items():
            opts[k].zero_grad(set_to_none=True)
            loss = reconstruction_loss(net(feats[k]), x)
            loss.backward()
            opts[k].step()
            sums[k] += float(loss.detach()) * len(x)
    return sums


def _validated(model, net, layer: str, val_x: torch.Tensor, epoch: int, loss: float) -> dict:
    """The epoch's history entry: its training ``loss`` and, with held-out images, ``val_loss``
    (``net`` left in eval mode)."""
    net.eval()
    entry = {"epoch": epoch, "loss": loss}
    if len(val_x):
        with torch.no_grad():
            entry["val_loss"] = float(reconstruction_loss(net(layer_features(model, val_x, [layer])[layer]), val_x))
    return entry


def train_decoder(model, dataset, layer: str, **kwargs) -> Decoder:
    """:func:`train_decoders` for one layer; returns its :class:`Decoder`."""
    if not isinstance(layer, str):
        raise TypeError(f"layer must be one layer name, got {type(layer).__name__}; use "
                        "train_decoders for several")
    return train_decoders(model, dataset, [layer], **kwargs)[layer]


def decoder_errors(model, decoder: Decoder, images: torch.Tensor, recon: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image errors of reconstructions ``recon`` of ``images``, as regularized inversion
    reports them (``convlens.visualize.invert``): pixel error, the root mean square difference in
    ``[0, 1]`` units; feature error, ``||A(x') - A(x)|| / ||A(x)||`` at the decoder's layer."""
    a = decoder.encode(model, images).flatten(1)
    b = decoder.encode(model, recon).flatten(1)
    pix = (recon - images).flatten(1).pow(2).mean(1).sqrt()
    feat = (b - a).norm(dim=1) / a.norm(dim=1).clamp_min(1e-12)
    return {"pixel_error": pix.cpu().numpy(), "feature_error": feat.cpu().numpy()}

"""Up-convolutional inversion against regularized inversion (Mahendran & Vedaldi, run by
:func:`convlens.visualize.invert`) on the same images and layers: pixel error, feature error and
time, measured the same way for both."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from convlens.generative._decoder import Decoder, decoder_errors


@dataclass
class InversionComparison:
    """Per layer and image: ``pixel`` (root mean square difference in ``[0, 1]`` units) and
    ``feature`` (``||A(x') - A(x)|| / ||A(x)||``) errors of both methods, shapes ``(L, N)``;
    rebuilt images ``(L, N, C, H, W)``; ``seconds``: wall time of each method for all images."""

    layers: list[str]
    originals: np.ndarray
    upconv: np.ndarray
    regularized: np.ndarray
    errors: dict[str, np.ndarray]
    seconds: dict[str, float]
    params: dict = field(default_factory=dict)

    def table(self) -> list[dict]:
        return [{"layer": name,
                 "upconv_pixel_error": float(self.errors["upconv_pixel"][i].mean()),
                 "upconv_feature_error": float(self.errors["upconv_feature"][i].mean()),
                 "regularized_pixel_error": float(self.errors["regularized_pixel"][i].mean()),
                 "regularized_feature_error": float(self.errors["regularized_feature"][i].mean())}
                for i, name in enumerate(self.layers)]

    def save(self, folder: str | Path) -> Path:
        from convlens.files import save_result

        arrays = {"originals": self.originals, "upconv": self.upconv, "regularized": self.regularized,
                  **{f"error_{k}": v for k, v in self.errors.items()}}
        return save_result(folder, "inversion-comparison", arrays,
                           {"layers": self.layers, "seconds": self.seconds, "params": self.params,
                            "table": self.table()})

    @classmethod
    def load(cls, folder: str | Path) -> InversionComparison:
        from convlens.files import load_result

        a, info = load_result(folder, "inversion-comparison")
        errors = {k[len("error_"):]: v for k, v in a.items() if k.startswith("error_")}
        return cls(info["layers"], a["originals"], a["upconv"], a["regularized"], errors,
                   info["seconds"], info["params"])


def compare_inversion(model, decoders: Decoder | dict[str, Decoder], images: torch.Tensor, *,
                      steps: int = 200, seed: int = 0) -> InversionComparison:
    """Rebuild ``images`` (display space, ``(N, C, H, W)``) from each decoder's layer with the
    decoder (one forward pass) and with regularized inversion (``steps`` optimization steps per
    image, all layers of one image in one batch), and measure both the same way."""
    from convlens.visualize import invert

    decs = {decoders.layer: decoders} if isinstance(decoders, Decoder) else dict(decoders)
    if not decs:
        raise ValueError("give at least one decoder")
    images = torch.as_tensor(images, dtype=torch.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty batch (N, C, H, W), got {tuple(images.shape)}")
    layers = list(decs)
    t = time.perf_counter()
    up = torch.stack([decs[k].reconstruct(model, images) for k in layers])
    t_up = time.perf_counter() - t
    t = time.perf_counter()
    reg = torch.stack([torch.from_numpy(invert(model, x, layers, steps=steps, seed=seed).images)
                       for x in images], 1)
    t_reg = time.perf_counter() - t
    errors: dict[str, list] = {"upconv_pixel": [], "upconv_feature": [], "regularized_pixel": [],
                               "regularized_feature": []}
    for i, k in enumerate(layers):
        for name, rec in (("upconv", up[i]), ("regularized", reg[i])):
            e = decoder_errors(model, decs[k], images, rec)
            errors[f"{name}_pixel"].append(e["pixel_error"])
            errors[f"{name}_feature"].append(e["feature_error"])
    return InversionComparison(layers, images.cpu().numpy(), up.cpu().numpy(), reg.cpu().numpy(),
                               {k: np.stack(v) for k, v in errors.items()},
                               {"upconv": round(t_up, 4), "regularized": round(t_reg, 4)},
                               {"steps": steps, "seed": seed, "images": len(images)})

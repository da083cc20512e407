"""``load_model(spec)``: a network plus its input spec, from a name, a file or a user factory.

Accepted specs
--------------
- a built-in trained model: ``lenet-digits``
- a built-in architecture with arguments: ``lenet``, ``vgg4``, ``M(64,0,64)``, ``C(64,32,64)``,
  ``vgg16``, ``alexnet``, ``squeezenet1_1`` -- optionally with ``weights=`` a state-dict file
  (``.pt``, ``.pth``, ``.safetensors``, ``.npz``)
- ``torchvision:NAME`` when torchvision is importable
- a TorchScript file
- a snapshot written by ``convlens train`` (its JSON side-car names the architecture)
- a model card ``.yaml``/``.json`` with ``arch``, ``weights``, ``input_spec``, ``classes``
- a user's factory ``path/to/file.py:build`` (runs that file: the user named it)
- an ``nn.Module`` (Python only)

State dicts load with ``weights_only=True``; a full pickle needs ``trust_pickle=True``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from convlens.inputspec import PRESETS, InputSpec, read_class_names, resolve_input_spec
from convlens.nets import build_architecture, parse_arch

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).parent / "weights"
BUILTIN_MODELS = {"lenet-digits": "LeNet trained on the built-in digits by `convlens train` (see README)"}
STATE_DICT_SUFFIXES = (".pt", ".pth", ".safetensors", ".npz", ".bin", ".ckpt")


class Model:
    """An ``nn.Module`` with the :class:`InputSpec` it expects.

    Calling the model takes images in display space (``[0, 1]``, RGB or grey) and applies the
    spec's normalisation first; ``model.net`` is the untouched module, whose layer names are the
    ones every convlens function takes.
    """

    def __init__(self, net: nn.Module, spec: InputSpec, name: str = "model", meta: dict | None = None):
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        self.net = net
        self.spec = spec
        self.name = name
        self.meta = dict(meta or {})

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.spec.normalize(x))

    def __repr__(self) -> str:
        return f"Model({self.name!r}, input={self.spec.channels}x{self.spec.size[0]}x{self.spec.size[1]})"

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names

    @property
    def device(self) -> torch.device:
        p = next(self.net.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def example_input(self, n: int = 1) -> torch.Tensor:
        h, w = self.spec.size
        return torch.full((n, self.spec.channels, h, w), 0.5, device=self.device)

    def weights_hash(self) -> str:
        """SHA-256 over parameter and buffer names and bytes: a cache key for results."""
        h = hashlib.sha256()
        for k, v in self.net.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        h.update(json.dumps(self.spec.to_dict(), sort_keys=True).encode())
        return h.hexdigest()[:16]


# -- reading weights ---------------------------------------------------------------------------
def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 2)[1:2] == ["code"] for n in z.namelist() if "/" in n)


def read_state_dict(path: str | Path, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.pt``/``.pth``/``.safetensors``/``.npz`` without running code."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file not found: {p}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            return {k: torch.from_numpy(z[k]) for k in z.files}
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError: a whole pickled module or other objects
        if not trust_pickle:
            raise ValueError(
                f"{p} is not a plain state dict: it is a full pickle, and loading it would run code "
                "stored in the file. If you trust where it came from, pass --trust-pickle "
                "(trust_pickle=True in Python); better, save model.state_dict() and load it with "
                "its architecture."
            ) from e
        obj = torch.load(p, map_location="cpu", weights_only=False)
    if isinstance(obj, nn.Module):
        return obj  # type: ignore[return-value]  # handled by the caller
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            if all(k.startswith("module.") for k in obj):
                obj = {k[len("module."):]: v for k, v in obj.items()}
            return obj
    raise ValueError(f"{p} holds a {type(obj).__name__}, not a state dict of tensors")


def load_weights(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly into ``net``, naming missing, unexpected and misshapen keys."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append(f"shape mismatch {shapes[:3]}")
        raise ValueError(
            f"the weights in {source} do not fit this architecture: {'; '.join(parts)}. "
            "Check the architecture name and its arguments (`convlens layers` shows the layout)."
        )
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


# -- the loaders ---------------------------------------------------------------------------------
def _load_factory(spec: str) -> tuple[nn.Module, str]:
    file, _, func = spec.rpartition(":")
    path = Path(file)
    if not path.is_file():
        raise FileNotFoundError(f"factory file not found: {path} (expected path/to/file.py:function)")
    mod_spec = importlib.util.spec_from_file_location(f"convlens_user_{path.stem}", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    fn = getattr(module, func, None)
    if not callable(fn):
        names = [n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_")]
        raise ValueError(f"{path} has no callable {func!r}; callables there: {names}")
    net = fn()
    if not isinstance(net, nn.Module):
        raise TypeError(f"{spec} returned {type(net).__name__}, expected a torch.nn.Module")
    return net, path.stem


def _default_spec_for(net: nn.Module) -> InputSpec:
    # the first 4-D weight is the first convolution's (works for TorchScript modules too)
    first = next((p for n, p in net.named_parameters() if p.ndim == 4 and n.endswith("weight")), None)
    channels = int(first.shape[1]) if first is not None else 3
    return PRESETS["unit-gray"] if channels == 1 else PRESETS["unit-rgb"]


def _read_card(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        card = yaml.safe_load(text)
    else:
        card = json.loads(text)
    if not isinstance(card, dict) or "arch" not in card:
        raise ValueError(f"{path}: a model card needs at least an 'arch' key (and usually 'weights')")
    base = path.parent
    if card.get("weights"):
        card["weights"] = str((base / card["weights"]) if not Path(card["weights"]).is_absolute() else card["weights"])
    if isinstance(card.get("classes"), str):
        c = Path(card["classes"])
        card["classes"] = str(c if c.is_absolute() else base / c)
    return card


def load_model(
    spec: str | Path | nn.Module | Model,
    *,
    weights: str | Path | None = None,
    input_spec: str | dict | InputSpec | None = None,
    classes: str | Path | list[str] | None = None,
    trust_pickle: bool = False,
    device: str | torch.device = "cpu",
) -> Model:
    """Load a network and the input spec it expects; see the module docstring for ``spec``.

    Examples
    --------
    >>> m = load_model("lenet-digits")                                     # doctest: +SKIP
    >>> m = load_model("squeezenet1_1", weights="squeezenet1_1-caffe.pth",
    ...                input_spec="caffe", classes="imagenet_classes.txt")  # doctest: +SKIP
    """
    meta: dict = {}
    if isinstance(spec, Model):
        model = spec
    elif isinstance(spec, nn.Module):
        model = Model(spec, _default_spec_for(spec), type(spec).__name__)
    else:
        model = _load_from_string(str(spec), weights, trust_pickle, meta)
    spec_obj = resolve_input_spec(input_spec, model.spec)
    if classes is not None:
        names = read_class_names(classes) if isinstance(classes, (str, Path)) else tuple(classes)
        spec_obj = spec_obj.with_classes(names)
    model.spec = spec_obj
    model.meta.update(meta)
    model.net.to(device)
    model.net.eval()
    return model


def _load_from_string(spec: str, weights, trust_pickle: bool, meta: dict) -> Model:
    if spec in BUILTIN_MODELS:
        card = WEIGHTS_DIR / spec / "model.json"
        return _load_from_string(str(card), None, False, meta)
    if spec.startswith("torchvision:"):
        return _load_torchvision(spec.split(":", 1)[1], weights, trust_pickle)
    if ".py:" in spec:
        net, name = _load_factory(spec)
        if weights:
            load_weights(net, read_state_dict(weights, trust_pickle=trust_pickle), str(weights))
        return Model(net, _default_spec_for(net), name)
    if parse_arch(spec) is not None:
        net, ispec, name = build_architecture(spec)
        if weights:
            load_weights(net, read_state_dict(weights, trust_pickle=trust_pickle), str(weights))
            meta["weights"] = str(weights)
        return Model(net, ispec, name)
    path = Path(spec)
    if not path.exists():
        from convlens.nets import ARCHITECTURES

        raise FileNotFoundError(
            f"model {spec!r} is neither a file nor a known name. Built-in models: "
            f"{', '.join(BUILTIN_MODELS)}; architectures: {', '.join(ARCHITECTURES)}; "
            "or give a state-dict/TorchScript file, a model card (.yaml), or file.py:function"
        )
    if path.suffix in (".yaml", ".yml", ".json"):
        card = _read_card(path)
        model = _load_from_string(card["arch"], card.get("weights"), trust_pickle, meta)
        if card.get("input_spec") is not None:
            model.spec = resolve_input_spec(card["input_spec"], model.spec)
        if card.get("classes") is not None:
            c = card["classes"]
            model.spec = model.spec.with_classes(read_class_names(c) if isinstance(c, str) else c)
        model.name = card.get("name", model.name)
        model.meta.update({k: v for k, v in card.items() if k not in ("classes",)})
        return model
    if _is_torchscript(path):
        net = torch.jit.load(str(path), map_location="cpu")
        return Model(net, _default_spec_for(net), path.stem)
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():  # a snapshot of `convlens train`
        card = json.loads(sidecar.read_text())
        if "arch" in card:
            net, ispec, _ = build_architecture(card["arch"])
            load_weights(net, read_state_dict(path, trust_pickle=trust_pickle), str(path))
            if card.get("input_spec"):
                ispec = InputSpec.from_dict(card["input_spec"])
            meta.update(card)
            return Model(net, ispec, path.stem)
    state = read_state_dict(path, trust_pickle=trust_pickle)
    if isinstance(state, nn.Module):
        return Model(state, _default_spec_for(state), path.stem)
    raise ValueError(
        f"{path} holds a state dict, which needs its architecture: give one, e.g. "
        f"`convlens layers vgg16 --weights {path}` or load_model('vgg16', weights='{path}')"
    )


def _load_torchvision(name: str, weights, trust_pickle: bool) -> Model:
    try:
        import torchvision
    except Exception as e:  # ImportError, or the CUDA wheel failing beside a CPU torch
        raise ImportError(
            f"torchvision:{name} needs torchvision, which could not be imported ({e}). Use the "
            "built-in vgg16/alexnet/squeezenet1_1, which load torchvision state dicts unchanged."
        ) from e
    try:
        net = torchvision.models.get_model(name, weights=None)
    except ValueError as e:
        raise ValueError(f"torchvision has no model {name!r}: {e}") from e
    if weights:
        load_weights(net, read_state_dict(weights, trust_pickle=trust_pickle), str(weights))
    return Model(net, replace(PRESETS["imagenet"]), f"torchvision:{name}")

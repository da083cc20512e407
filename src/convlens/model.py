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
import pickle
import warnings
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
    spec's normalisation first (one pass, as given); ``model.net`` is the untouched module, whose layer names are the
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
        """One differentiable forward pass over ``x`` as given (no chunking): the spec's
        normalisation, then the network. For many inputs use :func:`convlens.runner.outputs` or
        :class:`convlens.runner.Runner`, which batch to the memory budget."""
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
            h.update(v.detach().cpu().contiguous().cpu().numpy().tobytes())
        h.update(json.dumps(self.spec.to_dict(), sort_keys=True).encode())
        return h.hexdigest()[:16]


# -- reading weights ---------------------------------------------------------------------------
def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 2)[1:2] == ["code"] for n in z.namelist() if "/" in n)


def _classify_weights_file(p: Path) -> str:
    """What a weights file is, from its bytes alone (nothing is unpickled): ``"zip"`` (torch's
    format), ``"pickle"`` (torch's legacy format or a plain pickle), or a reason it is unusable:
    empty, truncated, not a weights file."""
    size = p.stat().st_size
    if size == 0:
        return f"{p} is empty (0 bytes): an interrupted download or copy? Fetch the file again"
    with p.open("rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(p) as z:
                bad = z.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            return f"{p} is truncated or damaged ({e}): fetch or save it again"
        if bad is not None:
            return f"{p} is damaged (entry {bad} fails its checksum): fetch or save it again"
        return "zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"  # a pickle protocol header (torch's legacy format starts with one)
    return (f"{p} is not a weights file (corrupt, or another format: it starts with bytes "
            f"{head.hex(' ')}); convlens reads torch .pt/.pth, .safetensors and .npz state dicts")


def read_state_dict(path: str | Path, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.pt``/``.pth``/``.safetensors``/``.npz`` without running code.

    The file is classified from its bytes first (empty, truncated, corrupt, a plain state dict
    or a full pickle) so that only a real pickle leads to the ``trust_pickle`` question."""
    p = Path(path)
    if p.is_dir():
        raise FileNotFoundError(f"weights {p} is a folder, not a file: give the .pt/.pth/.safetensors/.npz inside it")
    if not p.is_file():
        raise FileNotFoundError(f"weights file not found: {p}")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"{p} is not a readable safetensors file ({e}): fetch or save it again") from None
    if p.suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k: torch.from_numpy(z[k]) for k in z.files}
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise ValueError(f"{p} is not a readable .npz of arrays ({e}): fetch or save it again") from None
    kind = _classify_weights_file(p)
    if kind not in ("zip", "pickle"):
        raise ValueError(kind)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # the file holds objects other than tensors
        if not trust_pickle:
            raise ValueError(
                f"{p} is not a plain state dict: it is a full pickle, and loading it would run code "
                "stored in the file. If you trust where it came from, pass --trust-pickle "
                "(trust_pickle=True in Python); better, save model.state_dict() and load it with "
                "its architecture."
            ) from None
        try:
            obj = torch.load(p, map_location="cpu", weights_only=False)
        except Exception as e2:  # the pickle itself fails: a missing class, damaged data
            raise ValueError(f"{p} is a pickle that cannot be loaded ({type(e2).__name__}: {e2}); "
                             "re-save it as a state dict (torch.save(model.state_dict(), ...))") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ValueError(f"{p} is damaged or truncated ({str(e).splitlines()[0]}): fetch or save it again") from None
    if isinstance(obj, nn.Module):
        return obj  # type: ignore[return-value]  # handled by the caller
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            if all(k.startswith("module.") for k in obj):
                obj = {k[len("module."):]: v for k, v in obj.items()}
            return obj
    raise ValueError(f"{p} holds a {type(obj).__name__}, not a state dict of tensors")


def check_finite(net: nn.Module, source: str) -> None:
    """NaN or infinite parameters/buffers are an error naming the tensors (a diverged training
    run or a damaged file), found at load instead of as "dead units" later."""
    bad = [k for k, v in net.state_dict().items()
           if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"the weights in {source} contain NaN or infinite values (in "
                         f"{', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}): the training that "
                         "wrote them diverged or the file is damaged; use an earlier snapshot")


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
    check_finite(net, source)


# -- the loaders ---------------------------------------------------------------------------------
def _load_factory(spec: str) -> tuple[nn.Module, str]:
    """Run ``path/to/file.py:function`` and return its module and a name. Errors inside the
    user's file (a SyntaxError, an exception) are reported as one line naming the file."""
    file, _, func = spec.rpartition(":")
    path = Path(file)
    if not path.is_file():
        raise FileNotFoundError(f"factory file not found: {path} (expected path/to/file.py:function)")
    mod_spec = importlib.util.spec_from_file_location(f"convlens_user_{path.stem}", path)
    module = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ValueError(f"{path} has a syntax error at line {e.lineno}: {e.msg}; fix the file") from None
    except Exception as e:  # anything the user's module raises on import
        raise ValueError(f"running {path} failed: {type(e).__name__}: {e}; fix the file") from None
    fn = getattr(module, func, None)
    if not callable(fn):
        names = [n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_")]
        raise ValueError(f"{path} has no callable {func!r}; callables there: {names}")
    try:
        net = fn()
    except Exception as e:
        raise ValueError(f"{spec}() raised {type(e).__name__}: {e}; fix the factory") from None
    if not isinstance(net, nn.Module):
        raise TypeError(f"{spec} returned {type(net).__name__}, expected a torch.nn.Module")
    return net, path.stem


def factory_reference(spec: str, base: Path | None = None) -> str:
    """``file.py:function`` with the file made absolute (relative to ``base``, else the current
    folder): what a card or snapshot stores so the model can be rebuilt."""
    file, _, func = spec.rpartition(":")
    path = Path(file)
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return f"{path.resolve()}:{func}"


def _check_factory_trust(ref: str, where: Path, trust_pickle: bool) -> None:
    if not trust_pickle:
        raise ValueError(
            f"{where} names the factory {ref}, and building the model would run that file's "
            "code. If you trust it, pass --trust-pickle (trust_pickle=True in Python), as for a "
            "full pickle; or load the factory yourself: give FILE.py:FUNCTION as the model")


def _default_spec_for(net: nn.Module) -> InputSpec:
    # the first 4-D weight is the first convolution's (works for TorchScript modules too)
    first = next((p for n, p in net.named_parameters() if p.ndim == 4 and n.endswith("weight")), None)
    channels = int(first.shape[1]) if first is not None else 3
    return PRESETS["unit-gray"] if channels == 1 else PRESETS["unit-rgb"]


# keys a user writes in a model card, and those `convlens train` adds to model.json / snapshots
CARD_KEYS = ("arch", "weights", "input_spec", "classes", "name", "description")
WRITTEN_CARD_KEYS = ("train", "val_accuracy", "step", "seed", "history", "snapshots", "dataset")


def _read_card(path: Path) -> dict:
    """Parse and validate a model card: unknown keys are errors naming the closest known key
    (a misspelt ``weight:`` must not load random weights)."""
    import difflib

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"model card {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            card = yaml.safe_load(text)
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            at = f" at line {where.line + 1}" if where is not None else ""
            raise ValueError(f"model card {path} is not valid YAML{at}: "
                             f"{getattr(e, 'problem', None) or e}; write key: value lines") from None
    else:
        try:
            card = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"model card {path} is not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(card, dict):
        raise ValueError(f"model card {path} must be a mapping of keys ({', '.join(CARD_KEYS)}); "
                         f"got {type(card).__name__}")
    known = CARD_KEYS + WRITTEN_CARD_KEYS
    for key in card:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"model card {path}: unknown key {key!r}; {hint}keys are {', '.join(CARD_KEYS)}")
    if not card.get("arch"):
        if "arch" in card:  # written by a convlens before 0.1 for a model from a factory
            raise ValueError(
                f"{path} has no architecture (arch: null): the model was trained from a factory "
                "file that was not recorded. Load it as FILE.py:FUNCTION --weights "
                f"{path.with_suffix('.pt')}, or retrain with this version, which records the factory")
        raise ValueError(f"{path}: a model card needs at least an 'arch' key (and usually 'weights')")
    if not isinstance(card["arch"], str):
        raise ValueError(f"{path}: 'arch' must be a name such as squeezenet1_1, got {card['arch']!r}")
    base = path.parent
    if card.get("weights"):
        card["weights"] = str((base / card["weights"]) if not Path(card["weights"]).is_absolute() else card["weights"])
    if isinstance(card.get("classes"), str):
        c = Path(card["classes"])
        card["classes"] = str(c if c.is_absolute() else base / c)
    if ".py:" in card["arch"]:
        card["arch"] = factory_reference(card["arch"], base)
    return card


def load_model(
    spec: str | Path | nn.Module | Model,
    *,
    weights: str | Path | None = None,
    input_spec: str | dict | InputSpec | None = None,
    classes: str | Path | list[str] | None = None,
    trust_pickle: bool = False,
    device: str | torch.device | None = None,
) -> Model:
    """Load a network and the input spec it expects; see the module docstring for ``spec``.

    ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"auto"``; the network is moved
    there and every convlens method then runs where its parameters are. ``None`` (the default)
    means ``"auto"`` (CUDA when available) for a network built here, and leaves a module or
    :class:`Model` you pass where it is.

    Examples
    --------
    >>> m = load_model("lenet-digits")                                     # doctest: +SKIP
    >>> m = load_model("squeezenet1_1", weights="squeezenet1_1-caffe.pth",
    ...                input_spec="caffe", classes="imagenet_classes.txt")  # doctest: +SKIP
    """
    from convlens.devices import resolve_device

    given = isinstance(spec, (Model, nn.Module))
    target = None if device is None and given else resolve_device(device)  # fail before loading
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
        meta["classes_source"] = str(classes) if isinstance(classes, (str, Path)) else "list"
    model.spec = spec_obj
    model.meta.update(meta)
    if target is not None:
        model.net.to(target)
    model.net.eval()
    _check_fit(model)
    if model.meta.get("untrained"):
        warnings.warn(untrained_message(model), UntrainedWarning, stacklevel=2)
    return model


class UntrainedWarning(UserWarning):
    """A built-in ImageNet architecture was loaded without weights."""


def untrained_message(model: Model) -> str:
    return (f"{model.name} has random weights (no weights were given): everything computed from "
            "it describes an untrained network. Pass --weights FILE (weights= in Python).")


def _first_conv_channels(net: nn.Module) -> int | None:
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return None


def _check_fit(model: Model) -> None:
    """The input spec and the class names must fit the network: checked at load, so a mismatch
    is one message here, not a shape error inside an analysis (or names mixed with indices)."""
    spec = model.spec
    check_finite(model.net, model.meta.get("weights") or model.name)  # any source: module, TorchScript, file
    want = _first_conv_channels(model.net)
    if want is not None and want != spec.channels:
        preset = "unit-gray" if want == 1 else "unit-rgb"
        raise ValueError(f"the input spec gives {spec.channels}-channel images but {model.name}'s first "
                         f"convolution takes {want} channel(s): use --input-spec {preset} or a spec "
                         f"with channels: {want}")
    names = spec.class_names
    if not names:
        return
    try:
        with torch.no_grad():
            out = model.net(spec.normalize(model.example_input(1)))
    except RuntimeError as e:
        raise ValueError(f"{model.name} cannot run on the input spec's {spec.size[0]}x{spec.size[1]} "
                         f"images ({str(e).splitlines()[0]}); check --input-spec") from None
    if out.ndim == 2 and out.shape[1] != len(names):
        src = model.meta.get("classes_source") or "the class names"
        raise ValueError(f"{src} names {len(names)} classes but {model.name} has {out.shape[1]} outputs; "
                         "give exactly one name per output (one per line, in output order)")


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
            meta["weights"] = str(weights)
        meta["arch"] = factory_reference(spec)  # so `convlens train` can record it
        return Model(net, _default_spec_for(net), name)
    if parse_arch(spec) is not None:
        net, ispec, name = build_architecture(spec)
        if weights:
            load_weights(net, read_state_dict(weights, trust_pickle=trust_pickle), str(weights))
            meta["weights"] = str(weights)
        elif ispec == PRESETS["imagenet"]:  # an ImageNet architecture: useless untrained
            meta["untrained"] = True
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
        return _load_card(path, trust_pickle, meta)
    if _is_torchscript(path):
        net = torch.jit.load(str(path), map_location="cpu")
        return Model(net, _default_spec_for(net), path.stem)
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():  # a snapshot of `convlens train`
        model = _load_snapshot(path, sidecar, trust_pickle, meta)
        if model is not None:
            return model
    state = read_state_dict(path, trust_pickle=trust_pickle)
    if isinstance(state, nn.Module):
        return Model(state, _default_spec_for(state), path.stem)
    raise ValueError(
        f"{path} holds a state dict, which needs its architecture: give one, e.g. "
        f"`convlens layers vgg16 --weights {path}` or load_model('vgg16', weights='{path}')"
    )


def _load_card(path: Path, trust_pickle: bool, meta: dict) -> Model:
    card = _read_card(path)
    if ".py:" in card["arch"]:
        _check_factory_trust(card["arch"], path, trust_pickle)
    model = _load_from_string(card["arch"], card.get("weights"), trust_pickle, meta)
    if card.get("input_spec") is not None:
        model.spec = resolve_input_spec(card["input_spec"], model.spec)
    if card.get("classes") is not None:
        c = card["classes"]
        model.spec = model.spec.with_classes(read_class_names(c) if isinstance(c, str) else c)
    model.name = card.get("name", model.name)
    model.meta.update({k: v for k, v in card.items() if k not in ("classes",)})
    return model


def _load_snapshot(path: Path, sidecar: Path, trust_pickle: bool, meta: dict) -> Model | None:
    """A state dict whose JSON side-car names its architecture (None: the JSON names none)."""
    card = json.loads(sidecar.read_text())
    if "arch" not in card:
        return None
    if not card["arch"]:
        raise ValueError(
            f"{sidecar} records no architecture (arch: null): the network came from a factory "
            "file that was not recorded. Load it as FILE.py:FUNCTION --weights "
            f"{path}, or retrain with this version, which records the factory")
    if ".py:" in str(card["arch"]):
        _check_factory_trust(card["arch"], sidecar, trust_pickle)
        net, _ = _load_factory(card["arch"])
        ispec = _default_spec_for(net)
    else:
        net, ispec, _ = build_architecture(card["arch"])
    load_weights(net, read_state_dict(path, trust_pickle=trust_pickle), str(path))
    if card.get("input_spec"):
        ispec = InputSpec.from_dict(card["input_spec"])
    meta.update(card)
    return Model(net, ispec, path.stem)


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

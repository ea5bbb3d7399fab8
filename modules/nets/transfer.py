"""Transfer learning: a pretrained timm or torchvision network whose last Linear layer becomes a new head for the
data's classes. Weights: the library's own (downloaded once), a local file (for machines offline), or none. The
preprocessing those weights expect is read from the library's metadata, never by loading them."""

import difflib
import hashlib
import importlib
from pathlib import Path
from typing import Any, Literal

import timm
import torch
from torch import Tensor, nn
from torchvision import models

Library = Literal["auto", "timm", "torchvision"]
WEIGHT_FILES = (".safetensors", ".pth", ".pt", ".bin")
MEMO_BYTES = 2 << 30  # cache_features stops remembering past this (an augmented run never repeats an image)


class WeightsUnavailableError(RuntimeError):
    """The network or its weights cannot be had as asked: an unknown name, a file that is missing or does not fit,
    or a download that failed. The message names what was given and what to give instead."""


def unavailable(option: str, given: str, names: list[str], problem: str) -> WeightsUnavailableError:
    """``given`` is not among ``names``: the error, with the closest of them (all of them, where they are few)."""
    names = sorted(set(names))
    close = difflib.get_close_matches(given, names, n=5, cutoff=0.5)
    hint = f"closest: {', '.join(close)}" if close else f"choose from {', '.join(names)}" if len(names) <= 10 else "none close"
    return WeightsUnavailableError(f"--model.net.init_args.{option} {given}: {problem} ({hint}).")


def torchvision_names() -> list[str]:
    return models.list_models(module=models)  # the classification networks only


def choose_library(arch: str, library: Library) -> str:
    """torchvision keeps its own names (resnet18 is torchvision's, as the course configs expect); every other timm
    name is timm's; ``library`` picks the other where both have a name."""
    if library == "torchvision" or (library == "auto" and arch in torchvision_names()):
        if arch not in torchvision_names():
            raise unavailable("arch", arch, torchvision_names(), "not a torchvision network")
        return "torchvision"
    if not timm.is_model(arch):
        names, which = (timm.list_models(), "timm") if library == "timm" else (timm.list_models() + torchvision_names(), "timm or torchvision")
        raise unavailable("arch", arch, names, f"not a {which} network")
    return "timm"


def is_file(weights: str) -> bool:
    return weights.endswith(WEIGHT_FILES) or "/" in weights or weights.startswith(("~", "."))


def timm_name(arch: str, weights: str | None) -> str:
    """``arch`` with the pretrained tag that ``weights`` names (timm's "arch.tag"); the default tag otherwise."""
    if weights is None or weights == "DEFAULT" or is_file(weights):
        return arch
    tags = [name.split(".", 1)[1] for name in timm.list_pretrained(f"{arch.split('.')[0]}.*")]
    if weights not in tags:
        raise unavailable("weights", weights, ["DEFAULT", *tags], f"not a file path, null, or a name of timm's {arch} weights")
    return f"{arch.split('.')[0]}.{weights}"


def torchvision_weights(arch: str, weights: str | None) -> Any:
    """The torchvision weights enum member ``weights`` names; the default where it names none or a file."""
    enum = models.get_model_weights(arch)
    if weights is None or weights == "DEFAULT" or is_file(weights):
        return enum.DEFAULT
    if weights not in enum.__members__:
        names = ["DEFAULT", *enum.__members__]
        raise unavailable("weights", weights, names, f"not a file path, null, or a name of torchvision's {arch} weights")
    return enum[weights]


def timm_facts(arch: str, weights: str | None) -> dict | None:
    cfg = timm.models.get_pretrained_cfg(timm_name(arch, weights))
    if cfg is None:
        return None
    return {"image_size": cfg.input_size[-1], "crop_pct": cfg.crop_pct, "interpolation": cfg.interpolation,
            "mean": list(cfg.mean), "std": list(cfg.std), "source": f"timm's pretrained_cfg of {cfg.architecture}.{cfg.tag}"}


def torchvision_facts(arch: str, weights: str | None) -> dict:
    chosen = torchvision_weights(arch, weights)
    preset = chosen.transforms()  # ImageClassification: sizes, interpolation, mean and std, no weights
    crop, resize = preset.crop_size[0], preset.resize_size[0]
    return {"image_size": crop, "crop_pct": crop / resize, "interpolation": preset.interpolation.value,
            "mean": list(preset.mean), "std": list(preset.std), "source": f"torchvision's {chosen}.transforms()"}


PREPROCESSING = {"timm": timm_facts, "torchvision": torchvision_facts}


def timm_network(arch: str, weights: str | None) -> nn.Module:
    name = timm_name(arch, weights)
    if weights is None or is_file(weights):
        return timm.create_model(name, pretrained=False)
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):  # timm would start from random weights, and warn
        raise WeightsUnavailableError(f"timm has no pretrained weights for {name}: give a weights file "
                                      "(--model.net.init_args.weights PATH) or train from scratch (null).")
    try:
        return timm.create_model(name, pretrained=True)
    except Exception as exc:  # no network (OSError, httpx's errors), a hub that moved...
        raise WeightsUnavailableError(
            f"cannot download timm's weights for {name} ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
            "Offline, give a local file: --model.net.init_args.weights PATH (.safetensors, .pth or .bin), or train "
            "from scratch with --model.net.init_args.weights null."
        ) from exc


def torchvision_network(arch: str, weights: str | None) -> nn.Module:
    if weights is None or is_file(weights):
        return models.get_model(arch, weights=None)
    chosen = torchvision_weights(arch, weights)
    try:
        return models.get_model(arch, weights=chosen)
    except OSError as exc:  # URLError and socket errors: no network, no cached file
        target = Path(torch.hub.get_dir()) / "checkpoints" / Path(chosen.url).name
        raise WeightsUnavailableError(
            f"cannot download the {arch} weights {chosen} ({exc}). Place the file from {chosen.url} at "
            f"{target} (set TORCH_HOME to move that folder), or give a local file with --model.net.init_args.weights "
            "PATH, or train from scratch with --model.net.init_args.weights null."
        ) from exc


NETWORKS = {"timm": timm_network, "torchvision": torchvision_network}


def head_of(net: nn.Module, library: str) -> str:
    """The dotted name of the layer that classifies: timm's classifier, torchvision's last Linear layer."""
    head = net.get_classifier() if library == "timm" else None
    is_head = (lambda module: module is head) if head is not None else (lambda module: isinstance(module, nn.Linear))
    names = [name for name, module in net.named_modules() if is_head(module)]
    if not names or not isinstance(net.get_submodule(names[-1]), nn.Linear):
        raise WeightsUnavailableError(f"{type(net).__name__} does not end in a Linear layer, which TransferNet replaces: "
                                      "choose another model.net.init_args.arch.")
    return names[-1]


def load_file(net: nn.Module, path: str, arch: str, head: str) -> dict[str, Tensor]:
    """A local weights file into ``net``: every key and shape must fit, but the head's (another class count), which
    is returned, for a new head of the same class count."""
    file = Path(path).expanduser()
    if not file.is_file():
        names = [str(p) for p in file.parent.iterdir() if p.suffix in WEIGHT_FILES] if file.parent.is_dir() else []
        if names:
            raise unavailable("weights", path, names, "no such file")
        raise WeightsUnavailableError(f"--model.net.init_args.weights {path}: no such file, and no weights file beside it. Give "
                                      "a .safetensors, .pth or .bin file, DEFAULT (the library's, downloaded) or null.")
    try:
        state = timm.models.load_state_dict(str(file))  # .safetensors, or torch's format without pickled code
    except Exception as exc:
        raise WeightsUnavailableError(f"{path}: not a readable weights file ({type(exc).__name__}: {exc}).") from exc
    expected = net.state_dict()

    def ours(key: str) -> bool:  # the head's keys may differ; BatchNorm's step counters say nothing of fit
        return not key.startswith(f"{head}.") and not key.endswith("num_batches_tracked")

    missing = [key for key in expected if key not in state and ours(key)]
    extra = sorted(key for key in state if key not in expected and ours(key))
    shapes = [f"{key} {tuple(state[key].shape)} (expected {tuple(value.shape)})" for key, value in expected.items()
              if key in state and ours(key) and state[key].shape != value.shape]
    if missing or extra or shapes:
        found = [f"{what} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for what, keys in (("missing", missing), ("unexpected", extra), ("shape", shapes)) if keys]
        raise WeightsUnavailableError(f"{path} does not fit {arch}: {'; '.join(found)}. Give weights of this "
                                      "architecture, or the architecture of these weights (--model.net.init_args.arch).")
    net.load_state_dict({k: v for k, v in state.items() if k in expected and v.shape == expected[k].shape}, strict=False)
    return {key[len(head) + 1:]: value for key, value in state.items() if key.startswith(f"{head}.")}


def image_keys(x: Tensor) -> list[bytes]:
    """A digest of each image's bytes, read in place: a channels-last batch holds each image as one block."""
    x = x.detach().cpu()
    rows = (x.permute(0, 2, 3, 1) if x.is_contiguous(memory_format=torch.channels_last) else x.contiguous()).reshape(len(x), -1)
    return [hashlib.sha256(row).digest() for row in rows.view(torch.uint8).numpy()]  # sha256: hardware-fast on x86


class TransferNet(nn.Module):
    """``arch`` from torchvision (resnet18, vgg16, ...) or timm (tf_efficientnet_lite0, convnext_tiny, any of
    ``timm.list_models()``), its last Linear layer replaced by a new ``head`` for ``num_classes``.

    ``weights``: "DEFAULT" (the library's, downloaded once), another name of the library's (torchvision's
    IMAGENET1K_V1, timm's tag such as a1_in1k), a local file (.safetensors, .pth, .bin) for machines offline, or
    null (from scratch). ``library``: auto takes torchvision's names as torchvision's, others as timm's; timm or
    torchvision picks one where both have the name. ``backbone`` (all but the head) is what BackboneFinetuning
    freezes. ``cache_features``: while the backbone is frozen and in eval mode, remember its output per image,
    so a head-only phase runs the backbone once per image rather than once per epoch (useless with augmentation).
    """

    def __init__(self, num_classes: int, arch: str = "resnet18", weights: str | None = "DEFAULT",
                 library: Library = "auto", cache_features: bool = False) -> None:
        super().__init__()
        if str(weights).lower() in ("none", "null"):  # jsonargparse hands a command-line null over a YAML string as "None"
            weights = None
        chosen = choose_library(arch, library)
        net = NETWORKS[chosen](arch, weights)
        head = head_of(net, chosen)
        trained_head = load_file(net, weights, arch, head) if weights is not None and is_file(weights) else {}
        old = net.get_submodule(head)
        new = old if old.out_features == num_classes else nn.Linear(old.in_features, num_classes)
        if all(trained_head.get(k, torch.empty(0)).shape == v.shape for k, v in new.state_dict().items()):
            new.load_state_dict(trained_head)  # a file whose head has the data's classes: that head
        net.set_submodule(head, nn.Identity())
        self.backbone, self.head = net, new
        self.cache_features = cache_features
        self.memo: dict[bytes, Tensor] = {}
        self.register_load_state_dict_pre_hook(self._forget_on_new_weights)

    @staticmethod
    def preprocessing(arch: str = "resnet18", weights: str | None = "DEFAULT", library: Library = "auto") -> dict | None:
        """What the weights expect of an image (size, crop fraction, interpolation, mean, std) and where that is
        said: the named weights', else the architecture's default weights' (a file or null included)."""
        weights = None if str(weights).lower() in ("none", "null") else weights
        chosen = choose_library(arch, library)
        return PREPROCESSING[chosen](arch, weights)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def features(self, x: Tensor) -> Tensor:
        """The backbone's output; with ``cache_features``, remembered per image while the backbone cannot change."""
        trains = any(m.training for m in self.backbone.modules()) or any(p.requires_grad for p in self.backbone.parameters())
        if trains or not self.cache_features:
            self.memo.clear()  # what was remembered would be stale once the backbone trains
            return self.backbone(x)
        if torch.jit.is_tracing() or torch.compiler.is_compiling():  # a graph of the network, not of this bookkeeping
            return self.backbone(x)
        keys = image_keys(x)
        new = [i for i, key in enumerate(keys) if key not in self.memo]
        found = dict(zip([keys[i] for i in new], self.backbone(x if len(new) == len(x) else x[new]))) if new else {}
        if found and len(self.memo) * (size := next(iter(found.values()))).numel() * size.element_size() < MEMO_BYTES:
            self.memo.update(found)
        return torch.stack([found[key] if key in found else self.memo[key] for key in keys])

    def _forget_on_new_weights(self, module: nn.Module, state: dict, prefix: str, *args: Any) -> None:
        """A checkpoint loaded into the network: remembered features stay only if its backbone is the same."""
        own = self.backbone.state_dict(prefix=f"{prefix}backbone.")
        if any(key not in state or not torch.equal(state[key].to(value.device), value) for key, value in own.items()):
            self.memo.clear()


def pretrained_preprocessing(net: Any) -> dict | None:
    """cli.py's link from model.net to the data: a TransferNet's ``preprocessing`` for the parsed network (its
    class_path and init_args); None for any other network, or a name the network itself will refuse when built."""
    class_path = str(getattr(net, "class_path", ""))
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name) if module else None
    except ImportError:
        return None
    if not (isinstance(cls, type) and issubclass(cls, TransferNet)):
        return None
    given = getattr(net, "init_args", None)
    given = given.as_dict() if hasattr(given, "as_dict") else dict(given or {})
    settings = {key: value for key, value in given.items() if key in ("arch", "weights", "library")}
    try:
        return cls.preprocessing(**settings)
    except WeightsUnavailableError:
        return None

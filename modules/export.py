"""Leaving the checkpoint: the trained network as one self-contained file (ONNX or TorchScript) that takes uint8 images
(N, C, H, W) at the training size and returns class probabilities. The float conversion and the data's transforms
(its normalisation) are inside the graph; the class names, input shape, how a photo is resized and the project's
version travel in the file's metadata (ONNX ``metadata_props``, TorchScript ``_extra_files``), so an app, the server
and benchmarks/export_parity.py need nothing else."""

import json
import warnings
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import Tensor, nn

from modules.classifier import ConfigError, averaged_logits

Format = Literal["onnx", "torchscript"]
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}  # format: file suffix; a served file's format is read from its suffix
METADATA = "metadata.json"  # TorchScript's extra file holding the facts
TOLERANCE = 1e-4  # the largest probability difference an exported file may show against the checkpoint in PyTorch


@contextmanager
def quiet_export():
    """Without the notices torch gives at every export: TorchScript, and the ONNX exporter built on it, announce their
    deprecation (both are still what apps load; the newer exporter needs onnxscript); and the trace says that it keeps
    the normalisation's mean and std as constants, which they are."""
    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning, torch.jit.TracerWarning):
            warnings.simplefilter("ignore", category)
        # A mirror view (model.tta) is a Slice with step -1, which the exporter computes at run time rather than folds.
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        yield


class Packaged(nn.Module):
    """What an exported file computes: uint8 images in, class probabilities out."""

    def __init__(self, net: nn.Module, transforms: nn.Module, channels_last: bool = False, tta: str = "none") -> None:
        super().__init__()
        self.net, self.transforms, self.channels_last, self.tta = net, transforms, channels_last, tta

    def run(self, x: Tensor) -> Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last) if self.channels_last else x)

    def forward(self, images: Tensor) -> Tensor:
        x = self.transforms(images.float() / 255)  # as the data module turns a uint8 batch into network input
        return averaged_logits(self.run, x, self.tta).float().softmax(dim=1)  # the checkpoint's test-time augmentation


def project_version() -> str:
    try:
        return version("lightning-classifiers")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"


def packaged(model: nn.Module, datamodule: Any) -> tuple[Packaged, dict[str, Any]]:
    """The checkpoint's network with the data's transforms, on the CPU in float32 and eval mode, and the facts that
    describe it. A TransferNet's feature memo is switched off: a server must not remember every photo it is sent."""
    net = model.net.float().cpu().eval()
    for module in net.modules():
        if hasattr(module, "cache_features"):
            module.cache_features = False
    tta = model.hparams.get("tta", "none")
    wrapped = Packaged(net, datamodule.transforms.cpu().eval(), bool(model.hparams.get("channels_last")), tta).eval()
    facts = {
        "class_names": list(model.class_names),
        "input_shape": list(datamodule.image_shape),  # (C, H, W) of the uint8 images the graph takes
        "input": "uint8 images (N, C, H, W), 0-255, RGB or grayscale as trained",
        "output": "class probabilities (N, classes), in the order of class_names",
        "crop_pct": datamodule.resize.crop_pct,  # a photo's shorter side to input_size / crop_pct, then the centre crop
        "interpolation": datamodule.resize.interpolation,
        "tta": tta,  # the views whose logits the graph averages (modules/classifier.py tta_views)
        "project_version": project_version(),
    }
    return wrapped, facts


def write_onnx(module: nn.Module, example: Tensor, path: Path, facts: dict[str, Any]) -> None:
    import onnx

    with quiet_export():
        torch.onnx.export(module, (example,), str(path), dynamo=False, input_names=["images"],
                          output_names=["probabilities"], opset_version=17,
                          dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}})
    graph = onnx.load(str(path))
    for key, value in facts.items():
        graph.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(graph, str(path))


def write_torchscript(module: nn.Module, example: Tensor, path: Path, facts: dict[str, Any]) -> None:
    with quiet_export():
        traced = torch.jit.trace(module, example, check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={METADATA: json.dumps(facts)})


WRITERS: dict[str, Callable[[nn.Module, Tensor, Path, dict], None]] = {"onnx": write_onnx, "torchscript": write_torchscript}


def load_onnx(path: Path) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, Any]]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as many threads as PyTorch's, so their timings compare
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    facts = {key: json.loads(value) for key, value in session.get_modelmeta().custom_metadata_map.items()}
    return (lambda images: session.run(None, {"images": images})[0]), facts


def load_torchscript(path: Path) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, Any]]:
    extra = {METADATA: ""}
    with quiet_export():
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)

    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(images)).numpy()

    return run, json.loads(extra[METADATA] or "{}")


LOADERS = {".onnx": load_onnx, ".pt": load_torchscript}


def is_exported(path: str | None) -> bool:
    return path is not None and Path(path).suffix in LOADERS


def load_exported(path: str) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, Any]]:
    """An exported file as a function of uint8 images (numpy, N, C, H, W) to probabilities, and its facts."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--ckpt_path {path} does not exist. Give a .ckpt file, best, last, or a file `export` wrote.")
    try:
        run, facts = LOADERS[file.suffix](file)
    except Exception as exc:  # a file cut short, or another kind of file under that suffix
        raise ConfigError(f"{path}: not a readable {file.suffix} model ({type(exc).__name__}: {str(exc)[:200]}). "
                          "Export it again: python cli.py export --config CONFIG --ckpt_path CKPT.") from exc
    if "class_names" not in facts:
        raise ConfigError(f"{path}: its metadata holds no class names; it was not written by `python cli.py export`.")
    return run, facts


def export_path(ckpt_path: str, fmt: str, output: str | None) -> Path:
    """``output``, else beside the run's checkpoints: version_N/<checkpoint name>.onnx."""
    if output:
        return Path(output).expanduser()
    checkpoint = Path(ckpt_path)
    folder = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    return folder / (checkpoint.stem + SUFFIXES[fmt])


def differences(expected: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(share of images whose top class agrees, largest absolute probability difference)."""
    agree = float((expected.argmax(axis=1) == got.argmax(axis=1)).mean())
    return agree, float(np.abs(expected - got).max())


def export(model: nn.Module, datamodule: Any, ckpt_path: str, fmt: str, output: str | None) -> Path:
    """Write the file, read it back and check it against the network in PyTorch on a few random images."""
    module, facts = packaged(model, datamodule)
    path = export_path(ckpt_path, fmt, output)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        example = torch.randint(0, 256, (2, *facts["input_shape"]), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        WRITERS[fmt](module, example, path, facts)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}. Choose a writable place with --output PATH.") from exc
    images = torch.randint(0, 256, (5, *facts["input_shape"]), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = module(images).numpy()
    run, _ = load_exported(str(path))
    _, largest = differences(expected, run(images.numpy()))  # 5 images: another batch size than the traced one
    if largest > TOLERANCE:
        raise ConfigError(f"{path}: the exported model's probabilities differ from PyTorch's by up to {largest:.2g} "
                          f"(tolerance {TOLERANCE}); this network does not export faithfully to {fmt}.")
    return path

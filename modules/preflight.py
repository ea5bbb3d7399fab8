"""Checks made before a run starts, so that a setting that cannot work stops with what to change instead of a
traceback part way through: the checkpoint given, the folders written to, the network against the data."""

import os
import re
import tempfile
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from modules.callbacks import blank_input
from modules.classifier import ClassifierModule, ConfigError
from modules.loggers import version_number

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)

def checkpoint_facts(path: str) -> dict:
    """The hyperparameters a checkpoint of this project records (class names, input shape, network)."""
    file = Path(path)
    if file.is_dir():
        inside = sorted(str(p.relative_to(file)) for pattern in ("*.ckpt", "checkpoints/*.ckpt") for p in file.glob(pattern))
        raise ConfigError(f"--ckpt_path {path} is a folder: give a checkpoint file in it"
                          + (f" ({', '.join(inside)})." if inside else "; it holds no .ckpt file (a run's are in its checkpoints/)."))
    if not file.exists():
        raise ConfigError(f"--ckpt_path {path} does not exist (looked in {Path.cwd()}). Give the path of a .ckpt file, or "
                          "last or best (the newest run's of this task).")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # reads the hyperparameters only
    except Exception:
        try:  # mmap reads only the zip format: a file of torch's older format reads whole, and any other fails as it is
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling, truncation, not a checkpoint at all
            text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # torch's message carries terminal colour codes
            lines = [line.strip() for line in text.splitlines() if line.strip()] or ["no reason given"]
            advice = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)")
            reason = next((line for line in lines if not line.startswith(advice)), lines[0])  # torch's own reason
            if "GLOBAL" in reason:  # torch's weights_only check refused an object the file names
                why = "it holds objects that loading would run code for; this project's checkpoints hold tensors and plain values only"
            else:
                why = "a file cut short (a copy or download interrupted) or another kind of file: give a run's last.ckpt or best-*.ckpt"
            raise ConfigError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {reason[:300]}); {why}.") from exc
    facts = checkpoint.get("hyper_parameters", {})
    if facts.get("class_names") is None:
        raise ConfigError(f"{path}: this checkpoint records no class names; it was not written by this project.")
    return facts


def find_checkpoint(task_runs: Path, alias: str) -> Path:
    """The newest run's ``last.ckpt``, or the best checkpoint that run recorded."""
    runs = sorted(task_runs.glob("version_*"), key=lambda p: -1 if (n := version_number(p)) is None else n)
    for run in reversed(runs):
        last = run / "checkpoints" / "last.ckpt"
        if not last.is_file():
            continue
        if alias == "last":
            return last
        state = torch.load(last, map_location="cpu", weights_only=True, mmap=True)  # the callbacks' state only
        for key, value in state.get("callbacks", {}).items():
            # The checkpoint callback that monitors a metric is the one with a score.
            if key.startswith("ModelCheckpoint") and value.get("best_model_score") is not None:
                best = run / "checkpoints" / Path(value["best_model_path"]).name
                if best.is_file():
                    return best
    raise ConfigError(
        f"--ckpt_path {alias}: no run under {task_runs}/version_*/checkpoints/ has a {alias} checkpoint. "
        "Train first with `fit`, or pass the path of a .ckpt file."
    )


def check_network_takes_the_data(
    model: ClassifierModule, trained_shape: tuple[int, ...] | None = None, ckpt_path: str | None = None,
    one_image_batches: bool = False,
) -> None:
    """One blank forward at the data's input shape (eval mode, no gradients) before the run, so that a network that
    cannot take the data stops with what to change instead of a traceback in the sanity check: another network size
    than the data's (an MLP's in_features), a checkpoint of other images (fine where the network adapts, as with global
    pooling, and said), or, in batches of one image, a BatchNorm layer that would see a single value per channel
    (BatchNorm1d after a Linear; BatchNorm2d normalises over pixels too) and stop at the first training step."""
    shape, single = tuple(model.hparams["input_shape"]), []
    other_size = trained_shape is not None and tuple(trained_shape) != shape

    def record(layer: nn.Module, inputs: tuple[torch.Tensor, ...], _) -> None:
        if inputs[0].shape[2:].numel() == 1:  # (N, C) or (N, C, 1, 1): one value per channel and image
            single.append(type(layer).__name__)

    batch_norms = [m for m in model.modules() if isinstance(m, BATCH_NORMS)] if one_image_batches else []
    hooks = [m.register_forward_hook(record) for m in batch_norms]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(blank_input(model, 1))  # eval mode: one image is enough, and half the work of two
    except RuntimeError as exc:
        if other_size:
            raise ConfigError(
                f"{ckpt_path} was trained on images of shape {tuple(trained_shape)} (channels, height, width); its network "
                f"cannot take this data's {shape} ({exc}). Use a checkpoint of this task and data, or the image size it "
                "was trained on."
            ) from exc
        raise ConfigError(
            f"the network ({type(model.net).__name__}) cannot take this data's images, of shape {shape} (channels, height, "
            f"width): {exc}. Set model.net's sizes (in_features, in_channels, image_size) to the data's."
        ) from exc
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    if single:
        raise ConfigError(
            f"batch_size=1: the network's {single[0]} normalises each channel over the batch, and a batch of one image "
            "gives it a single value per channel (training would stop at its first step). Use --data.batch_size 2 or "
            "more, or a network without BatchNorm."
        )
    if other_size:  # a network that adapts (global pooling) takes it
        rank_zero_only(print)(
            f"Note: {ckpt_path} was trained on images of shape {tuple(trained_shape)}; this run gives it {shape} (channels, "
            f"height, width). To use the size it was trained on: --data.image_size {trained_shape[-1]}."
        )


def check_writable(folder: Path, what: str, option: str) -> None:
    """``what`` goes into ``folder``: find out before the work, not when the first file is written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        blocker = next((p for p in (folder, *folder.parents) if p.is_file()), None)  # a file where a folder must be
        why = f"{blocker} is a file, not a folder" if blocker else exc.strerror or exc
        raise ConfigError(f"cannot write {what} to {folder}: {why}. Choose a writable folder with {option}.") from exc


def expand_home(config) -> None:
    """``~`` in the paths that Lightning and the predictions writer take as given (a YAML value, or ``--opt=~/x``,
    which no shell expands): a logger's ``save_dir: ~/runs`` put the TensorBoard files under $HOME but the
    checkpoints in a folder named ``~`` in the working directory. The data paths are expanded by the DataModules."""
    logger = config.trainer.get("logger")
    for holder, key in ((config, "ckpt_path"), (config.trainer, "default_root_dir"), (config.get("predictions"), "output"),
                        (getattr(logger, "init_args", None), "save_dir")):
        value = holder.get(key) if holder is not None else None
        if isinstance(value, str) and value.startswith("~"):
            holder[key] = os.path.expanduser(value)


def flat_settings(settings: dict, prefix: str = "") -> dict:
    """Nested settings as ``{"optimizer.init_args.lr": 0.001, ...}``."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


BF16_UNITS = ("amx_bf16", "avx512_bf16")  # CPU flags of bf16 matrix units (Intel AMX, AVX512-BF16)


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux's /proc/cpuinfo; none known elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def default_precision(accelerator: str) -> tuple[str, str]:
    """The precision a run gets when its config says null, and why: bf16 autocast where the chip computes in bf16
    (a GPU that supports it; a CPU with AMX or AVX512-BF16, where airbench's network trained 1.67x faster than in
    float32), 32-bit elsewhere (on an AVX2-only EPYC the same network trained 5x slower in bf16)."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return "bf16-mixed", "a GPU that computes in bf16"
        return "32-true", "a GPU without bf16"
    units = sorted(cpu_flags() & set(BF16_UNITS))
    if units:
        return "bf16-mixed", f"a CPU with bf16 matrix units ({', '.join(units)})"
    return "32-true", "a CPU without bf16 matrix units (AMX, AVX512-BF16), where bf16 autocast is slower"

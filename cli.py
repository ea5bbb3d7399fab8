"""Train, validate, test and predict any task: ``python cli.py fit --config configs/<task>.yaml``."""

import sys
import warnings
from pathlib import Path

import torch
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from datamodules import ImageClassificationDataModule
from datamodules.base import DataError
from modules import ClassifierModule
from modules.classifier import ConfigError

CKPT_ALIASES = ("last", "best")

# Raised inside Lightning 2.6's own pytree helper under torch >= 2.10, once per run; nothing here can change it.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


class ClassifierCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Facts the data knows flow into the model, so they are never typed twice.
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")
        parser.link_arguments("data.input_shape", "model.init_args.input_shape", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        if config.trainer.precision is None:
            config.trainer.precision = default_precision(config.trainer.accelerator)
        if config.get("ckpt_path") in CKPT_ALIASES:
            checkpoint = find_checkpoint(run_folder(config), config.ckpt_path)
            config.ckpt_path = str(checkpoint)
            print(f"Using {checkpoint}")
        if self.subcommand == "fit" and config.get("ckpt_path"):
            resume_in_place(config)


def resume_in_place(config) -> None:
    """Resume a fit inside the run folder its checkpoint came from: the TensorBoard curves continue, and
    ModelCheckpoint keeps its best score (in a new folder Lightning would drop it, and any epoch could
    become the "best")."""
    run = Path(config.ckpt_path).resolve().parent.parent
    if hasattr(config.trainer.logger, "init_args") and run.parent == run_folder(config).resolve():
        config.trainer.logger.init_args.version = run.name
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


def default_precision(accelerator: str) -> str:
    """bf16-mixed on a GPU that has it; 32-bit elsewhere (bf16 autocast is several times slower on CPUs)."""
    on_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"


def run_folder(config) -> Path:
    """``<save_dir>/<name>`` of the configured logger: where this task's ``version_N`` runs live."""
    logger = config.trainer.logger
    if not hasattr(logger, "init_args"):
        raise ConfigError("--ckpt_path last/best needs the task's logger (trainer.logger) to find earlier runs.")
    return Path(logger.init_args.save_dir) / (logger.init_args.name or "")


def find_checkpoint(task_runs: Path, alias: str) -> Path:
    """The newest run's ``last.ckpt``, or the best checkpoint that run recorded."""
    runs = sorted(task_runs.glob("version_*"), key=lambda p: int(p.name.split("_")[-1]) if p.name[8:].isdigit() else -1)
    for run in reversed(runs):
        last = run / "checkpoints" / "last.ckpt"
        if not last.is_file():
            continue
        if alias == "last":
            return last
        state = torch.load(last, map_location="cpu", weights_only=True)
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


def main(args: list[str] | None = None) -> ClassifierCLI:
    try:
        return ClassifierCLI(
            ClassifierModule,
            ImageClassificationDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},  # a resumed fit rewrites its run's config.yaml
            args=args,
        )
    except (DataError, ConfigError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()

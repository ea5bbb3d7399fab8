"""Run folders: Lightning's TensorBoard and CSV loggers, with each run's ``version_N`` folder claimed as it is numbered,
no folder left by a run that failed before it logged anything, and a resumed run's CSV history kept."""

import contextlib
import csv
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch import loggers
from lightning.pytorch.utilities import rank_zero_only

from modules.classifier import ConfigError


def version_number(run: Path) -> int | None:
    """N of a ``version_N`` run folder, as Lightning's loggers number them; None for another name."""
    number = run.name.removeprefix("version_")
    return int(number) if number != run.name and number.isdigit() else None


def claim_next_version(runs: Path) -> int:
    """Create the next ``version_N`` under ``runs`` and return N. Lightning numbers a run one above the newest folder
    but creates it only once the data is prepared and set up (seconds, for a folder set decoded the first time), so
    runs started together drew one number and wrote over each other's checkpoints; an exclusive mkdir cannot."""
    runs.mkdir(parents=True, exist_ok=True)
    number = max((n for p in runs.glob("version_*") if (n := version_number(p)) is not None), default=-1) + 1
    while True:
        try:
            (runs / f"version_{number}").mkdir()  # fails where another run got there first
            return number
        except FileExistsError:
            number += 1


class RunFolder:
    """Mixin for a Lightning logger with ``version`` and ``root_dir``: see the module's docstring. Only the first
    process claims (the global rank 0 of node 0); the other DDP processes take its folder from Lightning."""

    def __init__(self, *args: Any, version: int | str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, version=version, **kwargs)
        self.given_version, self.claimed, self.logged = version, None, False

    @property
    def version(self) -> int | str:
        first_process = rank_zero_only.rank == 0 and os.environ.get("NODE_RANK", "0") == "0"
        if self.given_version is not None or not first_process:
            return super().version
        if self.claimed is None:
            self.claimed = claim_next_version(Path(self.root_dir))
        return self.claimed

    def log_metrics(self, *args: Any, **kwargs: Any) -> None:
        self.logged = True
        super().log_metrics(*args, **kwargs)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """A run refused before it logged anything (a setting found wrong as the trainer set up: validation off under
        early stopping, a schedule shorter than the run) leaves no folder to list among the real runs. Lightning
        calls this with "failed" on every error and interruption inside a trainer call."""
        super().finalize(status)
        folder = Path(self.root_dir) / f"version_{self.claimed}"
        if status == "failed" and self.claimed is not None and not self.logged and not any(folder.rglob("*.ckpt")):
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):  # the task's folder too, where this was its first run
                folder.parent.rmdir()


class TensorBoardRunLogger(RunFolder, loggers.TensorBoardLogger):
    """Lightning's TensorBoardLogger whose run folder is claimed as it is numbered (see ``RunFolder``)."""


class CSVRunLogger(RunFolder, loggers.CSVLogger):
    """Lightning's CSVLogger (see ``RunFolder``) that keeps a resumed run's earlier rows: Lightning's writer deletes the
    metrics.csv it finds as it starts, and the curves picture would lose every earlier epoch."""

    kept = False

    @property
    def experiment(self) -> Any:
        path = Path(self.log_dir) / "metrics.csv"
        if self.kept or rank_zero_only.rank != 0:
            return super().experiment
        self.kept = True  # the first call creates the writer
        if not path.is_file():
            return super().experiment
        copy = path.with_name(".metrics.csv.kept")
        shutil.copy2(path, copy)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
            writer = super().experiment  # created here: it deletes metrics.csv
        os.replace(copy, path)
        with path.open(newline="") as file:
            writer.metrics_keys = next(csv.reader(file), [])  # the header the new rows join
        return writer


def run_folder(config) -> Path:
    """``<save_dir>/<name>`` of the configured logger: where this task's ``version_N`` runs live."""
    logger = config.trainer.logger
    if not hasattr(logger, "init_args"):
        raise ConfigError("--ckpt_path last/best needs the task's logger (trainer.logger) to find earlier runs.")
    return Path(logger.init_args.save_dir) / run_name(config)


def run_name(config) -> str:
    """The logger's name, or where a config leaves it null the name of the task's ``trainer.default_root_dir``
    (``lightning_logs/mnist``: runs in ``lightning_logs/mnist/version_N``); none without either."""
    name = config.trainer.logger.init_args.get("name")
    return Path(config.trainer.default_root_dir or "").name if name is None else name


def resume_in_place(config) -> None:
    """Resume a fit inside the run folder its checkpoint came from: the TensorBoard curves continue, and
    ModelCheckpoint keeps its best score (in a new folder Lightning would drop it, and any epoch could
    become the "best")."""
    run = Path(config.ckpt_path).resolve().parent.parent
    if hasattr(config.trainer.logger, "init_args") and run.parent == run_folder(config).resolve():
        number = version_number(run)  # as a number, the progress bar shows v_num=0, not "on_0"
        config.trainer.logger.init_args.version = run.name if number is None else number
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")

"""Running ``cli.py`` in-process, as a test of a whole run does: the task's config, CPU, tiny batches."""

import sys
from pathlib import Path

import pytest

from cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TASK_DATA = {"digits": None, "mnist": "mnist_dir", "cifar10": "cifar_pickle_dir", "svhn": "svhn_dir"}  # task: fixture


@pytest.fixture
def run_in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # lightning_logs/ and any stray output land in the test's folder
    monkeypatch.setattr(sys, "argv", ["cli.py"])  # the CLI reads its arguments from main(args) alone


def cli(task: str, subcommand: str, *extra: str, data_dir=None, logs="lightning_logs"):
    args = [subcommand, "--config", str(CONFIGS / f"{task}.yaml"), "--trainer.accelerator", "cpu"]
    args += ["--trainer.logger.init_args.save_dir", str(logs), "--trainer.log_every_n_steps", "1", "--data.batch_size", "8"]
    if data_dir is not None:
        args += ["--data.data_dir", str(data_dir), "--data.download", "false"]
    return main(args + list(extra))


def data_for(task: str, request):
    return request.getfixturevalue(TASK_DATA[task]) if TASK_DATA[task] else None

"""Lightning's own DDP, 2 CPU processes (gloo): the same results as one process, exact resumes, nothing hangs."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cli import main
from datamodules import DataError, Digits
from datamodules.in_memory import InMemoryImages

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "configs" / "digits.yaml")
DDP = ("--trainer.devices", "2", "--trainer.strategy", "ddp")
FIT = ("--trainer.max_epochs", "2", "--trainer.deterministic", "true")  # 21 steps a process an epoch


def ddp(folder: Path, subcommand: str, *args: str, config: str = DIGITS, returncode: int = 0) -> str:
    """``cli.py`` on 2 processes, in a process of its own; returns what it printed."""
    # --config first: a --config after them would set devices and strategy back to the config's own.
    command = [sys.executable, str(ROOT / "cli.py"), subcommand, "--config", config, *DDP, *args]
    command += ["--trainer.accelerator", "cpu", "--trainer.logger.init_args.save_dir", str(folder / "logs")]
    folder.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # A session of its own: a test that kills the run kills all its processes, and nothing else.
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=180, start_new_session=True)
    output = done.stdout + done.stderr
    assert done.returncode == returncode, output[-5000:]
    assert "Starting with 2 processes" in output  # a real 2-process run, not a 1-process fallback
    return output


def one_process(folder: Path, subcommand: str, *args: str):
    return main([subcommand, "--config", DIGITS, *args, "--trainer.accelerator", "cpu",
                 "--trainer.logger.init_args.save_dir", str(folder / "logs")])


def accuracy(output: str, stage: str) -> float:
    """The ``<stage>/acc`` of Lightning's results table in a run's output."""
    return float(re.search(rf"{stage}/acc\s+([\d.]+)", output).group(1))


@pytest.fixture(scope="module")
def ddp_fit(tmp_path_factory) -> tuple[Path, str]:
    """A 2-epoch, 2-process fit, uninterrupted, and the test of its best checkpoint: its run folder and output."""
    folder = tmp_path_factory.mktemp("straight")
    output = ddp(folder, "fit", *FIT, "--test_after_fit", "true")
    return folder / "logs" / "digits" / "version_0", output


@pytest.mark.slow
def test_two_process_fit_validate_test_and_predict_match_one_process(ddp_fit, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["cli.py"])
    run, output = ddp_fit
    assert [p.name for p in run.parent.iterdir()] == ["version_0"]  # one run folder: rank 0 alone writes
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert len(checkpoints) == 2 and "last.ckpt" in checkpoints and checkpoints[0].startswith("best-")
    pictures = {"inputs.png", "confusion_matrix_val.png", "confusion_matrix_test.png", "misclassified_test.png"}
    assert pictures <= {p.name for p in run.iterdir()}  # drawn by rank 0, the test's from every process's share
    # The digits test split has 359 images, shares of 180 and 179: every image counted once (Lightning's own
    # sampler would repeat one to even the shares), so the test accuracy equals one process's exactly.
    best = str(run / "checkpoints" / checkpoints[0])
    single_test = float(one_process(tmp_path, "test", "--ckpt_path", best).trainer.callback_metrics["test/acc"])
    assert 0.3 < single_test <= 1 and accuracy(output, "test") == single_test
    assert "replicates some samples" not in output  # Lightning's warning about padded shares
    # Validation likewise (144 images, 72 a process): the best checkpoint's score, from the fit's 2-process validation,
    # equals one process's validation of its weights exactly.
    states = torch.load(best, weights_only=True)["callbacks"]
    scores = [s["best_model_score"] for key, s in states.items() if key.startswith("ModelCheckpoint") and s["best_model_score"] is not None]
    single = float(one_process(tmp_path, "validate", "--ckpt_path", best).trainer.callback_metrics["val/acc"])
    assert 0.3 < single <= 1 and [float(score) for score in scores] == [single]
    ckpt = str(run / "checkpoints" / "last.ckpt")
    # Each process predicts its own share; the CSV holds every image once, in order, as one process writes it.
    one_process(tmp_path, "predict", "--ckpt_path", ckpt, "--predictions.output", str(tmp_path / "one.csv"))
    ddp(tmp_path, "predict", "--ckpt_path", ckpt, "--predictions.output", str(tmp_path / "two.csv"))
    one, two = (list(csv.reader((tmp_path / name).open())) for name in ("one.csv", "two.csv"))
    assert one == two and len(one) == 1 + 359 and [row[0] for row in one[1:]] == [str(i) for i in range(359)]


@pytest.mark.slow
def test_two_process_run_killed_mid_epoch_resumes_like_an_uninterrupted_one(ddp_fit, tmp_path):
    # last.ckpt every 20 steps: both processes die at step 41, 20 steps into epoch 2; the resume starts from
    # step 40, and each process must skip exactly the first 19 batches of its own share.
    kill = ("--trainer.callbacks+=tests.killer.KillAtStep", "--trainer.callbacks.step=41", "--trainer.callbacks.whole_group=true")
    ddp(tmp_path, "fit", *FIT, *kill, returncode=-signal.SIGKILL)
    run = tmp_path / "logs" / "digits" / "version_0"
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (1, 40)  # the step checkpoint, mid-epoch
    resumed = ddp(tmp_path, "fit", *FIT, "--ckpt_path", "last")
    assert resumed.count(f"Using {run / 'checkpoints' / 'last.ckpt'}") == 1  # said once, not once per process
    a = torch.load(ddp_fit[0] / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"]) == (1, 42)
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


@pytest.mark.slow
def test_two_process_transfer_learning_keeps_one_model_after_the_backbone_is_unfrozen(catdog_filtered_dir, tmp_path):
    # DDP synchronises only what was trainable when it wrapped the model: without wrapping it again at the
    # unfreeze, each process would go on training its own backbone (Lightning issue #20340).
    checksums = tmp_path / "checksums.json"
    tiny = ("--data.image_size", "32", "--data.augment", "[]", "--data.batch_size", "2", "--data.cache_dir", str(tmp_path / "cache"))
    ddp(tmp_path, "fit", "--data.data_dir", str(catdog_filtered_dir), *tiny, "--model.net.init_args.weights", "null",
        "--trainer.max_epochs", "2", "--trainer.callbacks.unfreeze_backbone_at_epoch=1",
        "--trainer.callbacks+=tests.probes.ParameterChecksums", f"--trainer.callbacks.path={checksums}",
        config=str(ROOT / "configs" / "catdog.yaml"))
    first, second = json.loads(checksums.read_text())
    assert first == second  # backbone and head: the same on both processes, to the last bit


def test_evaluation_shares_hold_every_image_once():
    data = Digits()
    data.setup("test")  # 359 images: shares of 120, 120 and 119 for 3 processes
    shares = []
    for rank in range(3):
        data.trainer = SimpleNamespace(world_size=3, global_rank=rank, accelerator=None)
        shares.append(list(data.test_dataloader().sampler))
    assert [len(share) for share in shares] == [120, 120, 119]
    assert sorted(i for share in shares for i in share) == list(range(359))
    data.test_set = InMemoryImages(data.test_set.all_images[:2], data.test_set.all_labels[:2])
    with pytest.raises(DataError, match="test set has 2 image.*fewer than the 3 processes.*--trainer.devices"):
        data.test_dataloader()

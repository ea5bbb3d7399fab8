"""Kill a fit with SIGKILL in the middle of an epoch, resume with --ckpt_path last: the same result."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.serve_load import default_ctrl_c

ROOT = Path(__file__).resolve().parents[1]


def fit(tmp_path: Path, logs: str, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "cli.py"), "fit", "--config", str(ROOT / "configs" / "digits.yaml")]
    command += ["--trainer.accelerator", "cpu", "--trainer.max_epochs", "2", "--trainer.deterministic", "true"]
    command += ["--trainer.logger.init_args.save_dir", logs, "--trainer.enable_progress_bar", "false", *extra]
    return subprocess.run(command, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=300, preexec_fn=default_ctrl_c)  # the Ctrl+C this file sends reaches the run


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_ends_like_an_uninterrupted_run(tmp_path):
    straight = fit(tmp_path, "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    # digits: 41 steps an epoch, last.ckpt every 20 steps; die at step 70, 29 steps into epoch 2
    killed = fit(tmp_path, "killed", "--trainer.callbacks+=tests.killer.KillAtStep", "--trainer.callbacks.step=70")
    assert killed.returncode == -signal.SIGKILL
    saved = torch.load(tmp_path / "killed/digits/version_0/checkpoints/last.ckpt", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (1, 60)  # the step checkpoint, mid-epoch
    # Another batch size would give the epoch another order: refused, with the fix, and the checkpoint kept.
    last = tmp_path / "killed/digits/version_0/checkpoints/last.ckpt"
    before = last.read_bytes()
    refused = fit(tmp_path, "killed", "--ckpt_path", "last", "--data.batch_size", "16")
    assert refused.returncode == 1 and "error: the checkpoint stopped part way through an epoch" in refused.stderr
    assert "batch_size 32" in refused.stderr and "Resume with the same" in refused.stderr
    assert last.read_bytes() == before
    resumed = fit(tmp_path, "killed", "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stderr
    a = torch.load(tmp_path / "straight/digits/version_0/checkpoints/last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "killed/digits/version_0/checkpoints/last.ckpt", weights_only=True)
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"]) == (1, 82)
    for key, value in a["state_dict"].items():
        assert torch.allclose(value.float(), b["state_dict"][key].float(), atol=1e-6), key


@pytest.mark.slow
def test_ctrl_c_says_which_step_the_last_checkpoint_holds_and_how_to_resume(tmp_path):
    # digits: 41 steps an epoch, last.ckpt every 20 steps and at the epoch's end (step 41); Ctrl+C at step 50
    stopped = fit(tmp_path, "stopped", "--trainer.callbacks+=tests.killer.InterruptAtStep", "--trainer.callbacks.step=50")
    assert stopped.returncode == 1, stopped.stderr[-3000:]
    last = Path("stopped/digits/version_0/checkpoints/last.ckpt")
    assert f"Stopped by Ctrl+C at epoch 1, step 50. {last} holds step 41: resuming repeats 9 steps." in stopped.stdout
    assert stopped.stdout.rstrip().endswith(f"Resume it: python cli.py fit --config {last.parent.parent}/config.yaml --ckpt_path {last}")

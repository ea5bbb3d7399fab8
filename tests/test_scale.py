"""Lightning's own DDP: the same config on 2 CPU processes (gloo) measures what one process measures."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cli(tmp_path: Path, *args: str) -> str:
    command = [sys.executable, str(ROOT / "cli.py"), *args, "--config", str(ROOT / "configs" / "digits.yaml")]
    command += ["--trainer.accelerator", "cpu", "--trainer.logger.init_args.save_dir", str(tmp_path / "logs")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def val_acc(output: str) -> float:
    return float(re.search(r"val/acc\s+([\d.]+)", output).group(1))


def test_two_process_ddp_fit_and_validation_match_one_process(tmp_path):
    cli(tmp_path, "fit", "--trainer.max_epochs", "1", "--trainer.devices", "2", "--trainer.strategy", "ddp")
    runs = sorted(p.name for p in (tmp_path / "logs" / "digits").iterdir())
    assert runs == ["version_0"]  # one run folder: rank 0 alone logs and writes checkpoints
    checkpoints = sorted(p.name for p in (tmp_path / "logs" / "digits" / "version_0" / "checkpoints").iterdir())
    assert len(checkpoints) == 2 and "last.ckpt" in checkpoints and checkpoints[0].startswith("best-")
    ckpt = str(tmp_path / "logs" / "digits" / "version_0" / "checkpoints" / "last.ckpt")
    single = val_acc(cli(tmp_path, "validate", "--ckpt_path", ckpt, "--trainer.devices", "1"))
    # The digits validation split has 144 images: an even shard per process, no padding duplicates,
    # so the accuracy synchronised across processes must equal the single-process figure exactly.
    ddp = cli(tmp_path, "validate", "--ckpt_path", ckpt, "--trainer.devices", "2", "--trainer.strategy", "ddp")
    assert val_acc(ddp) == single
    assert 0.3 < single <= 1

"""Crash-safe checkpoint writes: a kill or a full disk mid-write never costs the previous checkpoint."""

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modules.checkpoint_io import AtomicCheckpointIO, CheckpointWriteError, current_umask
from modules.classifier import ConfigError

ROOT = Path(__file__).resolve().parents[1]

DIES_HALFWAY = """
import os, signal, sys, torch
import modules.checkpoint_io as checkpoint_io

io = checkpoint_io.AtomicCheckpointIO()
io.save_checkpoint({"weights": torch.ones(1000), "epoch": 1}, sys.argv[1])

def dies_halfway(obj, file, *args, **kwargs):
    file.write(b"PK\\x03\\x04 the first half of a checkpoint")
    file.flush()
    os.kill(os.getpid(), signal.SIGKILL)

checkpoint_io.torch.save = dies_halfway
io.save_checkpoint({"weights": torch.zeros(1000), "epoch": 2}, sys.argv[1])
"""


@pytest.mark.slow
def test_process_killed_mid_write_leaves_the_previous_checkpoint(tmp_path):
    target = tmp_path / "checkpoints" / "last.ckpt"
    done = subprocess.run([sys.executable, "-c", DIES_HALFWAY, str(target)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == -signal.SIGKILL
    survivor = torch.load(target, weights_only=True)
    assert survivor["epoch"] == 1 and torch.equal(survivor["weights"], torch.ones(1000))
    assert len(list(target.parent.glob(".last.ckpt.*.partial"))) == 1  # the torn write, beside, never in place
    AtomicCheckpointIO().save_checkpoint({"epoch": 3}, target)
    assert torch.load(target, weights_only=True)["epoch"] == 3
    assert not list(target.parent.glob("*.partial"))  # the next save clears it


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_checkpoint_file_permissions_follow_the_umask_like_other_files(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        AtomicCheckpointIO().save_checkpoint({"epoch": 1}, tmp_path / "last.ckpt")
        (tmp_path / "config.yaml").write_text("epoch: 1")
    finally:
        os.umask(previous)
    assert (tmp_path / "last.ckpt").stat().st_mode & 0o777 == (tmp_path / "config.yaml").stat().st_mode & 0o777 == mode
    assert os.umask(previous) == previous  # the process's umask is as it was
    os.umask(0o027)
    try:
        assert current_umask() == 0o027  # read without setting it
    finally:
        os.umask(previous)


def test_full_disk_names_the_folder_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "run" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1}, target)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(CheckpointWriteError, match=rf"cannot write checkpoint last.ckpt in {tmp_path / 'run'}: No space left on device"):
        io.save_checkpoint({"epoch": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["epoch"] == 1
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


class Payload:
    """Stands in for any object a pickle can smuggle in; unpickling it would run code."""

    def __reduce__(self):
        return (os.system, ("echo this should never run",))


def test_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch, capfd):
    from cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cli.py"])
    evil = tmp_path / "evil.ckpt"
    torch.save({"hyper_parameters": {"class_names": [str(d) for d in range(10)]}, "payload": Payload()}, evil)
    with pytest.raises(SystemExit, match=r"evil.ckpt: not a readable checkpoint \(UnpicklingError: .*GLOBAL posix.system.*\); it "
                       r"holds objects that loading would run code for; this project's checkpoints hold tensors and plain values only\.$"):
        main(["test", "--config", str(ROOT / "configs" / "digits.yaml"), "--ckpt_path", str(evil)])
    assert "should never run" not in capfd.readouterr().out


def test_checkpoint_facts_read_torchs_older_file_format_and_name_a_file_that_is_none(tmp_path):
    from cli import checkpoint_facts

    old = tmp_path / "old.ckpt"  # torch.save's format before 1.6, which mmap cannot read
    torch.save({"hyper_parameters": {"class_names": ["a", "b"]}}, old, _use_new_zipfile_serialization=False)
    assert checkpoint_facts(str(old))["class_names"] == ["a", "b"]
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match=r"notes.ckpt: not a readable checkpoint \(UnpicklingError: .*\); a file cut short "
                       r"\(a copy or download interrupted\) or another kind of file: give a run's last.ckpt"):
        checkpoint_facts(str(text))


def test_unwritable_log_folder_is_named_before_training(tmp_path, monkeypatch):
    from cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cli.py"])
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(SystemExit, match=r"cannot write logs and checkpoints to a_file/logs: a_file is a file, not a folder\. Choose a writable folder with --trainer.logger.init_args.save_dir"):
        main(["fit", "--config", str(ROOT / "configs" / "digits.yaml"), "--trainer.logger.init_args.save_dir", "a_file/logs"])

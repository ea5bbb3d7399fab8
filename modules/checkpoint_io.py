"""Checkpoint files that are always whole: written beside their target, flushed to disk, then renamed."""

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; the previous file of that name is untouched."""


def current_umask() -> int:
    """The process's file-creation mask: read from Linux's /proc, else by setting it and setting it back (a file
    another thread creates in between would get the mask set there)."""
    with contextlib.suppress(OSError, ValueError, IndexError, StopIteration):
        status = Path("/proc/self/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's CheckpointIO plugin with crash-safe writes.

    A write goes to ``.<name>.*.partial`` in the same folder, is fsynced, then renamed over the target in
    one step (the folder is fsynced too), so a kill or power cut at any moment leaves either the old
    checkpoint or the new one, never a torn file. A full disk or an unwritable folder stops the run with
    the folder named, and the earlier checkpoints stay as they were.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        target = Path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            for stale in target.parent.glob(f".{target.name}.*.partial"):  # left by a process killed mid-write
                stale.unlink(missing_ok=True)
            handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
            try:
                with contextlib.suppress(OSError):  # a file system without permissions (FAT) sets them by its mount
                    os.fchmod(handle, 0o666 & ~current_umask())  # mkstemp's 0600 would make the checkpoint private
                with os.fdopen(handle, "wb") as file:
                    torch.save(checkpoint, file)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(partial, target)
            except BaseException:
                Path(partial).unlink(missing_ok=True)
                raise
            folder = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError as exc:
            raise CheckpointWriteError(
                f"cannot write checkpoint {target.name} in {target.parent}: {exc.strerror or exc}. Free disk space or "
                "make that folder writable (or log elsewhere: --trainer.logger.init_args.save_dir PATH); the "
                "checkpoints already there are intact."
            ) from exc

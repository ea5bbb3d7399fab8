"""Lightning's Trainer with the subcommand that takes a trained model out of the project: ``export``.
LightningCLI makes a subcommand of each Trainer method its ``subcommands()`` lists, with the method's arguments as
options (typed, so the parser checks them and --help shows them) and ``--ckpt_path`` resolved as for ``test``."""

from pathlib import Path

import lightning as L
import torch

from modules import export as exporting
from modules.classifier import ConfigError


def load_weights(model: L.LightningModule, ckpt_path: str | None) -> None:
    """The checkpoint's weights into the model LightningCLI built from its hyperparameters."""
    if ckpt_path is None:  # cli.py refuses this first; kept for callers of the Trainer itself
        raise ConfigError("give --ckpt_path best (the newest run's best checkpoint), last, or a .ckpt file.")
    model.load_state_dict(torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"])


class Trainer(L.Trainer):
    """``fit``, ``validate``, ``test``, ``predict``, and ``export``."""

    SUBCOMMANDS = {"export": {"model", "datamodule"}}  # subcommand: arguments not options

    def export(self, model: L.LightningModule, datamodule: L.LightningDataModule, ckpt_path: str | None = None,
               format: exporting.Format = "onnx", output: str | None = None) -> Path:
        """Export a checkpoint to ONNX or TorchScript: uint8 images in, class probabilities out, class names inside.

        Args:
            ckpt_path: best, last or a .ckpt file
            format: onnx (onnxruntime, most languages) or torchscript (torch.jit.load, C++ and mobile)
            output: where to write the file; default: the checkpoint's run folder, named after the checkpoint
        """
        load_weights(model, ckpt_path)
        path = exporting.export(model, datamodule, ckpt_path, format, output)
        print(f"Wrote {path} ({format}; checked against the checkpoint in PyTorch). Serve it: python cli.py serve "
              f"--config CONFIG --ckpt_path {path}")
        return path

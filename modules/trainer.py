"""Lightning's Trainer with the two subcommands that take a trained model out of the project: ``export`` and ``serve``.
LightningCLI makes a subcommand of each Trainer method its ``subcommands()`` lists, with the method's arguments as
options (typed, so the parser checks them and --help shows them) and ``--ckpt_path`` resolved as for ``test``."""

from pathlib import Path
from typing import Literal

import lightning as L
import torch
from jsonargparse.typing import NonNegativeFloat, PositiveFloat, PositiveInt, restricted_number_type

from modules import export as exporting
from modules.classifier import ConfigError

Host = Literal["127.0.0.1", "0.0.0.0", "::"]  # what LitServe binds to: this machine only, or every interface
Port = restricted_number_type("Port", int, [(">=", 1024), ("<=", 65535)])


def load_weights(model: L.LightningModule, ckpt_path: str | None) -> None:
    """The checkpoint's weights into the model LightningCLI built from its hyperparameters."""
    if ckpt_path is None:  # cli.py refuses this first; kept for callers of the Trainer itself
        raise ConfigError("give --ckpt_path best (the newest run's best checkpoint), last, or a .ckpt file.")
    model.load_state_dict(torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"])


class Trainer(L.Trainer):
    """``fit``, ``validate``, ``test``, ``predict``, and ``export`` and ``serve``."""

    SUBCOMMANDS = {"export": {"model", "datamodule"}, "serve": {"model", "datamodule"}}  # subcommand: arguments not options

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

    def serve(self, model: L.LightningModule, datamodule: L.LightningDataModule, ckpt_path: str | None = None,
              host: Host = "127.0.0.1", port: Port = 8000, top_k: PositiveInt = 5, max_images: PositiveInt = 16,
              max_request_mb: PositiveFloat = 8.0, max_batch_size: PositiveInt = 8, batch_timeout: NonNegativeFloat = 0.01) -> None:
        """Serve a checkpoint or an exported file: POST /predict, GET /health, and a page at / to try it on photos.

        Args:
            ckpt_path: best, last, a .ckpt file, or a .onnx or .pt file that export wrote
            host: 127.0.0.1 answers this machine only; 0.0.0.0 (or :: for IPv6) every network interface
            port: the TCP port
            top_k: how many classes each prediction lists, most probable first
            max_images: the most images one request may hold
            max_request_mb: the largest request accepted, in MiB
            max_batch_size: how many concurrent requests are batched into one forward pass
            batch_timeout: how long, in seconds, a batch waits for more requests
        """
        from modules import serving  # LitServe and FastAPI load only for this subcommand

        if exporting.is_exported(ckpt_path):
            source, facts = ckpt_path, exporting.load_exported(ckpt_path)[1]
        else:
            load_weights(model, ckpt_path)
            source, facts = exporting.packaged(model, datamodule)
        serving.serve(source, facts, datamodule.file_reader(facts), host, port, top_k, max_images, max_request_mb,
                      max_batch_size, batch_timeout)

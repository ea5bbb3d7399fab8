"""Project callbacks, where Lightning has none that fits."""

import csv
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_only
from torchinfo import summary


class TorchinfoSummary(L.Callback):
    """Prints the network's torchinfo summary (layers, parameters, MACs, memory) at the task's input size."""

    def __init__(self, depth: int = 3) -> None:
        self.depth = depth

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        shape = pl_module.hparams.get("input_shape")
        if shape is None:
            return
        report = summary(
            pl_module.net,
            input_size=(2, *shape),  # two images, so BatchNorm layers can run in training mode too
            device=pl_module.device,
            depth=self.depth,
            mode="eval",
            verbose=0,
        )
        print(f"{report}\nLogs and checkpoints: {trainer.log_dir}")


class PredictionWriter(BasePredictionWriter):
    """Writes ``predict`` results as a CSV (index, predicted class name, confidence, true class if known).

    ``output`` defaults to ``predictions.csv`` in the run's log folder.
    """

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output = output

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        names = pl_module.class_names
        merged = {key: torch.cat([p[key] for p in predictions]) for key in predictions[0] if key != "probabilities"}
        path = Path(self.output) if self.output else Path(trainer.log_dir or ".") / "predictions.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            has_labels = "labels" in merged
            writer.writerow(["index", "predicted", "confidence"] + (["true"] if has_labels else []))
            for i in range(len(merged["predicted"])):
                row = [i, names[merged["predicted"][i]], f"{merged['confidence'][i]:.4f}"]
                writer.writerow(row + ([names[merged["labels"][i]]] if has_labels else []))
        print(f"Wrote {len(merged['predicted'])} predictions to {path}")

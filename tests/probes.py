"""Callbacks that look into a run from the inside, for tests that run cli.py in another process."""

import json

import lightning as L
import torch


class ParameterChecksums(L.Callback):
    """At the end of training, every process's sum of |weights| of the backbone and the head, written by rank 0
    to ``path``: under DDP every process must hold the same model."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        parts = (pl_module.net.backbone, pl_module.net.head)
        sums = torch.stack([sum(p.detach().double().abs().sum() for p in part.parameters()) for part in parts])
        gathered = trainer.strategy.all_gather(sums)
        if trainer.is_global_zero:
            with open(self.path, "w") as f:
                json.dump(gathered.tolist(), f)

"""Learning-rate schedules planned over the whole run, whose length the ClassifierModule fills in from the trainer."""

import math
from typing import Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from modules.classifier import ConfigError


class WarmupDecay(LRScheduler):
    """A linear warmup from ``start`` x lr to lr over the first ``warmup`` share of the steps, then a cosine (or
    linear) decay to ``end`` x lr at the last step: timm's and torchvision's recipes warm up then decay by cosine;
    airbench94 warms up over 23% of its steps from 0.2 x lr and decays linearly to 0.07 x lr. Stepped per batch.
    ``total_steps``: left out (null), the ClassifierModule gives the trainer's step budget, as for OneCycleLR."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None = None,
        warmup: float = 0.05,
        start: float = 0.0,
        end: float = 0.0,
        decay: Literal["cosine", "linear"] = "cosine",
        last_epoch: int = -1,
    ) -> None:
        if total_steps is None or total_steps < 1:
            raise ConfigError(f"WarmupDecay needs the run's step count (total_steps={total_steps}): leave it out in a "
                              "model.scheduler config and the trainer's step budget is filled in.")
        if not 0 <= warmup < 1:
            raise ConfigError(f"WarmupDecay warmup={warmup}: give the share of the steps that warm up, 0 <= share < 1.")
        self.total_steps, self.warmup, self.start, self.end, self.decay = total_steps, warmup, start, end, decay
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        """The multiple of the base learning rate at ``step`` (0-based)."""
        warmup_steps = int(self.total_steps * self.warmup)
        if step < warmup_steps:
            return self.start + (1 - self.start) * step / warmup_steps
        done = min(1.0, (step - warmup_steps) / max(1, self.total_steps - 1 - warmup_steps))
        shape = (1 + math.cos(math.pi * done)) / 2 if self.decay == "cosine" else 1 - done
        return self.end + (1 - self.end) * shape

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]

"""Callbacks that stop their own process at a training step: SIGKILL (a machine dying), SIGINT (Ctrl+C), and a
setting refused part way."""

import os
import signal

import lightning as L

from modules.classifier import ConfigError


class KillAtStep(L.Callback):
    """``whole_group``: kill every process of the run's process group (all DDP processes, as when a machine dies);
    the run must have been started in a session of its own."""

    def __init__(self, step: int, whole_group: bool = False) -> None:
        self.step, self.whole_group = step, whole_group

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            if self.whole_group:
                os.killpg(os.getpgid(0), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)


class InterruptAtStep(L.Callback):
    """Ctrl+C at a training step: SIGINT to its own process."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


class RefuseAtStep(L.Callback):
    """A user error raised at a training step, once the run has trained and logged."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise ConfigError(f"refused at step {self.step}")

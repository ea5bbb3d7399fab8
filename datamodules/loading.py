"""Samplers and the training loader: each process's share of a split, and epochs that resume part way in."""

from itertools import islice
from typing import Any, Callable, Iterator

from torch.utils.data import DataLoader, Dataset, DistributedSampler

from datamodules.errors import DataError


class EpochSampler(DistributedSampler):
    """torch's DistributedSampler (a fresh permutation each epoch, drawn from ``seed + epoch``; under DDP each
    process takes its own share of it) that can start an epoch part way in. The order depends on nothing but the
    seed, the epoch and the number of processes, so a resumed run replays the rest of an interrupted epoch exactly.
    Lightning keeps a DistributedSampler as it is under DDP (another sampler it would wrap in its own)."""

    def __init__(self, dataset: Dataset, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.resume_at: tuple[int, int] | None = None  # (epoch, samples of this process's share already trained)

    def __iter__(self) -> Iterator[int]:
        start = self.resume_at[1] if self.resume_at and self.resume_at[0] == self.epoch else 0
        self.resume_at = None
        return islice(super().__iter__(), start, None)


class EvaluationShare(DistributedSampler):
    """One process's share of an evaluation split, in order: every ``num_replicas``-th image from its ``rank``, so
    the shares hold every image exactly once (torch's DistributedSampler pads the last share with repeats, which
    would be counted twice). Shares differ by at most one image."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))


class ResumableLoader(DataLoader):
    """The training loader. Lightning stores its ``state_dict`` in every checkpoint and hands it back on a
    resume, so a run stopped in the middle of an epoch goes on with exactly the batches it had not seen."""

    def __init__(self, *args: Any, trained_batches: Callable[[], tuple[int, int]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trained_batches = trained_batches  # (epoch, batches of it the trainer has finished)

    def epoch_facts(self) -> dict[str, int]:
        """What an epoch's order and its number of steps follow from."""
        processes = self.sampler.num_replicas if isinstance(self.sampler, EpochSampler) else 1
        return {"images": len(self.dataset), "processes": processes, "batch_size": self.batch_size}

    def state_dict(self) -> dict[str, int]:
        epoch, done = self.trained_batches()
        if done >= len(self):  # a checkpoint at the end of an epoch: the next one starts from its beginning
            epoch, done = epoch + 1, 0
        return {"epoch": epoch, "samples_done": done * self.batch_size, **self.epoch_facts()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if not isinstance(self.sampler, EpochSampler):  # overfit_batches: Lightning's own sequential sampler
            return
        saved, now = {k: state[k] for k in self.epoch_facts() if k in state}, self.epoch_facts()
        if state["samples_done"] and any(saved[k] != now[k] for k in saved):
            describe = lambda facts: ", ".join(f"{k} {v}" for k, v in facts.items())  # noqa: E731
            raise DataError(
                f"the checkpoint stopped part way through an epoch of a run with {describe(saved)} (per process); "
                f"this run has {describe({k: now[k] for k in saved})}. An epoch's order follows from these, so the "
                "run cannot go on where it stopped. Resume with the same --trainer.devices, --trainer.num_nodes, "
                "--data.batch_size and data, or from a checkpoint written at the end of an epoch."
            )
        self.sampler.resume_at = (state["epoch"], state["samples_done"])

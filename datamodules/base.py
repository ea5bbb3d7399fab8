"""What every task shares: finding the files, the validation split, loaders and batch transforms.

A task reads its files once into one uint8 tensor (N, C, H, W) and a label tensor. Loaders hand out
uint8 batches by indexing those tensors; the batch becomes float, is augmented and normalised only
after Lightning has moved it to the device (``on_after_batch_transfer``). No per-sample PIL work.
"""

from itertools import islice
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import lightning as L
import torch
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from datamodules.errors import DataError, DataNotFoundError, DataWarning
from datamodules.image_folder import list_images, read_images


class InMemoryImages(Dataset):
    """uint8 images (N, C, H, W) and int64 labels held in memory (or memory-mapped), seen through ``index``:
    a split is a set of positions into one shared tensor, never a copy of the images."""

    def __init__(self, images: Tensor, labels: Tensor, index: Tensor | None = None) -> None:
        self.all_images, self.all_labels = images, labels
        self.index = torch.arange(len(labels)) if index is None else index

    @property
    def images(self) -> Tensor:
        return self.all_images[self.index]

    @property
    def labels(self) -> Tensor:
        return self.all_labels[self.index]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        row = self.index[i]
        return self.all_images[row], self.all_labels[row]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        # The DataLoader asks for a whole batch at once: one tensor index instead of a Python call per image.
        rows = self.index[torch.as_tensor(indices)]
        return self.all_images[rows], self.all_labels[rows]


def grouped_split(labels: Tensor, keys: list[str] | None, val_split: float, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded train/validation split, stratified by class, that keeps images with the same key (identical
    files) on one side; ``keys=None``: every image is its own group. ``val_split`` below 1 is a fraction of the
    images, from 1 up a number of them; either way it is shared out over the classes in proportion to their
    sizes (``quotas``)."""
    if keys is None:  # the same draws as one group per image, without a Python list per image (19 MiB for MNIST)
        by_class = {label: torch.nonzero(labels == label).flatten() for label in labels.unique().tolist()}
    else:
        groups: dict[str, list[int]] = {}
        for index, key in enumerate(keys):
            groups.setdefault(key, []).append(index)
        by_class = {}
        label_of = labels.tolist()  # a Python list: indexing a tensor per image costs seconds on large sets
        for members in groups.values():
            by_class.setdefault(label_of[members[0]], []).append(members)
    fraction = val_split if val_split < 1 else val_split / len(labels)
    classes = sorted(by_class)
    quota = quotas([len(by_class[c]) for c in classes], fraction)
    generator = torch.Generator().manual_seed(seed)
    is_val = torch.zeros(len(labels), dtype=torch.bool)
    for label, n_val in zip(classes, quota):
        class_groups = by_class[label]
        order = torch.randperm(len(class_groups), generator=generator)[:n_val]
        if keys is None:
            is_val[class_groups[order]] = True
        else:
            is_val[[index for position in order.tolist() for index in class_groups[position]]] = True
    return torch.nonzero(~is_val).flatten(), torch.nonzero(is_val).flatten()


def quotas(sizes: list[int], fraction: float) -> list[int]:
    """Split ``round(sum(sizes) * fraction)`` (at least 1) over the classes in proportion to their sizes,
    by largest remainder, so small sets still get a validation set of the asked-for size."""
    total = max(1, round(sum(sizes) * fraction))
    exact = [size * total / sum(sizes) for size in sizes]
    quota = [int(e) for e in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda i: exact[i] - quota[i], reverse=True)
    for i in by_remainder[: total - sum(quota)]:
        quota[i] += 1
    return quota


def report_skipped(problems: list[str], where: Path) -> None:
    """The skip policy for unreadable image files: leave them out, and say which and why."""
    if problems:
        lines = "\n  ".join(problems)
        rank_zero_warn(f"Skipped {len(problems)} unreadable image file(s) in {where}:\n  {lines}", category=DataWarning)


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


def keep_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Collate function for ``InMemoryImages``: its batches arrive already stacked."""
    return batch


class ImageClassificationDataModule(L.LightningDataModule):
    """Base for every task; a task sets the class attributes and implements the file hooks.

    ``augment`` runs in training only, on each image with its own random draw: batch augmentations
    (``kornia.augmentation``, what the configs use) draw per image themselves and run once on the whole
    batch; torchvision's transforms draw once per call, so they run image by image (slower, same meaning).
    ``transforms`` runs on whole batches in every stage. Both receive float images scaled to [0, 1], as
    ``ToTensor`` gives.
    ``predict_dir``: a folder of image files (any layout), or one image file, to predict on instead of the test split.
    """

    task: ClassVar[str]
    class_names: list[str]
    image_shape: ClassVar[tuple[int, int, int]]  # (C, H, W) as stored, before transforms
    source: ClassVar[str] = ""  # where to get the data, for the error message

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 64,
        val_split: float = 0.1,
        seed: int = 42,
        download: bool = True,
        num_workers: int = 0,
        augment: list[nn.Module] | None = None,
        transforms: list[nn.Module] | None = None,
        predict_dir: str | None = None,
    ) -> None:
        super().__init__()
        if not (0 < val_split < 1 or (val_split >= 1 and float(val_split).is_integer())):
            raise DataError(f"val_split={val_split}: give a fraction of the training set (0 < f < 1) or a whole number of images.")
        if batch_size < 1 or num_workers < 0:
            raise DataError(
                f"batch_size={batch_size}, num_workers={num_workers}: give at least 1 image per batch, and 0 (load in "
                "the training process, the fast path for sets held in memory) or more worker processes."
            )
        self.save_hyperparameters(ignore=["augment", "transforms"])
        self.data_dir = Path(data_dir).expanduser()
        self.augment = nn.Sequential(*(augment or []))
        self.transforms = nn.Sequential(*(transforms or []))
        self.input_shape = self._input_shape()
        self.held_out: dict[str, Any] | None = None  # how validation was drawn from the training images, or that it was not

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # ---- what a task implements -------------------------------------------------------------
    def expected_files(self) -> list[Path]:
        """The files that must exist before ``load`` can read the data."""
        raise NotImplementedError

    def download_files(self) -> None:
        """Fetch the files into ``data_dir`` (tasks without a download leave this as it is)."""

    def load(self, split: str) -> tuple[Tensor, Tensor] | None:
        """Read ``split`` ('train' or 'test') as uint8 images (N, C, H, W) and int64 labels.
        None for 'test' means the set has no labelled test split: testing uses the validation split."""
        raise NotImplementedError

    def load_validation(self) -> tuple[Tensor, Tensor] | None:
        """A validation set the dataset ships; None carves one from the training set (``val_split``)."""
        return None

    def default_predict_dir(self) -> Path | None:
        """The folder ``predict`` reads when ``predict_dir`` is not set; None predicts on the test split."""
        return None

    # ---- shared behaviour --------------------------------------------------------------------
    def _input_shape(self) -> tuple[int, ...]:
        return tuple(self.transforms(torch.zeros(1, *self.image_shape)).shape[1:])

    def _check_augment_size(self) -> None:
        """Training only: validate, test and predict never run augment (a config's crop may not fit another size there)."""
        shape = self.input_shape
        trained_on = tuple(self.transforms(self._augment(torch.zeros(1, *self.image_shape))).shape[1:])
        if trained_on != shape:
            raise DataError(
                f"augment turns {self.task} images into {trained_on} but evaluation images are {shape}: give augment's "
                f"crop or resize the evaluation size, {shape[-2]}x{shape[-1]} (in the config's data.augment; folder sets "
                "read images at data.image_size), or add a crop or resize to `transforms` so both reach the network "
                "at the same size."
            )

    def missing_files(self) -> list[Path]:
        return [path for path in self.expected_files() if not path.exists()]

    def found_nearby(self) -> Path | None:
        """For a data_dir that exists but lacks the files: a folder up to 3 above it, or one inside it, that holds every
        expected file. The usual slip is pointing at the dataset's own folder (``MNIST/``, ``cifar-10-batches-py/``,
        a folder set's ``train/``) instead of the one that holds it."""
        layouts = self.layouts()
        if not layouts or not self.data_dir.is_dir():
            return None
        inside = sorted(p for p in self.data_dir.iterdir() if p.is_dir())
        holds = lambda folder: any(all((folder / p).exists() for p in layout) for layout in layouts)  # noqa: E731
        return next((folder for folder in [*self.data_dir.resolve().parents[:3], *inside] if holds(folder)), None)

    def layouts(self) -> list[list[Path]]:
        """What a data_dir holds in each layout the task reads, relative to it (for ``found_nearby``)."""
        expected = self.expected_files()
        if not expected or not all(path.is_relative_to(self.data_dir) for path in expected):
            return []  # nothing expected, or some of it elsewhere (a test_dir of its own)
        return [[path.relative_to(self.data_dir) for path in expected]]

    def _refuse_a_misplaced_data_dir(self) -> None:
        """A data_dir that is a file (most often the downloaded archive itself), or one that misses the files by a
        level: said as such, and before any download, which would put a second copy in the wrong place."""
        if self.data_dir.is_file():
            archive = self.data_dir.name.lower().endswith((".zip", ".tar", ".gz", ".tgz", ".xz", ".bz2"))
            how = "extract it, then point --data.data_dir at the folder it makes" if archive else "point --data.data_dir at the folder that holds the data"
            raise DataNotFoundError(f"{self.task}: data_dir {self.data_dir} is a file, not a folder: {how}.")
        if (found := self.found_nearby()) is not None:
            raise DataNotFoundError(
                f"{self.task}: data not found in {self.data_dir.resolve()}, but {found} holds every file it needs: "
                f"use --data.data_dir {found}"
            )

    def _check_files(self, download_error: Exception | None = None) -> None:
        missing = self.missing_files()
        if not missing:
            return
        self._refuse_a_misplaced_data_dir()
        listing = "\n".join(f"  {path}" for path in missing)
        why = f"\nDownloading failed: {download_error}" if download_error else ""
        where = f"\nGet the data from {self.source}" if self.source else ""
        raise DataNotFoundError(
            f"{self.task}: data not found in {self.data_dir.resolve()}. Missing:\n{listing}{why}{where}\n"
            "Put the files there, or point to them with --data.data_dir PATH."
        )

    def predicting_a_folder(self) -> bool:
        return self.trainer is not None and self.trainer.predicting and self.predict_folder() is not None

    def predict_folder(self) -> Path | None:
        return Path(self.hparams.predict_dir).expanduser() if self.hparams.predict_dir else self.default_predict_dir()

    def prepare_data(self) -> None:
        """Download on one process if files are missing; stop with a clear message if that fails."""
        if self.predicting_a_folder():
            return
        error = None
        if self.missing_files() and self.hparams.download:
            self._refuse_a_misplaced_data_dir()
            try:
                self.download_files()
            except Exception as exc:  # no network, a moved mirror...: report it with the missing files
                error = exc
        self._check_files(error)

    def setup(self, stage: str) -> None:
        if stage == "predict" and self.predicting_a_folder():
            self._setup_predict_folder()
            return
        self._check_files()
        if stage == "fit":
            self._check_augment_size()
        if stage in ("fit", "validate") and not hasattr(self, "train_set"):
            images, labels = self._checked(*self._readable("train"), split="train")
            shipped = self._readable("validation")
            if shipped is not None:
                self.held_out = {"validation_folder": True}  # every training image trains
                self.train_set = InMemoryImages(images, labels)
                self.val_set = InMemoryImages(*self._checked(*shipped, split="validation"))
            else:
                split, seed = self.hparams.val_split, self.hparams.seed
                train, val = grouped_split(labels, self.file_keys(len(labels)), split, seed)
                self.held_out = {"val_split": split, "seed": seed, "pool": len(labels), "validation": len(val)}
                if len(train) == 0:
                    raise DataError(
                        f"{self.task}: val_split={split} takes all {len(labels)} training images for "
                        "validation. Leave some for training: a fraction below 1, or fewer images."
                    )
                self.train_set = InMemoryImages(images, labels, train)
                self.val_set = InMemoryImages(images, labels, val)
            # A seeded mixed order, not class by class as folders list them: validation limited to its first batches
            # (trainer.limit_val_batches) then sees every class, instead of one and an accuracy of 0 or 1.
            mixed = torch.randperm(len(self.val_set), generator=torch.Generator().manual_seed(self.hparams.seed))
            self.val_set.index = self.val_set.index[mixed]
        if stage in ("test", "predict") and not hasattr(self, "test_set"):
            loaded = self._readable("test")
            if loaded is None:
                rank_zero_only(print)(f"{self.task}: no labelled test split; test and predict use the validation split.")
                self.setup("validate")  # the splits, without training's checks
                self.test_set = self.val_set
            else:
                self.test_set = InMemoryImages(*self._checked(*loaded, split="test"))

    def _readable(self, split: str) -> tuple[Tensor, Tensor] | None:
        """``load`` (or ``load_validation``), where a file no reader can take (a download cut short, another format)
        is reported with the task's files and how to get them again, instead of the reader's traceback."""
        try:
            return self.load_validation() if split == "validation" else self.load(split)
        except (DataError, MemoryError):
            raise
        except Exception as exc:  # each reader (torchvision's, pickle, scipy's .mat) fails its own way
            files = "\n  ".join(str(path) for path in self.expected_files())
            where = f" from {self.source}" if self.source else ""
            raise DataError(
                f"{self.task}: cannot read its {split} data in {self.data_dir} ({type(exc).__name__}: {exc}). A file is "
                f"damaged or incomplete (a download cut short?). Its files:\n  {files}\nDelete the damaged one and run "
                f"again with --data.download true, or get it again{where}."
            ) from exc

    def state_dict(self) -> dict[str, Any]:
        """Kept in every checkpoint: how validation was drawn from the training images, or that it came from a folder."""
        return {"held_out": self.held_out} if self.held_out else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A checkpoint evaluated, or trained on, with validation drawn another way (another val_split or seed, other
        training images) would be judged on images it trained on: refused, with the checkpoint's settings."""
        saved, now = state.get("held_out"), self.held_out
        stage = self.trainer.state.fn if self.trainer is not None else None
        tests_on_validation = getattr(self, "test_set", None) is getattr(self, "val_set", 0)
        on_validation = stage in (TrainerFn.FITTING, TrainerFn.VALIDATING) or tests_on_validation
        if not (saved and now and on_validation) or "validation_folder" in now:
            return
        if "validation_folder" in saved:
            raise DataError(
                f"the checkpoint trained on all of its training images (its validation images came from a folder of "
                f"their own); this run draws {now['validation']} validation images from the {now['pool']} training images "
                "(its validation folder is missing, or val_dir was changed), so it would be judged on images it trained "
                "on. Give the validation folder with --data.val_dir; other labelled images are evaluated with "
                "`test --data.test_dir DIR`."
            )
        if all(saved[k] == now[k] for k in ("seed", "pool", "validation")):
            return
        raise DataError(
            f"the checkpoint's validation images were drawn from its {saved['pool']} training images (val_split "
            f"{saved['val_split']}, seed {saved['seed']}: {saved['validation']} images); this run draws "
            f"{now['validation']} of {now['pool']} with seed {now['seed']}, so its validation split would hold images the "
            f"checkpoint trained on. Use --data.val_split {saved['val_split']} --data.seed {saved['seed']} with the same "
            "training images; other labelled images are evaluated with `test --data.test_dir DIR` (folder sets)."
        )

    def file_keys(self, n: int) -> list[str] | None:
        """One key per training image; images with equal keys (identical files) stay on one side of the split.
        None: no two training images are the same file."""
        return None

    def _setup_predict_folder(self) -> None:
        folder = self.predict_folder()
        if not folder.exists():
            raise DataNotFoundError(
                f"predict_dir {folder}: no such folder or file. Point --data.predict_dir at a folder of images, or one image."
            )
        paths = [folder] if folder.is_file() else list_images(folder)
        if not paths:
            raise DataError(f"predict_dir {folder}: no image files in it.")
        images, kept, _, problems = read_images(paths, self.image_shape, resize=True, on_bad_image="skip")
        if not kept:
            raise DataError(f"predict_dir {folder}: none of its {len(paths)} image files could be read:\n  " + "\n  ".join(problems))
        report_skipped(problems, folder)
        self.predict_paths = [str(paths[i]) for i in kept]
        # Each image's place among all the folder's image files, unreadable ones included (Kaggle's Id).
        self.predict_ids, self.predict_file_count = list(kept), len(paths)
        self.predict_set = InMemoryImages(images, torch.full((len(kept),), -1))

    def _checked(self, images: Tensor, labels: Tensor, split: str) -> tuple[Tensor, Tensor]:
        where = f"{self.task} {split} data in {self.data_dir}"
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != self.image_shape:
            raise DataError(f"{where}: images are {images.dtype} {tuple(images.shape[1:])}, expected uint8 {self.image_shape}.")
        if len(labels) == 0:
            raise DataError(f"{where}: no images (unreadable files, if any, are listed above with why). "
                            "Replace them, or point data_dir at the right folder.")
        if len(images) != len(labels):
            raise DataError(f"{where}: {len(images)} images but {len(labels)} labels.")
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise DataError(f"{where}: labels span {int(labels.min())}..{int(labels.max())}, expected 0..{self.num_classes - 1}.")
        return images, labels.long()

    def _loader(self, dataset: InMemoryImages, loader: type[DataLoader] = DataLoader, **extra: Any) -> DataLoader:
        workers = self.hparams.num_workers
        return loader(
            dataset,
            batch_size=self.hparams.batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.trainer is not None and isinstance(self.trainer.accelerator, CUDAAccelerator),
            collate_fn=keep_batch,
            **extra,
        )

    def _evaluation_loader(self, dataset: InMemoryImages, split: str) -> DataLoader:
        """Under DDP each process evaluates its own share, every image exactly once, so the synchronised metrics
        equal one process's. (Lightning's default sampler would pad the last share with repeated images, counted
        twice; shares that differ by one image are safe here, as evaluation makes no collective call per batch.)"""
        processes, rank = self._processes()
        if processes == 1:
            return self._loader(dataset)
        if len(dataset) < processes:
            raise DataError(
                f"{self.task}: the {split} set has {len(dataset)} image(s), fewer than the {processes} processes, and "
                "every process needs at least one. Use fewer devices (--trainer.devices) or a larger set."
            )
        sampler = UnrepeatedDistributedSampler(dataset, num_replicas=processes, rank=rank, shuffle=False)
        return self._loader(dataset, sampler=sampler)

    def _processes(self) -> tuple[int, int]:
        """(number of processes, this one's rank): each takes its own share of every split under DDP."""
        return (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)

    def train_dataloader(self) -> DataLoader:
        sampler = EpochSampler(self.train_set, self.hparams.seed, *self._processes())  # Lightning sets its epoch
        # A last batch of one image would stop BatchNorm in training ("Expected more than 1 value per channel").
        drop_last = len(sampler) % self.hparams.batch_size == 1
        return self._loader(
            self.train_set, ResumableLoader, sampler=sampler, drop_last=drop_last, trained_batches=self._trained_batches
        )

    def _trained_batches(self) -> tuple[int, int]:
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return self.trainer.current_epoch, progress.processed

    def val_dataloader(self) -> DataLoader:
        return self._evaluation_loader(self.val_set, "validation")

    def test_dataloader(self) -> DataLoader:
        return self._evaluation_loader(self.test_set, "test")

    def predict_dataloader(self) -> DataLoader:
        if hasattr(self, "predict_set"):
            return self._evaluation_loader(self.predict_set, "predict_dir")
        return self._evaluation_loader(self.test_set, "test")

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        images, labels = batch
        x = images.float().div_(255)
        if self.trainer is None:
            return self.transforms(x), labels
        if self.trainer.training:
            x = self._augment(x)
        # Lightning converts a batch to the precision's dtype (64-true, 16-true...) before this hook, when it is uint8.
        return self.trainer.precision_plugin.convert_input(self.transforms(x)), labels

    def _augment(self, x: Tensor) -> Tensor:
        for module in self.augment:
            if type(module).__module__.startswith("torchvision.transforms"):  # one random draw per call
                x = torch.stack([module(image) for image in x])
            else:  # a batch augmentation: its own draw for every image, in one call
                x = module(x)
        return x

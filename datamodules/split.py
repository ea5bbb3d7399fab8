"""The validation split: which training images validate, and whether a checkpoint's split is this run's."""

import torch
from torch import Tensor

from datamodules.errors import DataError


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


def refuse_another_split(saved: dict, now: dict) -> None:
    """``saved``, ``now``: how a checkpoint and this run held out their validation images (a DataModule's
    ``held_out``). Validation drawn another way (another val_split or seed, other training images) would judge
    the checkpoint on images it trained on: refused, with the checkpoint's settings."""
    if "validation_folder" in now:
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

"""Training-time augmentation as the configs ask for it, side by side in one run, through the DataModule's own
path (``on_after_batch_transfer``) on each augmented config's batch size and stored image size:
(a) torchvision's transforms, which draw once per call and so run image by image (the configs before);
(b) kornia's batch augmentations, which draw per image and transform the whole batch in one call (the configs now).

    python benchmarks/augment.py [--device cuda]
"""

import argparse
import time
from pathlib import Path
from statistics import median

import torch
import yaml
from lightning.pytorch.cli import instantiate_class
from lightning.pytorch.plugins.precision import Precision
from torchvision.transforms import v2

ROOT = Path(__file__).resolve().parents[1]
REPEATS = 30

# (a): the same augmentations in torchvision, as each config wrote them before it moved to kornia.
TORCHVISION = {
    "svhn": [v2.RandomCrop(28), v2.RandomRotation([-30, 30])],
    "food11": [v2.RandomHorizontalFlip(), v2.RandomResizedCrop(128, scale=(0.6, 1.0), antialias=True), v2.RandomRotation([-15, 15])],
    "mask": [v2.RandomHorizontalFlip(), v2.RandomResizedCrop(160, scale=(0.7, 1.0), antialias=True), v2.ColorJitter(0.2, 0.2, 0.2)],
    "catdog": [v2.RandomResizedCrop(224, scale=(0.5, 1.0), antialias=True), v2.RandomHorizontalFlip()],
}


def datamodule(task: str, augment: list | None, device: str):
    """The task's DataModule as its config builds it, with ``augment`` in place of the config's (None: the config's
    own), and a batch for it."""
    data = yaml.safe_load((ROOT / "configs" / f"{task}.yaml").read_text())["data"]
    settings = {k: v for k, v in data["init_args"].items() if k not in ("augment", "transforms", "data_dir")}
    if "image_size" in settings:
        settings["classes"] = ["a", "b"]  # folder sets: no files needed to build the module
    transforms = [instantiate_class((), spec) for spec in data["init_args"].get("transforms") or []]
    if augment is None:
        augment = [instantiate_class((), spec) for spec in data["init_args"]["augment"]]
    dm = instantiate_class((), {"class_path": data["class_path"], "init_args": {**settings, "augment": augment, "transforms": transforms}})

    class Training:  # stands in for the trainer: augmentation runs while training
        training = True
        precision_plugin = Precision()  # 32-true: batches stay float32

    dm.trainer = Training()
    images = torch.randint(0, 256, (settings["batch_size"], *dm.image_shape), dtype=torch.uint8, device=device)
    return dm, (images, torch.zeros(len(images), dtype=torch.long, device=device))


def timed(dm, batch, device: str) -> float:
    start = time.perf_counter()
    dm.on_after_batch_transfer(batch, 0)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    device = parser.parse_args().device
    print(f"Medians of {REPEATS} batches each, (a) and (b) interleaved, on {device}:")
    print(f"{'config':8}{'batch (uint8, as stored)':>28}{'(a) torchvision':>18}{'(b) kornia':>12}{'a/b':>7}")
    for task, torchvision_augment in TORCHVISION.items():
        (dm_a, batch), (dm_b, _) = datamodule(task, torchvision_augment, device), datamodule(task, None, device)
        timed(dm_a, batch, device), timed(dm_b, batch, device)  # warm-up
        a, b = zip(*[(timed(dm_a, batch, device), timed(dm_b, batch, device)) for _ in range(REPEATS)])
        a, b = median(a), median(b)
        print(f"{task:8}{str(tuple(batch[0].shape)):>28}{1000 * a:>15.1f} ms{1000 * b:>9.1f} ms{a / b:>7.1f}")


if __name__ == "__main__":
    main()

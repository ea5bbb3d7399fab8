"""The decoded-image disk cache: a first run (decode and build) against a later run (mapped from disk).

    python benchmarks/folder_cache.py --data-dir PATH/TO/cats_and_dogs_filtered

Each run builds the DataModule from scratch, sets it up and passes once over every training batch
with its device-side augmentation, as an epoch feeds the network (no network, to isolate the data).
"""

import argparse
import shutil
import tempfile
import time

import kornia.augmentation as K
from lightning.pytorch.plugins.precision import Precision

from datamodules import CatsDogs


def one_run(data_dir: str, cache_dir: str, image_size: int) -> tuple[float, float]:
    start = time.perf_counter()
    data = CatsDogs(
        data_dir=data_dir, val_dir="validation", image_size=image_size, cache_dir=cache_dir, batch_size=64,
        augment=[K.RandomResizedCrop((image_size, image_size), scale=(0.5, 1.0)), K.RandomHorizontalFlip()],  # as configs/catdog.yaml
    )
    data.setup("fit")
    ready = time.perf_counter() - start

    class Training:  # stands in for the trainer, so augmentation runs as in a training epoch
        training = True
        precision_plugin = Precision()  # 32-true: batches stay float32
        current_epoch = 0  # the training sampler draws its order from the epoch

    loader = data.train_dataloader()
    data.trainer = Training()
    start = time.perf_counter()
    for batch in loader:
        data.on_after_batch_transfer(batch, 0)
    return ready, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    cache = tempfile.mkdtemp(prefix="folder-cache-")
    try:
        cold_setup, cold_epoch = one_run(args.data_dir, cache, args.image_size)
        warm_setup, warm_epoch = one_run(args.data_dir, cache, args.image_size)
    finally:
        shutil.rmtree(cache)
    print(f"{'':34}{'first run':>12}{'later run':>12}{'ratio':>8}")
    print(f"{'set-up: decode / map the cache (s)':34}{cold_setup:>12.1f}{warm_setup:>12.1f}{cold_setup / warm_setup:>8.1f}")
    print(f"{'one epoch of augmented batches (s)':34}{cold_epoch:>12.1f}{warm_epoch:>12.1f}{cold_epoch / warm_epoch:>8.1f}")
    first, later = cold_setup + cold_epoch, warm_setup + warm_epoch
    print(f"{'first epoch vs a later run (s)':34}{first:>12.1f}{later:>12.1f}{first / later:>8.1f}")


if __name__ == "__main__":
    main()

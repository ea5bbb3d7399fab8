"""The exported ONNX and TorchScript files against the checkpoint in PyTorch, over a real test split: top-1 agreement,
the largest probability difference, and each one's CPU latency on one image at a time. Exits 1 past the tolerances.

    python benchmarks/export_parity.py --config configs/mask_strong.yaml --ckpt_path best --data.data_dir PATH

Every option but this script's own goes to ``python cli.py export`` (the config, --ckpt_path, data and model settings).
PyTorch's probabilities are computed as ``predict`` computes them: the data module's transforms, then the network.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, as `python benchmarks/...`

from benchmarks.process_tuning import cpu_model  # noqa: E402
from cli import main as cli_main  # noqa: E402
from modules import export as exporting  # noqa: E402


def latency_ms(run, images: np.ndarray, count: int) -> float:
    """The median milliseconds of ``run`` on one image, over ``count`` images, after two warm-up runs."""
    for image in images[:2]:
        run(image[None])
    times = []
    for image in images[:count]:
        start = time.perf_counter()
        run(image[None])
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-agreement", type=float, default=0.999, help="the least share of equal top-1 classes")
    parser.add_argument("--max-difference", type=float, default=1e-4, help="the largest probability difference allowed")
    parser.add_argument("--latency-images", type=int, default=50, help="images timed one at a time, per runtime")
    ours, cli_args = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        files = {fmt: Path(folder) / f"model{suffix}" for fmt, suffix in exporting.SUFFIXES.items()}
        cli = cli_main(["export", *cli_args, "--format", "onnx", "--output", str(files["onnx"])])
        model, data = cli.model.eval(), cli.datamodule
        exporting.export(model, data, cli.config.export.ckpt_path, "torchscript", str(files["torchscript"]))
        data.setup("test")
        images = data.test_set.images  # the split's images, uint8 (N, C, H, W)

        def pytorch(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                x = data.transforms(torch.from_numpy(batch).float() / 255)  # what `predict` computes, TTA included
                return model.evaluate(x).float().softmax(dim=1).numpy()

        runtimes = {"pytorch": pytorch} | {fmt: exporting.load_exported(str(path))[0] for fmt, path in files.items()}
        batches = np.array_split(images.numpy(), max(1, len(images) // 32))
        expected = np.concatenate([pytorch(batch) for batch in batches])
        print(f"{len(images)} test images of {data.task}, {cli.config.export.ckpt_path}; {cpu_model()}, "
              f"{torch.get_num_threads()} threads, PyTorch {torch.__version__}")
        print(f"{'runtime':<12} {'top-1 agreement':>16} {'max prob diff':>14} {'ms/image (batch 1)':>19}")
        failed = False
        for name, run in runtimes.items():
            agree, largest = exporting.differences(expected, np.concatenate([run(batch) for batch in batches]))
            ms = latency_ms(run, images.numpy(), ours.latency_images)
            print(f"{name:<12} {agree:>16.4%} {largest:>14.2e} {ms:>19.2f}")
            failed |= agree < ours.min_agreement or largest > ours.max_difference
    if failed:
        print(f"FAILED: an exported model agrees on fewer than {ours.min_agreement:.1%} of top-1 classes or differs by "
              f"more than {ours.max_difference:g} in probability.")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())

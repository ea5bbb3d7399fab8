"""How fast this machine trains ``AirbenchNet`` (cifar10_strong's network), side by side in one run: training images/s
and the arithmetic rate it reaches (GFLOP/s, counted by torch's FlopCounterMode) for each width and precision, and how
many CIFAR-10 epochs of each fit in a time budget. It says, before a 45-minute run, which width a CPU can afford:

    python benchmarks/airbench_speed.py                          # 20 s a variant, 45-minute budget
    python benchmarks/airbench_speed.py --seconds 60 --precision 32-true bf16-mixed --compile

Synthetic batches (a real cifar10_strong run trained at 272-297 images/s where this printed 280-288 for its half
width); the epochs column counts training alone, not reading, validation or the test. Run it on a quiet machine.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, as `python benchmarks/...`

from benchmarks.process_tuning import cpu_model  # noqa: E402
from modules.nets.airbench import AirbenchNet  # noqa: E402

WIDTHS = {"half": (32, 128, 128), "three-quarters": (48, 192, 192), "full": (64, 256, 256)}  # full: airbench94's
TRAIN_IMAGES = 49_000  # cifar10_strong trains on 50,000 less its 1,000 validation images


def training_step(net: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor,
                  precision: str) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
        loss = nn.functional.cross_entropy(net(images), labels, label_smoothing=0.2)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def measure(widths: tuple[int, int, int], precision: str, compiled: bool, batch_size: int,
            seconds: float) -> tuple[float, float]:
    """(training images/s, GFLOP/s) over ``seconds`` of steps after two warm-up steps (compilation's, if compiled).
    FLOPs are counted on the uncompiled network: compiled kernels are not seen by the counter."""
    torch.manual_seed(0)
    images = torch.randn(batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch_size,))
    net = AirbenchNet(10, widths=widths).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.85, nesterov=True)
    with FlopCounterMode(display=False) as counter:
        training_step(net, optimizer, images, labels, precision)
    if compiled:
        net.compile()
    for _ in range(2):
        training_step(net, optimizer, images, labels, precision)
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        training_step(net, optimizer, images, labels, precision)
        steps += 1
    elapsed = time.perf_counter() - started
    return steps * batch_size / elapsed, counter.get_total_flops() * steps / elapsed / 1e9


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20, help="timed training per variant")
    parser.add_argument("--batch_size", type=int, default=512, help="cifar10_strong's")
    parser.add_argument("--precision", nargs="+", default=["32-true"], choices=["32-true", "bf16-mixed"])
    parser.add_argument("--budget_minutes", type=float, default=45, help="what the epochs column fits in")
    parser.add_argument("--widths", nargs="+", default=list(WIDTHS), choices=list(WIDTHS))
    parser.add_argument("--compile", action="store_true", help="each variant also under torch.compile")
    args = parser.parse_args(argv)
    print(f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}, batch {args.batch_size}, "
          f"channels_last, {args.seconds:g} s each")
    fits = f"epochs in {args.budget_minutes:g} min"  # of training alone
    print(f"{'width':<15} {'precision':<11} {'compiled':<9} {'images/s':>9} {'GFLOP/s':>8} {fits:>16}")
    for name in args.widths:
        for precision in args.precision:
            for compiled in (False, True) if args.compile else (False,):
                rate, gflops = measure(WIDTHS[name], precision, compiled, args.batch_size, args.seconds)
                epochs = rate * args.budget_minutes * 60 / TRAIN_IMAGES
                print(f"{name:<15} {precision:<11} {'yes' if compiled else 'no':<9} {rate:9.0f} {gflops:8.1f} {epochs:16.1f}",
                      flush=True)


if __name__ == "__main__":
    main()

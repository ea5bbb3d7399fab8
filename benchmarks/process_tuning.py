"""Side by side, in one run: CPU training steps with and without each setting of ``modules/process.py``.

    python benchmarks/process_tuning.py [--rounds 4] [--steps 30]

Each setting is process-wide (glibc's malloc thresholds, an environment variable torch reads at every CUDA check),
so each variant trains in a fresh process: MNIST's SmallCNN as configs/mnist.yaml builds it (channels 16, 32;
batch 256; Adam; channels_last) on random uint8 images of MNIST's shape, converted and normalised every step as
the DataModule does. Lightning is imported first, as in every run (its import sets PYTORCH_NVML_BASED_CUDA_CHECK).
The variants alternate, in a rotated order each round, so that each meets the same moments of a busy machine.
Printed per variant: each process's median step time, its median and best over the rounds (on a shared machine the
best is the least disturbed), and the median of the processes' minor page faults over their timed steps.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 5  # steps before the timing starts
VARIANTS = {  # name: the modules.process functions the process calls
    "none": [],
    "keep_freed_memory": ["keep_freed_memory"],
    "skip_absent_nvml": ["skip_absent_nvml"],
    "both (tune_the_process)": ["keep_freed_memory", "skip_absent_nvml"],
}


def train(variant: str, steps: int) -> dict:
    """In a fresh process: the variant's settings, then WARMUP + ``steps`` training steps."""
    import lightning  # noqa: F401  (sets PYTORCH_NVML_BASED_CUDA_CHECK=1, as in every run)
    import torch
    from torch import nn

    from modules import process
    from modules.nets import SmallCNN

    for name in VARIANTS[variant]:
        getattr(process, name)()
    torch.manual_seed(0)
    net = SmallCNN(10, channels=(16, 32)).to(memory_format=torch.channels_last)
    optimizer, loss_fn = torch.optim.Adam(net.parameters(), lr=1e-3), nn.CrossEntropyLoss(label_smoothing=0.1)
    images = torch.randint(0, 256, (WARMUP + steps, 256, 1, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (WARMUP + steps, 256))
    times, faults = [], 0
    for i in range(WARMUP + steps):
        if i == WARMUP:
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        x = images[i].float().div_(255).sub_(0.5).div_(0.5).contiguous(memory_format=torch.channels_last)
        loss = loss_fn(net(x), labels[i])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {"step_ms": 1000 * median(times[WARMUP:]), "faults": faults}


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "unknown CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4, help="runs of each variant (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps a run (default: %(default)s)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(train(args.child, args.steps)))
        return
    # The user's own malloc settings would make keep_freed_memory step aside: every variant runs without them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env = {**env, "PYTHONPATH": str(ROOT)}
    env.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)  # Lightning's import sets it in each process
    names, results = list(VARIANTS), {name: [] for name in VARIANTS}
    load_before = os.getloadavg()[0]
    for round_ in range(args.rounds):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            command = [sys.executable, __file__, "--child", name, "--steps", str(args.steps)]
            out = subprocess.run(command, capture_output=True, text=True, check=True, env=env, cwd=ROOT).stdout
            results[name].append(json.loads(out.splitlines()[-1]))
            print(f"round {round_ + 1}: {name:24} {results[name][-1]['step_ms']:7.2f} ms, {results[name][-1]['faults']} faults",
                  flush=True)
    load = (load_before + os.getloadavg()[0]) / 2
    print(f"\n{cpu_model()}, {os.cpu_count()} CPU cores, load average {load:.1f} (other processes share them)")
    print(f"SmallCNN (16, 32), batch 256, Adam, {args.steps} timed steps a process, {args.rounds} processes a variant")
    print(f"{'step (ms), against none:':26}{'median':>18}{'best':>18}{'page faults':>14}")
    steps = {name: sorted(r["step_ms"] for r in runs) for name, runs in results.items()}
    for name, times in steps.items():
        figures = [(f(times), f(steps["none"])) for f in (median, min)]
        shown = "".join(f"{step:10.2f} ({100 * (step / base - 1):+4.0f}%)" for step, base in figures)
        print(f"{name:26}{shown}{median(r['faults'] for r in results[name]):14.0f}")


if __name__ == "__main__":
    main()

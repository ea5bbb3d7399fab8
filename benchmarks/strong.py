"""A strong recipe's figures, end to end: ``cli.py fit --test_after_fit true`` in a process of its own, timed from
start to exit, then its test accuracy, the epoch and time at which validation accuracy first reached ``--target``
(read from the run's TensorBoard events), and the CPU it ran on. The README's strong figures come from here.

    python benchmarks/strong.py --config configs/cifar10_strong.yaml --target 0.90 --data.data_dir PATH
    python benchmarks/strong.py --config configs/mnist_strong.yaml --target 0.995 --data.data_dir PATH

Every option but this script's own goes to ``python cli.py fit`` (data_dir, weights files, overrides). Run it on a quiet
machine: another process on the same cores slows a CPU run several-fold.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere, as `python benchmarks/...`

from benchmarks.process_tuning import cpu_model  # noqa: E402


def read_run(run_folder: Path, target: float) -> tuple[float | None, tuple[int, float] | None]:
    """The run's ``test/acc`` (None if it did not test), and (epoch, seconds since the run's first logged value) at
    which ``val/acc`` first reached ``target`` (None if it never did), from its TensorBoard events."""
    events = EventAccumulator(str(run_folder), size_guidance={"scalars": 0}).Reload()
    tags = events.Tags()["scalars"]
    test = events.Scalars("test/acc")[-1].value if "test/acc" in tags else None
    start = min(event.wall_time for tag in tags for event in events.Scalars(tag))
    epochs = {e.step: e.value for e in events.Scalars("epoch")} if "epoch" in tags else {}
    reached = next(((int(epochs.get(e.step, -1)), e.wall_time - start) for e in events.Scalars("val/acc") if e.value >= target)
                   if "val/acc" in tags else iter(()), None)
    return test, reached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="configs/<task>_strong.yaml")
    parser.add_argument("--target", type=float, default=0.9, help="the validation accuracy whose first epoch is timed")
    parser.add_argument("--logs", help="where the run folder goes (default: a temporary folder)")
    ours, fit_args = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory() as temporary:
        logs = Path(ours.logs or temporary)
        command = [sys.executable, str(ROOT / "cli.py"), "fit", "--config", ours.config, "--test_after_fit", "true",
                   "--trainer.logger.init_args.save_dir", str(logs), "--progress_bar.refresh_rate", "20", *fit_args]
        started = time.perf_counter()
        done = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        output = done.stdout + done.stderr
        if done.returncode != 0:
            print(output[-4000:])
            return done.returncode
        folder = max(logs.glob("*/version_*"), key=lambda p: p.stat().st_mtime)
        accuracy, reached = read_run(folder, ours.target)
    if accuracy is None:
        print(f"error: the run in {folder} logged no test/acc (validation or checkpointing switched off?).")
        return 1
    print(f"{Path(ours.config).name}: test accuracy {accuracy:.2%}, {seconds / 60:.1f} min end to end "
          f"(fit, test, data reading, start-up); {cpu_model()}, {os.cpu_count()} cores")
    if reached is None:
        print(f"validation accuracy never reached {ours.target:.2%}")
    else:
        print(f"validation accuracy first reached {ours.target:.2%} after epoch {reached[0]}, {reached[1] / 60:.1f} min "
              "after the run's first logged value")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Side by side, in one run on one machine: the course's plain PyTorch loop against ``cli.py``.

    python benchmarks/compare.py --data-dir PATH/TO/mnist

(a) ``benchmarks/course_loop.py``: the loop as the course notebooks write it (per-sample PIL transforms).
(b) ``cli.py fit`` then ``cli.py test --ckpt_path best``, from process start to the final test.
Each runs in its own process; wall time, training images per second, peak memory (that process's
max RSS) and test accuracy are printed for both, with the ratio b/a.

Then the Lightning-overhead pair: the same network, optimizer, batches, device-side transforms (this
project's DataModule) and per-step metric update, for one epoch, by a hand-written loop and by
``Trainer.fit`` (its training loop timed by Lightning's ``Timer``; logger, checkpoints and validation
off), so the ratio isolates what Lightning itself costs per epoch.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(command: list[str], log: Path) -> tuple[float, float, str]:
    """Run ``command``; return its wall seconds, its peak RSS in MiB, and its output."""
    start = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    output = log.read_text()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(command)} failed; see {log}:\n{output[-2000:]}")
    return wall, usage.ru_maxrss / 1024, output


def overhead(data_dir: str, batches: int | None, repeats: int = 3) -> dict[str, float]:
    """One epoch (or ``batches`` steps) of the same work, by hand and by Lightning; seconds each."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import Timer

    from datamodules import MNIST
    from modules import ClassifierModule
    from modules.nets import SmallCNN
    from torchvision.transforms import v2

    def parts():
        L.seed_everything(0, verbose=False)
        data = MNIST(data_dir=data_dir, batch_size=128, download=False, transforms=[v2.Normalize([0.5], [0.5])])
        data.setup("fit")
        net = partial(SmallCNN, channels=(16, 32))
        model = ClassifierModule(net=net, class_names=data.class_names, optimizer=partial(torch.optim.Adam, lr=1e-3))
        return data, model

    def hand_loop(steps: int) -> float:
        data, model = parts()
        optimizer = model.configure_optimizers()
        model.train()
        loading = 0.0
        start = time.perf_counter()
        batches = iter(data.train_dataloader())
        for _ in range(steps):
            fetched = time.perf_counter()
            images, labels = data.on_after_batch_transfer(next(batches), 0)
            loading += time.perf_counter() - fetched
            logits = model(images)
            loss = model.loss(logits, labels)
            model.train_acc(logits, labels)  # the same per-step work as ClassifierModule.training_step
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return time.perf_counter() - start, loading

    def lightning_loop(steps: int) -> float:
        data, model = parts()
        timer = Timer()  # Lightning's own: the training loop alone, without the one-off set-up of fit
        trainer = L.Trainer(
            max_epochs=1, limit_train_batches=steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0,
            callbacks=[timer],
        )
        trainer.fit(model, datamodule=data)
        return timer.time_elapsed("train")

    hand_loop(20)  # warm-up, untimed: thread pools and oneDNN kernels are set up once per process
    data, _ = parts()
    batches = batches or len(data.train_dataloader())
    hand, by_lightning = [], []
    for _ in range(repeats):  # alternated, and the fastest of each kept: this machine's timing noise is ±20%
        hand.append(hand_loop(batches))
        by_lightning.append(lightning_loop(batches))
    plain, loading = min(hand)
    lightning = min(by_lightning)
    return {"plain_s": plain, "lightning_s": lightning, "loading_s": loading}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="MNIST folder (holding MNIST/raw/*-ubyte)")
    parser.add_argument("--epochs", type=int, default=2, help="for both; configs/mnist.yaml trains 2")
    parser.add_argument("--logs", default="/tmp/benchmark_logs")
    parser.add_argument("--overhead-batches", type=int, default=None, help="default: one epoch")
    args = parser.parse_args()
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    n_train = 60_000

    print(f"(a) course loop, {args.epochs} epochs ...", flush=True)
    wall_a, mem_a, out = run([python, "benchmarks/course_loop.py", "--task", "mnist", "--data-dir", args.data_dir, "--epochs", str(args.epochs)], logs / "course_loop.log")
    summary = json.loads(out.strip().splitlines()[-1])
    epochs = [json.loads(line) for line in out.strip().splitlines()[:-1]]
    best = summary["best_epoch"]
    a = {"wall_s": wall_a, "to_best_s": epochs[best - 1]["elapsed_s"], "img_per_s": n_train * args.epochs / wall_a, "peak_mib": mem_a, "test_acc": summary["best_test_acc"]}

    print(f"(b) cli.py fit + test, {args.epochs} epochs ...", flush=True)
    common = ["--config", "configs/mnist.yaml", "--data.data_dir", args.data_dir, "--trainer.logger.init_args.save_dir", str(logs / "runs")]
    wall_fit, mem_fit, _ = run([python, "cli.py", "fit", *common, "--trainer.max_epochs", str(args.epochs)], logs / "fit.log")
    wall_test, mem_test, out = run([python, "cli.py", "test", *common, "--ckpt_path", "best"], logs / "test.log")
    acc = float(re.search(r"test/acc\s+([\d.]+)", out).group(1))
    b = {"wall_s": wall_fit + wall_test, "to_best_s": wall_fit + wall_test, "img_per_s": n_train * args.epochs / wall_fit, "peak_mib": max(mem_fit, mem_test), "test_acc": acc}

    print("(c) Lightning overhead, one epoch each, three times alternated ...", flush=True)
    c = overhead(args.data_dir, args.overhead_batches)

    print(f"\nMNIST, SmallCNN, {args.epochs} epochs, {os.cpu_count()} CPU cores")
    print(f"{'':28}{'(a) course loop':>18}{'(b) cli.py':>14}{'b/a':>8}")
    rows = [("wall time, start to test (s)", "wall_s", "{:.1f}"), ("time to its best test acc (s)", "to_best_s", "{:.1f}"),
            ("training images / s", "img_per_s", "{:.0f}"), ("peak memory (MiB)", "peak_mib", "{:.0f}"), ("best test accuracy", "test_acc", "{:.4f}")]
    for label, key, fmt in rows:
        print(f"{label:28}{fmt.format(a[key]):>18}{fmt.format(b[key]):>14}{b[key] / a[key]:>8.2f}")
    share = c["lightning_s"] / c["plain_s"] - 1
    print(f"\nSame data path, same steps, fastest of 3: hand loop {c['plain_s']:.2f} s, Lightning {c['lightning_s']:.2f} s: "
          f"Lightning costs {100 * share:+.1f}% of epoch time")
    print(f"Data loading (index the uint8 tensor, to float, transforms): {c['loading_s']:.2f} s of the hand loop's "
          f"{c['plain_s']:.2f} s epoch = {100 * c['loading_s'] / c['plain_s']:.1f}%")


if __name__ == "__main__":
    main()

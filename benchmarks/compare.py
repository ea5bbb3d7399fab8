"""Side by side, in one run on one machine: the course's plain PyTorch loop against ``cli.py``.

    python benchmarks/compare.py --data-dir PATH/TO/mnist

(a) ``benchmarks/course_loop.py``: the loop as the course notebooks write it (per-sample PIL transforms,
    test accuracy after every epoch), with the network, epochs and seed of ``configs/mnist.yaml``.
(b) ``cli.py fit --config configs/mnist.yaml --test_after_fit true``: training, validation, checkpoints,
    TensorBoard pictures and the test of the best checkpoint, in one process.
Each runs in its own process, timed from process start: to the moment its best test accuracy is printed
(for (a) its best epoch's, for (b) the final test's), and to its exit. Printed for both: those times,
training images per second, peak memory and test accuracy, with the ratio b/a. Peak memory
is the max RSS, and that minus "runtime + model": a child process that imports the same libraries and
trains the same network on one synthetic batch, without any dataset.

(c) Lightning's overhead: the same network, optimizer, batches, device-side transforms and per-step metric
updates, trained by ``Trainer.fit`` and by a hand-written loop that takes one step after each of
Lightning's (a callback), so both meet the same moments of a noisy machine. Lightning's epoch time is its
training loop (Lightning's ``Timer``) minus the hand loop's steps inside it.
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

import yaml

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


def run(command: list[str], log: Path) -> tuple[float, float, list[tuple[float, str]]]:
    """Run ``command``; return its wall seconds, its peak RSS in MiB, and its output lines, each with the
    seconds from process start at which it was printed (unbuffered), so a result is timed when it appears."""
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    lines = []
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
        for line in process.stdout:
            lines.append((time.perf_counter() - start, line.rstrip("\n")))
            out.write(line)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(command)} failed; see {log}:\n" + "\n".join(text for _, text in lines[-30:]))
    return wall, usage.ru_maxrss / 1024, lines


def mnist_recipe() -> dict:
    """The settings configs/mnist.yaml trains with, so the comparison follows the config."""
    config = yaml.safe_load((ROOT / "configs" / "mnist.yaml").read_text())
    model, data = config["model"]["init_args"], config["data"]["init_args"]
    return {
        "channels": model["net"]["init_args"]["channels"], "lr": model["optimizer"]["init_args"]["lr"],
        "batch_size": data["batch_size"], "epochs": config["trainer"]["max_epochs"], "seed": config["seed_everything"],
    }


def overhead(data_dir: str, recipe: dict, epochs: int = 3) -> dict:
    """Seconds of training by Lightning and by hand, interleaved step by step, and the hand loop's loading time."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import Timer
    from torchvision.transforms import v2

    from datamodules import MNIST
    from modules import ClassifierModule
    from modules.nets import SmallCNN

    def parts():
        L.seed_everything(recipe["seed"], verbose=False)
        data = MNIST(data_dir=data_dir, batch_size=recipe["batch_size"], download=False, transforms=[v2.Normalize([0.5], [0.5])])
        data.setup("fit")
        net = partial(SmallCNN, channels=tuple(recipe["channels"]))
        model = ClassifierModule(net=net, class_names=data.class_names, optimizer=partial(torch.optim.Adam, lr=recipe["lr"]))
        return data, model

    class HandLoop(L.Callback):
        """The plain loop: one step of its own model after each of Lightning's steps. Keeps, per epoch, the
        epoch's wall time and the hand loop's share of it."""

        def __init__(self) -> None:
            self.data, self.model = parts()
            self.optimizer = self.model.configure_optimizers()
            self.seconds = self.loading = 0.0
            self.epochs: list[tuple[float, float]] = []  # (wall seconds of the epoch, hand-loop seconds in it)

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.epoch_start, self.epoch_hand = time.perf_counter(), self.seconds
            self.model.train()
            self.batches = iter(self.data.train_dataloader())
            self.seconds += time.perf_counter() - self.epoch_start

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            start = time.perf_counter()
            images, labels = self.data.on_after_batch_transfer(next(self.batches), 0)
            self.loading += time.perf_counter() - start
            logits = self.model(images)
            loss = self.model.loss(logits, labels)
            self.model.train_loss.update(loss.detach(), weight=labels.numel())  # what ClassifierModule does per step
            self.model.train_acc.update(logits, labels)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.seconds += time.perf_counter() - start

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.epochs.append((time.perf_counter() - self.epoch_start, self.seconds - self.epoch_hand))

    data, model = parts()
    data.setup("test")
    storages = {}  # every tensor the DataModule holds, each shared storage counted once
    for split in (data.train_set, data.val_set, data.test_set):
        for tensor in (split.all_images, split.all_labels, split.index):
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
    timer, hand = Timer(), HandLoop()
    trainer = L.Trainer(
        max_epochs=epochs, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0, callbacks=[timer, hand],
    )
    trainer.fit(model, datamodule=data)
    both = timer.time_elapsed("train")
    return {"lightning_s": both - hand.seconds, "plain_s": hand.seconds, "loading_s": hand.loading, "epochs": epochs,
            "per_epoch": [(wall - hand_s, hand_s) for wall, hand_s in hand.epochs], "held_mib": sum(storages.values()) / MIB}


def model_only(side: str, recipe: dict) -> None:
    """Each side's libraries and its network training on one synthetic batch: the memory that is not data."""
    if side == "b":
        import cli  # noqa: F401  (everything cli.py imports)
    import torch
    import torchvision  # noqa: F401

    from modules.nets import SmallCNN

    batch = recipe["batch_size"] if side == "b" else 64  # the course loop's batch
    layout = torch.channels_last if side == "b" else torch.contiguous_format
    net = SmallCNN(10, channels=tuple(recipe["channels"])).to(memory_format=layout)
    optimizer = torch.optim.Adam(net.parameters(), lr=recipe["lr"])
    images = torch.randn(batch, 1, 28, 28).contiguous(memory_format=layout)
    labels = torch.randint(0, 10, (batch,))
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(net(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def images_per_second(run_dir: Path) -> float:
    """The mean of ``train/images_per_s`` that the run logged to TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    values = [e.value for e in events.Scalars("train/images_per_s")]
    return sum(values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="MNIST folder (holding MNIST/raw/*-ubyte)")
    parser.add_argument("--logs", default="/tmp/benchmark_logs")
    parser.add_argument("--model-only", choices=("a", "b"), help=argparse.SUPPRESS)  # the memory baselines, run in a child
    args = parser.parse_args()
    if args.model_only:
        return model_only(args.model_only, mnist_recipe())
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    recipe = mnist_recipe()
    epochs = recipe["epochs"]

    print("memory baselines: each side's libraries and network training on a synthetic batch, no dataset ...", flush=True)
    _, base_a, _ = run([python, __file__, "--data-dir", args.data_dir, "--model-only", "a"], logs / "baseline_a.log")
    _, base_b, _ = run([python, __file__, "--data-dir", args.data_dir, "--model-only", "b"], logs / "baseline_b.log")

    print(f"(a) course loop, {epochs} epochs ...", flush=True)
    command = [python, "benchmarks/course_loop.py", "--task", "mnist", "--data-dir", args.data_dir, "--epochs", str(epochs), "--seed", str(recipe["seed"])]
    wall_a, mem_a, out = run(command, logs / "course_loop.log")
    history = [{**json.loads(line), "printed_s": at} for at, line in out if line.startswith('{"epoch"')]
    best = max(history, key=lambda h: h["test_acc"])
    a = {
        "wall_s": wall_a,
        "to_best_s": best["printed_s"],  # process start to its best epoch's test accuracy on the screen
        "img_per_s": 60_000 * len(history) / sum(h["train_s"] for h in history),
        "peak_mib": mem_a, "above_mib": mem_a - base_a, "test_acc": best["test_acc"],
    }

    print(f"(b) cli.py fit --test_after_fit true, {epochs} epochs ...", flush=True)
    save_dir = logs / "runs"
    command = [python, "cli.py", "fit", "--config", "configs/mnist.yaml", "--data.data_dir", args.data_dir,
               "--trainer.logger.init_args.save_dir", str(save_dir), "--test_after_fit", "true"]
    wall_b, mem_b, out = run(command, logs / "cli.log")
    tested_at, table = next((at, line) for at, line in out if re.search(r"test/acc\s+[\d.]+", line))
    run_dir = Path(re.search(r"Logs and checkpoints: (\S+)", "\n".join(line for _, line in out)).group(1))
    acc = float(re.search(r"test/acc\s+([\d.]+)", table).group(1))
    b = {"wall_s": wall_b, "to_best_s": tested_at, "img_per_s": images_per_second(ROOT / run_dir if not run_dir.is_absolute() else run_dir),
         "peak_mib": mem_b, "above_mib": mem_b - base_b, "test_acc": acc}

    print("(c) Lightning's overhead: 3 epochs, Lightning and a hand loop interleaved step by step ...", flush=True)
    c = overhead(args.data_dir, recipe)

    print(f"\nMNIST, SmallCNN {recipe['channels']}, batch {recipe['batch_size']}, {epochs} epochs, seed {recipe['seed']}, {os.cpu_count()} CPU cores")
    print(f"{'':36}{'(a) course loop':>16}{'(b) cli.py':>12}{'b/a':>7}")
    rows = [
        ("start to its best test accuracy (s)", "to_best_s", "{:.1f}"),
        ("wall time, start to exit (s)", "wall_s", "{:.1f}"),
        ("training images / s", "img_per_s", "{:.0f}"),
        ("peak memory, max RSS (MiB)", "peak_mib", "{:.0f}"),
        ("  above runtime + model (MiB)", "above_mib", "{:.0f}"),
        ("best test accuracy", "test_acc", "{:.4f}"),
    ]
    for label, key, fmt in rows:
        print(f"{label:36}{fmt.format(a[key]):>16}{fmt.format(b[key]):>12}{b[key] / a[key]:>7.2f}")
    data_mib = 70_000 * 28 * 28 / MIB
    print(f"runtime + model (libraries, network, optimizer, one batch's activations; no data): (a) {base_a:.0f} MiB, "
          f"(b) {base_b:.0f} MiB. Budget above it: 2 x the uint8 dataset ({data_mib:.0f} MiB) = {2 * data_mib:.0f} MiB")

    print(f"\nLightning's overhead, same steps interleaved, {c['epochs']} epochs:")
    for epoch, (lightning_s, plain_s) in enumerate(c["per_epoch"], 1):
        note = "  (includes one-off set-up in both)" if epoch == 1 else ""
        print(f"  epoch {epoch}: Lightning {lightning_s:.2f} s, hand loop {plain_s:.2f} s: {100 * (lightning_s / plain_s - 1):+.1f}%{note}")
    share = c["lightning_s"] / c["plain_s"] - 1
    print(f"  whole training loop (Lightning's Timer, from train start to end): Lightning {c['lightning_s']:.2f} s, "
          f"hand loop {c['plain_s']:.2f} s: {100 * share:+.1f}%")
    print(f"Data loading (index the uint8 tensor, to float, transforms): {c['loading_s']:.2f} s of the hand loop's "
          f"{c['plain_s']:.2f} s = {100 * c['loading_s'] / c['plain_s']:.1f}%")
    print(f"Data held by the DataModule (train, validation and test, every storage once): {c['held_mib']:.1f} MiB "
          f"= {c['held_mib'] / data_mib:.2f} x the uint8 dataset")


if __name__ == "__main__":
    main()

"""Side by side, in one run on one machine: the course's plain PyTorch loop against ``cli.py``.

    python benchmarks/compare.py --data-dir PATH/TO/mnist
(a) ``benchmarks/course_loop.py``: the loop as the course notebooks write it (per-sample PIL transforms,
    test accuracy after every epoch), with the network, epochs and seed of ``configs/mnist.yaml``.
(b) ``cli.py fit --config configs/mnist.yaml --test_after_fit true``: training, validation, checkpoints,
    TensorBoard pictures and the test of the best checkpoint, in one process.
Each in its own process, timed from its start to its best test accuracy printed and to its exit; printed for both
with the ratio b/a: those times, images a second, test accuracy and peak RSS (peak_rss.py, without the teardown),
also less "runtime + model" (a child importing the same libraries and training the network on a synthetic batch).

(c) Lightning's overhead: the same network, optimizer, batches, transforms and metric updates, trained by a bare
``Trainer.fit`` and by a hand loop stepping after each of Lightning's steps (a callback), so both meet the same
moments of a noisy machine. (d) The same with the trainer and model as configs/mnist.yaml builds them: what a
real run pays for its features. (e) Lightning's own per-step code, on a near-zero network, interleaved as in (c).
"""

import argparse
import gc
import json
import os
import re
import subprocess
import sys
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from functools import partial
from pathlib import Path
from statistics import median

import yaml

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
WARMUP = 200  # (e): first steps left out


def run(script: list[str], log: Path) -> tuple[float, float, list[tuple[float, str]]]:
    """Run ``python SCRIPT ARGS`` through peak_rss.py; return its wall seconds, its peak RSS in MiB (the work's,
    without the interpreter's teardown) and its output lines, each with the seconds from process start at which it
    was printed (unbuffered), so a result is timed when it appears."""
    command = [sys.executable, str(ROOT / "benchmarks" / "peak_rss.py"), *script]
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    lines = []
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
        for line in process.stdout:
            lines.append((time.perf_counter() - start, line.rstrip("\n")))
            out.write(line)
        process.wait()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed; see {log}:\n" + "\n".join(text for _, text in lines[-30:]))
    peak_kib = next(json.loads(text)["peak_rss_kib"] for _, text in reversed(lines) if text.startswith('{"peak_rss_kib"'))
    return wall, peak_kib / 1024, lines


def mnist_recipe() -> dict:
    """The settings configs/mnist.yaml trains with (over configs/defaults.yaml), so the comparison follows the config."""
    defaults, config = (yaml.safe_load((ROOT / "configs" / name).read_text()) for name in ("defaults.yaml", "mnist.yaml"))
    model, data = config["model"]["init_args"], config["data"]["init_args"]
    return {
        "channels": model["net"]["init_args"]["channels"], "lr": model["optimizer"]["init_args"]["lr"],
        "batch_size": data["batch_size"], "epochs": config["trainer"]["max_epochs"],
        "seed": config.get("seed_everything", defaults["seed_everything"]),
    }


def hand_step(model, optimizer, images, labels) -> None:
    """One training step as ClassifierModule takes it (the loss and its two per-step metric updates), by hand."""
    logits = model(images)
    loss = model.loss(logits, labels)
    model.train_loss.update(loss.detach(), weight=labels.numel())
    model.train_acc.update(logits, labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def overhead(data_dir: str, recipe: dict, logs: Path, as_configured: bool, epochs: int = 3) -> dict:
    """Training steps by Lightning and by hand, interleaved: the hand loop takes one step after each of
    Lightning's (a callback), so both meet the same moments of a noisy machine. Lightning's step is the time
    from one ``on_train_batch_start`` to the next, less the hand step inside it (each epoch's last step, which
    also holds the epoch's end, is left out on both sides). ``as_configured``: Lightning's trainer and model
    exactly as configs/mnist.yaml builds them through cli.py, instead of a bare ``Trainer``."""
    import lightning as L
    import torch
    from torchvision.transforms import v2

    import cli
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
        """The plain loop, one step after each of Lightning's; keeps (epoch, Lightning's seconds, its own) per step."""

        def __init__(self) -> None:
            self.data, self.model = parts()
            self.optimizer = self.model.configure_optimizers()
            self.loading = 0.0
            self.steps: list[tuple[int, float, float]] = []

        def on_train_start(self, trainer, pl_module) -> None:
            # Garbage left by the runs before this one in the process ((c)'s trainer, model and data) would be
            # collected by a full pass over every Python object (~0.25 s here) at some step of a measured epoch.
            gc.collect()

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.model.train()
            self.batches = iter(self.data.train_dataloader())
            self.mark = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            now = time.perf_counter()
            if self.mark is not None:
                self.steps.append((trainer.current_epoch, now - self.mark - self.hand_s, self.hand_s))
            self.mark = now

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            start = time.perf_counter()
            images, labels = self.data.on_after_batch_transfer(next(self.batches), 0)
            self.loading += time.perf_counter() - start
            hand_step(self.model, self.optimizer, images, labels)
            self.hand_s = time.perf_counter() - start

    hand = HandLoop()
    if as_configured:
        class WithHandLoop(cli.ClassifierCLI):
            def before_fit(self) -> None:
                super().before_fit()
                self.trainer.callbacks.append(hand)

        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / "configured_run.log", "w") as out, redirect_stdout(out), redirect_stderr(out), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # main(args) from Python is the point here
            cli.main(["fit", "--config", str(ROOT / "configs" / "mnist.yaml"), "--data.data_dir", data_dir,
                      "--data.batch_size", str(recipe["batch_size"]), "--trainer.max_epochs", str(epochs),
                      "--trainer.logger.init_args.save_dir", str(logs)], WithHandLoop)
    else:
        data, model = parts()
        trainer = L.Trainer(
            max_epochs=epochs, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0, callbacks=[hand],
        )
        trainer.fit(model, datamodule=data)
    per_epoch = [[(light, own) for e, light, own in hand.steps if e == epoch] for epoch in range(epochs)]
    return {
        "per_epoch": [(sum(s[0] for s in steps), sum(s[1] for s in steps), len(steps)) for steps in per_epoch],
        "median_ms": [(1000 * median(s[0] for s in steps), 1000 * median(s[1] for s in steps)) for steps in per_epoch],
        "loading_s": hand.loading, "hand_s": sum(s[2] for s in hand.steps),
    }


def lightning_code(steps: int) -> tuple[float, float]:
    """(e): Lightning's own per-step code, which a real network's kernels bury in this machine's noise. The network
    is one Linear layer on 4 numbers in batches of 2, so a step is little but the code around it; a bare Trainer and
    a hand loop interleave as in (c). Returns the mean microseconds per step, Lightning's and the hand loop's (the
    first WARMUP steps left out)."""
    import lightning as L
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from modules import ClassifierModule

    def parts() -> tuple[ClassifierModule, DataLoader]:
        data = TensorDataset(torch.randn(2 * steps, 4), torch.randint(0, 10, (2 * steps,)))
        model = ClassifierModule(net=partial(nn.Linear, 4), class_names=[str(c) for c in range(10)], channels_last=False)
        return model, DataLoader(data, batch_size=2)

    totals = [0.0, 0.0, 0]  # Lightning's seconds, the hand loop's, steps

    class HandLoop(L.Callback):
        def __init__(self) -> None:
            self.model, loader = parts()
            self.batches, self.optimizer = iter(loader), self.model.configure_optimizers()
            self.mark, self.hand_s = None, 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            now = time.perf_counter()
            if self.mark is not None and batch_idx > WARMUP:
                totals[0] += now - self.mark - self.hand_s
                totals[1] += self.hand_s
                totals[2] += 1
            self.mark = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            start = time.perf_counter()
            hand_step(self.model, self.optimizer, *next(self.batches))
            self.hand_s = time.perf_counter() - start

    model, loader = parts()
    trainer = L.Trainer(
        max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0, log_every_n_steps=0, callbacks=[HandLoop()],
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You defined a `validation_step` but have no `val_dataloader`")
        trainer.fit(model, train_dataloaders=loader)
    light, hand, n = totals
    return 1e6 * light / n, 1e6 * hand / n


def held_mib(data_dir: str, recipe: dict) -> float:
    """Every tensor the MNIST DataModule holds for train, validation and test, each shared storage counted once."""
    from datamodules import MNIST

    data = MNIST(data_dir=data_dir, batch_size=recipe["batch_size"], download=False)
    data.setup("fit")
    data.setup("test")
    storages = {}
    for split in (data.train_set, data.val_set, data.test_set):
        for tensor in (split.all_images, split.all_labels, split.index):
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
    return sum(storages.values()) / MIB


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
    parser.add_argument("--code-steps", type=int, default=12_000, help="(e)'s steps (default: %(default)s)")
    parser.add_argument("--model-only", choices=("a", "b"), help=argparse.SUPPRESS)  # the memory baselines, run in a child
    args = parser.parse_args()
    if args.model_only:
        return model_only(args.model_only, mnist_recipe())
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    recipe = mnist_recipe()
    epochs = recipe["epochs"]

    print("memory baselines: each side's libraries and network training on a synthetic batch, no dataset ...", flush=True)
    _, base_a, _ = run([__file__, "--data-dir", args.data_dir, "--model-only", "a"], logs / "baseline_a.log")
    _, base_b, _ = run([__file__, "--data-dir", args.data_dir, "--model-only", "b"], logs / "baseline_b.log")

    print(f"(a) course loop, {epochs} epochs ...", flush=True)
    command = ["benchmarks/course_loop.py", "--task", "mnist", "--data-dir", args.data_dir, "--epochs", str(epochs), "--seed", str(recipe["seed"])]
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
    command = ["cli.py", "fit", "--config", "configs/mnist.yaml", "--data.data_dir", args.data_dir,
               "--trainer.logger.init_args.save_dir", str(save_dir), "--test_after_fit", "true"]
    wall_b, mem_b, out = run(command, logs / "cli.log")
    tested_at, table = next((at, line) for at, line in out if re.search(r"test/acc\s+[\d.]+", line))
    run_dir = Path(re.search(r"Logs and checkpoints: (\S+)", "\n".join(line for _, line in out)).group(1))
    acc = float(re.search(r"test/acc\s+([\d.]+)", table).group(1))
    b = {"wall_s": wall_b, "to_best_s": tested_at, "img_per_s": images_per_second(ROOT / run_dir if not run_dir.is_absolute() else run_dir),
         "peak_mib": mem_b, "above_mib": mem_b - base_b, "test_acc": acc}

    # (c)-(e) run in this process: with the settings every cli.py run has, or each step would fault its activations
    # in again (9 million page faults in (c)'s 3 epochs here, steps of 40-50 ms instead of 25), and both sides'
    # Adam would try to load the NVIDIA driver's library at every step, a cost Lightning's import adds to the hand loop.
    from modules.process import tune_the_process

    tune_the_process()
    print("(c) Lightning's overhead: 3 epochs of a bare Trainer, a hand loop taking a step after each of its steps ...", flush=True)
    c = overhead(args.data_dir, recipe, logs / "overhead_runs", as_configured=False)
    print(f"(d) the same with the trainer and model as configs/mnist.yaml builds them (its output: {logs / 'overhead_runs'}) ...", flush=True)
    d = overhead(args.data_dir, recipe, logs / "overhead_runs", as_configured=True)
    print(f"(e) Lightning's own per-step code: {args.code_steps} steps of a near-zero network, a hand loop taking a step after each ...", flush=True)
    code = lightning_code(args.code_steps)
    print(f"\nMNIST, SmallCNN {recipe['channels']}, batch {recipe['batch_size']}, {epochs} epochs, seed {recipe['seed']}, {os.cpu_count()} CPU cores")
    print(f"{'':40}{'(a) course loop':>16}{'(b) cli.py':>12}{'b/a':>7}")
    rows = [
        ("start to its best test accuracy (s)", "to_best_s", "{:.1f}"),
        ("wall time, start to exit (s)", "wall_s", "{:.1f}"),
        ("training images / s", "img_per_s", "{:.0f}"),
        ("peak memory, max RSS of the work (MiB)", "peak_mib", "{:.0f}"),
        ("  above runtime + model (MiB)", "above_mib", "{:.0f}"),
        ("best test accuracy", "test_acc", "{:.4f}"),
    ]
    for label, key, fmt in rows:
        print(f"{label:40}{fmt.format(a[key]):>16}{fmt.format(b[key]):>12}{b[key] / a[key]:>7.2f}")
    data_mib = 70_000 * 28 * 28 / MIB
    print(f"runtime + model (libraries, network, optimizer, one batch's activations; no data): (a) {base_a:.0f} MiB, "
          f"(b) {base_b:.0f} MiB. Budget above it: 2 x the uint8 dataset ({data_mib:.0f} MiB) = {2 * data_mib:.0f} MiB")

    for label, o in (("(c) Lightning's overhead: a bare Trainer", c),
                     ("(d) the run as configured: checkpoints, logger, progress bar, pictures, clipping, schedule", d)):
        print(f"\n{label}; training steps, Lightning's against the hand loop's interleaved with them:")
        for epoch, ((light, own, steps), (light_ms, own_ms)) in enumerate(zip(o["per_epoch"], o["median_ms"]), 1):
            note = "  (holds one-off set-up)" if epoch == 1 else ""
            print(f"  epoch {epoch}, {steps} steps: Lightning {light:.2f} s, hand loop {own:.2f} s: {100 * (light / own - 1):+.1f}%; "
                  f"median step {light_ms:.2f} ms vs {own_ms:.2f} ms{note}")
        later = o["per_epoch"][1:]
        light, own = sum(e[0] for e in later), sum(e[1] for e in later)
        print(f"  epochs 2-{len(o['per_epoch'])}: {100 * (light / own - 1):+.1f}% ({1000 * (light - own) / sum(e[2] for e in later):+.2f} ms a step)")
    light, hand = code
    print(f"\n(e) Lightning's own per-step code, near-zero network, {args.code_steps} steps: Lightning step {light:.0f} us, "
          f"hand step {hand:.0f} us: Lightning's code {light - hand:+.0f} us")
    print(f"\nData loading (index the uint8 tensor, to float, transforms): {c['loading_s']:.2f} s of the hand loop's "
          f"{c['hand_s']:.2f} s = {100 * c['loading_s'] / c['hand_s']:.1f}%")
    held = held_mib(args.data_dir, recipe)
    print(f"Data held by the DataModule (train, validation and test, every storage once): {held:.1f} MiB "
          f"= {held / data_mib:.2f} x the uint8 dataset")

if __name__ == "__main__":
    main()

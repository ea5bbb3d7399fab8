"""The modern recipe's pieces: MixUp/CutMix, EMA, warmup + decay, test-time augmentation, top-5, the precision
chosen for the chip, and the airbench network."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.nn import functional as F

from datamodules.augment import BatchMix
from modules.classifier import ClassifierModule, ConfigError, tta_views
from modules.nets import AirbenchNet
from modules.preflight import default_precision
from modules.schedules import WarmupDecay
from tests.runs import cli, run_in_tmp  # noqa: F401 (run_in_tmp: a fixture)
from tests.test_resume import fit  # digits.yaml, 2 epochs, deterministic, in a process of its own

ROOT = Path(__file__).resolve().parents[1]
EMA = ("--trainer.callbacks+=lightning.pytorch.callbacks.EMAWeightAveraging", "--trainer.callbacks.decay=0.9")


def module(tta: str = "none", classes: int = 10) -> ClassifierModule:
    torch.manual_seed(0)
    net = lambda n: nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, n))  # noqa: E731
    return ClassifierModule(net, [str(i) for i in range(classes)], (3, 8, 8), tta=tta)


# ---- MixUp / CutMix ----------------------------------------------------------------------------------------------
def test_a_mixed_batch_trains_on_its_soft_targets_and_counts_accuracy_on_the_true_labels():
    model = module()
    model.trainer = L.Trainer(logger=False, log_every_n_steps=0, enable_progress_bar=False)
    images, labels = torch.rand(6, 3, 8, 8), torch.arange(6)
    targets = F.one_hot(torch.zeros(6, dtype=torch.long), 10).float()  # every mixed target says class 0
    loss = model.training_step((images, labels, targets), 0)
    logits = model(images)
    assert torch.allclose(loss, F.cross_entropy(logits, targets))
    assert not torch.allclose(loss, F.cross_entropy(logits, labels))
    assert model.train_acc.compute() == (logits.argmax(1) == labels).float().mean()  # not the targets' class 0
    assert model.train_acc.compute() != (logits.argmax(1) == 0).float().mean()


def test_batch_mix_gives_soft_targets_that_sum_to_one_and_keeps_the_labels():
    images, labels = torch.rand(8, 3, 8, 8), torch.arange(8) % 4
    mixed, kept, targets = BatchMix(4, mixup_alpha=0.4, cutmix_alpha=1.0)(images, labels)
    assert mixed.shape == images.shape and torch.equal(kept, labels)
    assert targets.shape == (8, 4) and torch.allclose(targets.sum(1), torch.ones(8))
    assert len(BatchMix(4)(images, labels)) == 2  # both alphas 0: the batch passes unchanged


def test_mixup_cutmix_trivial_augment_and_random_erasing_train_through_the_cli(run_in_tmp, cifar_pickle_dir):
    run = cli("cifar10_strong", "fit", "--trainer.fast_dev_run", "2", "--data.mixup_alpha", "0.2", "--data.cutmix_alpha",
              "1.0", "--data.augment+=torchvision.transforms.v2.TrivialAugmentWide",
              "--data.augment+=torchvision.transforms.v2.RandomErasing", "--data.val_split", "0.25", data_dir=cifar_pickle_dir)
    assert run.trainer.state.finished and run.trainer.global_step == 2
    assert [type(m).__name__ for m in run.datamodule.augment][-2:] == ["TrivialAugmentWide", "RandomErasing"]
    images, labels = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), torch.arange(4)
    run.trainer.training = True  # a training batch, as Lightning hands it over: mixed, with its soft targets
    batch = run.datamodule.on_after_batch_transfer((images, labels), 0)
    assert len(batch) == 3 and torch.equal(batch[1], labels) and batch[2].shape == (4, 10)


STRONG = {"mnist_strong": "mnist_dir", "cifar10_strong": "cifar_pickle_dir", "svhn_strong": "svhn_dir",
          "food11_strong": "food11_dir"}


@pytest.mark.slow
@pytest.mark.parametrize("task", STRONG)
def test_each_strong_recipe_fits_and_tests_on_data_in_its_real_format(task, run_in_tmp, request):
    tiny = {"cifar10_strong": ("--data.val_split", "0.25"), "svhn_strong": ("--data.val_split", "0.25"),  # not 1,000 of 40
            "mnist_strong": ("--data.val_split", "0.25"),
            "food11_strong": ("--model.net.init_args.arch", "test_efficientnet", "--model.net.init_args.weights", "null",
                              "--data.image_size", "224")}
    run = cli(task, "fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--test_after_fit", "true",
              *tiny.get(task, ()), data_dir=request.getfixturevalue(STRONG[task]))
    assert run.trainer.state.finished and Path(f"lightning_logs/{task}/version_0/checkpoints/last.ckpt").is_file()
    assert "test/acc" in run.trainer.logged_metrics


# ---- EMA ---------------------------------------------------------------------------------------------------------
def test_the_checkpoint_holds_the_averaged_weights_and_the_run_ends_with_them(run_in_tmp):
    run = cli("digits", "fit", "--trainer.max_epochs", "1", *EMA)
    saved = torch.load(next(Path("lightning_logs/digits/version_0/checkpoints").glob("best-*.ckpt")), weights_only=False)
    averaged, current = saved["state_dict"], saved["current_model_state"]
    assert any(not torch.equal(averaged[key], current[key]) for key in averaged)
    for key, value in run.model.state_dict().items():  # the weights test, predict and export see
        assert torch.equal(value, averaged[key]), key


@pytest.mark.slow
def test_a_run_killed_mid_epoch_and_resumed_ends_with_the_same_averaged_weights(tmp_path):
    straight = fit(tmp_path, "straight", *EMA)
    assert straight.returncode == 0, straight.stderr[-3000:]
    # digits: 41 steps an epoch, last.ckpt every 20 steps; die at step 70, 29 steps into epoch 2
    killed = fit(tmp_path, "killed", *EMA, "--trainer.callbacks+=tests.killer.KillAtStep", "--trainer.callbacks.step=70")
    assert killed.returncode == -signal.SIGKILL
    resumed = fit(tmp_path, "killed", *EMA, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = (torch.load(tmp_path / run / "digits/version_0/checkpoints/last.ckpt", weights_only=False) for run in ("straight", "killed"))
    assert a["global_step"] == b["global_step"] == 82
    for part in ("state_dict", "current_model_state"):  # the averaged weights, and the trained ones
        for key, value in a[part].items():
            assert torch.allclose(value.float(), b[part][key].float(), atol=1e-6), (part, key)


def test_resuming_an_ema_checkpoint_without_the_ema_callback_is_refused(run_in_tmp):
    cli("digits", "fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", *EMA)
    last = Path("lightning_logs/digits/version_0/checkpoints/last.ckpt")
    with pytest.raises(SystemExit, match="trained with an EMA of its weights"):
        cli("digits", "fit", "--trainer.max_epochs", "2", "--ckpt_path", str(last))


# ---- warmup + decay ----------------------------------------------------------------------------------------------
def test_warmup_rises_from_start_to_the_peak_then_decays_to_end():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    schedule = WarmupDecay(optimizer, total_steps=100, warmup=0.2, start=0.1, end=0.05)
    factors = [schedule.factor(step) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[20] == pytest.approx(1.0) and factors[99] == pytest.approx(0.05)
    assert factors[:21] == sorted(factors[:21]) and factors[20:] == sorted(factors[20:], reverse=True)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.2)
    linear = WarmupDecay(optimizer, total_steps=100, warmup=0.0, end=0.0, decay="linear")
    assert linear.factor(50) == pytest.approx(1 - 50 / 99)
    with pytest.raises(ConfigError, match="leave it out"):
        WarmupDecay(optimizer)


@pytest.mark.parametrize(("budget", "steps"), [(("--trainer.max_epochs", "2"), 82), (("--trainer.max_steps", "7"), 7)])
def test_the_schedule_spans_the_trainers_step_budget(run_in_tmp, budget, steps):
    run = cli("digits", "fit", *budget, "--model.scheduler", "modules.schedules.WarmupDecay", "--data.batch_size", "32",
              "--trainer.limit_val_batches", "1", "--early_stopping", "null")
    schedule = run.trainer.lr_scheduler_configs[0]
    assert schedule.scheduler.total_steps == steps == run.trainer.global_step and schedule.interval == "step"
    assert run.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-6)  # decayed to end=0


@pytest.mark.slow
def test_under_ddp_the_schedule_spans_each_processs_steps(tmp_path):
    command = [sys.executable, str(ROOT / "cli.py"), "fit", "--config", str(ROOT / "configs" / "digits.yaml"),
               "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu",
               "--trainer.max_epochs", "1", "--model.scheduler", "modules.schedules.WarmupDecay"]
    done = subprocess.run(command, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=180, start_new_session=True)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = torch.load(tmp_path / "lightning_logs/digits/version_0/checkpoints/last.ckpt", weights_only=False)
    assert saved["lr_schedulers"][0]["total_steps"] == saved["global_step"] == 21  # 1,293 images / 2 processes / 32


# ---- test-time augmentation, top-5 -------------------------------------------------------------------------------
def test_flip_tta_leaves_a_mirror_symmetric_image_as_it_is_and_changes_others():
    plain, flip = module("none").eval(), module("flip").eval()
    half = torch.rand(2, 3, 8, 4)
    symmetric, other = torch.cat([half, half.flip(-1)], dim=-1), torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(flip.evaluate(symmetric), plain.evaluate(symmetric), atol=1e-6)
        assert not torch.allclose(flip.evaluate(other), plain.evaluate(other), atol=1e-4)
        mean = (plain(other) + plain(other.flip(-1))) / 2
        assert torch.allclose(flip.evaluate(other), mean, atol=1e-6)
    views, weights = tta_views(other, "flip_translate")
    assert len(views) == len(weights) == 6 and sum(weights) == 1 and all(v.shape == other.shape for v in views)


def test_tta_is_recorded_and_top5_accuracy_is_logged_for_more_than_five_classes(run_in_tmp):
    run = cli("digits", "fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--model.tta", "flip",
              "--test_after_fit", "true")
    assert run.model.hparams.tta == "flip"
    events = EventAccumulator("lightning_logs/digits/version_0").Reload().Tags()["scalars"]
    assert {"val/acc_top5", "test/acc_top5"} <= set(events) and "test/acc_top5" in run.trainer.logged_metrics
    assert run.trainer.logged_metrics["test/acc_top5"] >= run.trainer.logged_metrics["test/acc"]
    assert not hasattr(module(classes=5), "val_acc_top5")


# ---- precision ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("flags", "precision"), [({"avx2"}, "32-true"), ({"avx2", "amx_bf16"}, "bf16-mixed"),
                                                 ({"avx512_bf16"}, "bf16-mixed")])
def test_the_default_precision_follows_the_cpus_bf16_units(monkeypatch, flags, precision):
    monkeypatch.setattr("modules.preflight.cpu_flags", lambda: flags)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    chosen, why = default_precision("auto")
    assert chosen == precision and ("without" in why) == (precision == "32-true")


def test_the_run_says_which_precision_it_chose_and_why(run_in_tmp, capsys):
    cli("digits", "fit", "--trainer.fast_dev_run", "true")
    out = capsys.readouterr().out
    assert "Precision 32-true (trainer.precision null): a CPU without bf16 matrix units" in out or \
           "Precision bf16-mixed (trainer.precision null): a CPU with bf16 matrix units" in out
    cli("digits", "fit", "--trainer.fast_dev_run", "true", "--trainer.precision", "64-true")
    assert "Precision" not in capsys.readouterr().out  # set in the config: nothing to explain


# ---- the airbench network ----------------------------------------------------------------------------------------
def test_airbench_whitens_from_its_first_training_batch_once_and_keeps_it_in_the_state_dict():
    torch.manual_seed(0)
    net = AirbenchNet(10, widths=(8, 16, 16))
    before = net.whiten.weight.clone()
    net.eval()(torch.rand(2, 3, 32, 32))
    assert torch.equal(net.whiten.weight, before) and not net.whiten.ready  # evaluation never fits it
    images = torch.rand(16, 3, 32, 32)
    assert net.train()(images).shape == (16, 10)
    whitened = net.whiten.weight.clone()
    assert net.whiten.ready and not torch.equal(whitened, before)
    out = F.conv2d(images, whitened[:12])  # the patches, decorrelated: a near-identity covariance
    flat = out.permute(1, 0, 2, 3).reshape(12, -1)
    covariance = flat @ flat.T / flat.shape[1]
    assert torch.allclose(covariance.diag(), torch.ones(12), atol=0.1)
    net(torch.rand(16, 3, 32, 32))
    assert torch.equal(net.whiten.weight, whitened)  # once only
    assert net.state_dict()["whiten.ready"]
    assert not any(p is net.whiten.weight for p in net.parameters() if p.requires_grad)


def test_airbench_whitens_in_float32_under_bf16_autocast():
    net = AirbenchNet(10, widths=(8, 16, 16)).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net(torch.rand(8, 3, 32, 32))
    assert net.whiten.ready and net.whiten.weight.dtype == torch.float32 and torch.isfinite(net.whiten.weight).all()

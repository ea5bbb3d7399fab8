"""Resuming with --ckpt_path last: where a run goes on, what it is told, and what is refused."""

import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml

from cli import main
from modules.pictures import logged_epochs
from tests.runs import cli, run_in_tmp  # noqa: F401 (run_in_tmp: a fixture)

pytestmark = pytest.mark.usefixtures("run_in_tmp")

@pytest.mark.slow
def test_resume_from_last_continues_where_it_stopped(capsys):
    common = ("--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1")
    cli("digits", "fit", "--trainer.max_epochs", "2", *common, logs="straight")
    cli("digits", "fit", "--trainer.max_epochs", "1", *common, logs="stopped")
    with pytest.raises(SystemExit) as refused:  # LightningCLI would continue the checkpoint's settings, silently
        cli("digits", "fit", "--trainer.max_epochs", "2", "--ckpt_path", "last", "--model.optimizer.lr", "0.1", logs="stopped")
    assert refused.value.code == (
        "error: --ckpt_path stopped/digits/version_0/checkpoints/last.ckpt continues a run as it was trained, but this "
        "config's model differs: model.optimizer.init_args.lr 0.1 (checkpoint: 0.001). Resume with the run's own config "
        "(--config stopped/digits/version_0/config.yaml), or start a new run (no --ckpt_path) to train with these settings."
    )
    resumed = cli("digits", "fit", "--trainer.max_epochs", "2", "--ckpt_path", "last", *common,
                  "--model.channels_last", "false", logs="stopped")  # how the model runs may change on resume
    assert resumed.model.hparams.channels_last is False  # the config's switch, not the checkpoint's (true)
    assert "Using stopped/digits/version_0/checkpoints/last.ckpt" in capsys.readouterr().out
    assert resumed.trainer.log_dir == "stopped/digits/version_0"  # the same run folder: its curves continue
    assert resumed.trainer.logger.version == 0  # what the progress bar shows as v_num
    assert not Path("stopped/digits/version_1").exists()
    straight = torch.load("straight/digits/version_0/checkpoints/last.ckpt", weights_only=True)
    continued = torch.load("stopped/digits/version_0/checkpoints/last.ckpt", weights_only=True)
    assert (continued["epoch"], continued["global_step"]) == (straight["epoch"], straight["global_step"]) == (1, 6)


def test_resume_that_would_outgrow_a_whole_run_schedule_is_refused(mnist_dir):
    # configs/mnist.yaml's OneCycleLR spans the run's steps (2 here): more epochs would make it fail part way.
    common = ("--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1")
    cli("mnist", "fit", "--trainer.max_epochs", "1", *common, data_dir=mnist_dir)
    last = Path("lightning_logs/mnist/version_0/checkpoints/last.ckpt")
    before = last.read_bytes()
    with pytest.raises(SystemExit, match=r"schedule was built for the 2 steps of the run that wrote it; this run takes 4"):
        cli("mnist", "fit", "--trainer.max_epochs", "2", "--ckpt_path", "last", *common, data_dir=mnist_dir)
    assert last.read_bytes() == before


@pytest.mark.slow
def test_run_end_says_why_it_ended_and_a_finished_run_resumed_trains_nothing(capsys):
    common = ("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2")
    cli("digits", "fit", *common)
    capsys.readouterr()
    resumed = cli("digits", "fit", *common, "--ckpt_path", "last")
    out = capsys.readouterr().out
    assert "Nothing to train: the checkpoint had already reached max_epochs=1." in out and resumed.trainer.global_step == 3
    # The printed commands, copied as they are. The run's config.yaml now holds its checkpoint and pins its run folder
    # (a resume continues in place), so a test of it asks for a run folder of its own.
    run = Path("lightning_logs/digits/version_0")
    test_it, train_on = (re.search(rf"{label}\s+python cli.py (.*)", out).group(1) for label in ("Test it:", "Train on:"))
    assert test_it.startswith(f"test --config {run}/config.yaml --trainer.logger.init_args.version null --ckpt_path {run}/checkpoints/best")
    assert main(shlex.split(test_it)).trainer.log_dir == str(run.with_name("version_1"))
    assert yaml.safe_load((run / "config.yaml").read_text())["ckpt_path"] == f"{run}/checkpoints/last.ckpt"  # the fit's, kept
    assert train_on == f"fit --config {run}/config.yaml --ckpt_path {run}/checkpoints/last.ckpt --trainer.max_epochs N (N above 1)"
    trained_on = main(shlex.split(train_on.replace("N (N above 1)", "2")))
    assert trained_on.trainer.global_step == 6 and trained_on.trainer.log_dir == str(run)
    history = logged_epochs(trained_on.trainer)  # the curves picture's points: the epoch before the resume too
    assert sorted(history["val/acc"]) == sorted(history["train/loss"]) == [0, 1] and (run / "curves.png").is_file()
    capsys.readouterr()
    # An early stop that must come at the second validation: the loss cannot fall by 100.
    stopping = ["--trainer.callbacks+=lightning.pytorch.callbacks.EarlyStopping", "--trainer.callbacks.monitor=val/loss",
                "--trainer.callbacks.min_delta=100", "--trainer.callbacks.patience=1"]
    cli("digits", "fit", "--trainer.max_epochs", "9", "--trainer.limit_train_batches", "3", *stopping)
    out = capsys.readouterr().out
    assert "Early stopping ended the run after epoch 1: val/loss had stopped improving (patience 1)." in out
    assert "Train on:" not in out
    # Resumed, with every validation now an improvement: the budget ends it, though its early stopping state (restored
    # from the checkpoint) still holds the epoch it stopped at before.
    improving = [*stopping[:2], "--trainer.callbacks.min_delta=-100", stopping[3]]
    cli("digits", "fit", "--trainer.max_epochs", "3", "--trainer.limit_train_batches", "3", *improving, "--ckpt_path", "last")
    out = capsys.readouterr().out
    assert "Early stopping ended" not in out and "--trainer.max_epochs N (N above 3)" in out
    timed = cli("digits", "fit", "--trainer.max_epochs", "99", "--trainer.max_time", "00:00:00:01")  # ~500 steps a second
    out = capsys.readouterr().out
    assert f"step {timed.trainer.global_step}, its trainer.max_time used up." in out and timed.trainer.current_epoch < 99
    last = f"{timed.trainer.log_dir}/checkpoints/last.ckpt"
    assert f"--ckpt_path {last} --trainer.max_time DD:HH:MM:SS (longer: it counts the time already trained)" in out


@pytest.mark.slow
def test_a_fit_resumed_part_way_through_an_epoch_that_trains_is_not_called_one_with_nothing_to_train(capsys):
    # last.ckpt every 20 steps: stopped at step 25, it holds step 20, part way through the first epoch.
    with pytest.raises(SystemExit, match="refused at step 25"):
        cli("digits", "fit", "--trainer.max_epochs", "1", "--trainer.callbacks+=tests.killer.RefuseAtStep", "--trainer.callbacks.step=25")
    resumed = cli("digits", "fit", "--trainer.max_epochs", "1", "--ckpt_path", "last")  # the rest of epoch 0 only
    assert resumed.trainer.global_step > 20 and resumed.trainer.current_epoch == 1
    assert "Nothing to train" not in capsys.readouterr().out


@pytest.mark.slow
def test_a_run_ended_by_its_step_budget_goes_on_counted_in_epochs(capsys):
    """Lightning resumes a step-counted run from an epoch's end wrongly (issue #19617; a step budget ends the epoch it
    stops in, after its validation): refused, with the form that works, which is also what the run's end suggests."""
    epoch = ("--data.batch_size", "32", "--trainer.limit_train_batches", "5")  # 5 steps an epoch
    last = Path("lightning_logs/digits/version_0/checkpoints/last.ckpt")
    cli("digits", "fit", *epoch, "--trainer.max_steps", "3")
    told = f"--ckpt_path {last} --trainer.max_steps -1 --trainer.max_epochs N (N above 1; Lightning resumes it counted in epochs only)"
    assert told in capsys.readouterr().out
    before = last.read_bytes()
    with pytest.raises(SystemExit, match=r"written as epoch 0 ended \(step 3\), and Lightning cannot resume a run counted in steps "
                       r"\(trainer.max_steps\) from there. Count the rest in epochs: --trainer.max_steps -1 --trainer.max_epochs N \(N above 1\)"):
        cli("digits", "fit", *epoch, "--trainer.max_steps", "6", "--ckpt_path", "last")
    assert last.read_bytes() == before
    resumed = cli("digits", "fit", *epoch, "--trainer.max_steps", "-1", "--trainer.max_epochs", "2", "--ckpt_path", "last")
    assert resumed.trainer.current_epoch == 2 and resumed.trainer.global_step == 8 and "val/acc" in resumed.trainer.callback_metrics

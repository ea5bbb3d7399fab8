"""Configs are the interface: each task's parses, shows every knob, and a mistake in one is named with its fix."""

import re
import subprocess
import sys
import warnings
from itertools import combinations
from pathlib import Path

import pytest
import yaml
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

import cli as cli_module
from cli import main
from datamodules.image_folder import report_skipped
from datamodules.errors import DataWarning
from modules.callbacks import ProgressBar
from modules.process import quiet_the_libraries
from tests.runs import CONFIGS, cli, run_in_tmp  # noqa: F401 (run_in_tmp: a fixture)

pytestmark = pytest.mark.usefixtures("run_in_tmp")

def test_print_config_shows_every_knob(capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(CONFIGS / "svhn.yaml"), "--data.data_dir", "/some/where", "--print_config"])
    assert done.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["data"]["init_args"]["data_dir"] == "/some/where"
    assert [t["class_path"] for t in config["data"]["init_args"]["augment"]] == [
        "kornia.augmentation.RandomCrop",
        "kornia.augmentation.RandomRotation",
    ]
    assert config["model"]["init_args"]["net"]["class_path"] == "modules.nets.SVHNResNet"
    assert config["trainer"]["gradient_clip_val"] == 5.0
    # The shared block, from configs/defaults.yaml, merged under the task's own settings.
    stopping, bar, best = (config[key]["init_args"] for key in ("early_stopping", "progress_bar", "checkpoint"))
    assert stopping["patience"] == 5 and stopping["monitor"] == "val/acc"
    assert bar["refresh_rate"] == 1 and best["monitor"] == "val/acc"
    assert config["trainer"]["logger"]["class_path"] == "modules.loggers.TensorBoardRunLogger"
    assert config["trainer"]["default_root_dir"] == "lightning_logs/svhn" and config["trainer"]["callbacks"] == []


TASKS = sorted(p.stem for p in CONFIGS.glob("*.yaml") if p.stem != "defaults")


def settings(task: str) -> list[str]:
    """A config's setting lines, without comments and blank lines."""
    lines = [line.split("   #")[0].rstrip() for line in (CONFIGS / f"{task}.yaml").read_text().splitlines()]
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_a_task_config_holds_only_what_makes_the_task():
    assert len(TASKS) >= 7
    for task in TASKS:
        assert len(settings(task)) <= 45, task
    for a, b in combinations(TASKS, 2):  # no run of six setting lines in two tasks' configs: the shared block lives once
        if a.removesuffix("_strong") == b.removesuffix("_strong"):
            continue  # a task's strong recipe may repeat its own data settings
        runs_a = {tuple(settings(a)[i:i + 6]) for i in range(len(settings(a)) - 5)}
        shared = [run for i in range(len(settings(b)) - 5) if (run := tuple(settings(b)[i:i + 6])) in runs_a]
        assert not shared, (a, b, shared[0])


@pytest.mark.parametrize("task", TASKS)
def test_every_task_config_parses_and_names_its_run_folder(task, capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(CONFIGS / f"{task}.yaml"), "--print_config"])
    assert done.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["trainer"]["default_root_dir"] == f"lightning_logs/{task}"
    assert config["data"]["class_path"].startswith("datamodules.") and config["model"]["init_args"]["net"]["class_path"]


def test_a_shared_callback_setting_is_one_option_away():
    run = cli("digits", "fit", "--trainer.fast_dev_run", "true", "--early_stopping.patience", "2",
              "--progress_bar.refresh_rate", "3", "--trainer.callbacks+=tests.killer.RefuseAtStep",
              "--trainer.callbacks.step=99")
    stopping = [c for c in run.trainer.callbacks if type(c).__name__ == "EarlyStopping"]
    assert [c.patience for c in stopping] == [2] and run.trainer.progress_bar_callback.refresh_rate == 3
    assert [type(c).__name__ for c in run.trainer.callbacks].count("RefuseAtStep") == 1  # added, beside the shared ones
    assert len(run.trainer.checkpoint_callbacks) == 3  # best, last at each epoch's end, last mid-epoch


@pytest.mark.slow
def test_importing_cli_changes_no_global_state():
    """Warning filters, the warnings' format and the logging filters are main()'s to set, not an import's."""
    probe = ("import logging, warnings; before = (list(warnings.filters), warnings.formatwarning); import cli; "
             "print(before == (warnings.filters, warnings.formatwarning), "
             "any(logging.getLogger(n).filters for n in logging.root.manager.loggerDict))")
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                           cwd=CONFIGS.parent).stdout.split()
    assert shown == ["True", "False"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--data.batch_size", "eight"], "batch_size"),  # wrong type
        # Typos: the option meant, from the class's signature or the parser's options.
        (["--data.batch_sise", "8"], "error: --data.batch_sise: Digits takes no 'batch_sise'; did you mean --data.batch_size? "
         "Its options: data_dir, batch_size, val_split, "),
        (["--model.net.hiden", "[10]"], "error: --model.net.hiden: MLP takes no 'hiden'; did you mean --model.net.hidden? "),
        (["--model.optimizer.betaz", "[0.9,0.99]"], "error: --model.optimizer.betaz: Adam takes no 'betaz'; did you mean "
         "--model.optimizer.betas? Its options: params, lr, betas, "),
        (["--early_stopping.patiense", "5"], "error: --early_stopping.patiense: EarlyStopping takes no 'patiense'; "
         "did you mean --early_stopping.patience? "),
        (["--trainer.max_epochz", "5"], "error: --trainer.max_epochz: no such option; did you mean --trainer.max_epochs? "),
        (["--config", "trainer: {max_epoch: 5}"], "error: --trainer.max_epoch: no such option; did you mean --trainer.max_epochs? "),
        (["--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitr=val/acc"],
         "error: --trainer.callbacks.monitr: EarlyStopping takes no 'monitr'; did you mean --trainer.callbacks.monitor? "),
        # A class that is not there, or one without an argument it needs.
        (["--model.optimizer", "torch.optim.SDG"], "error: --model.optimizer torch.optim.SDG: torch.optim has no 'SDG'; "
         "did you mean torch.optim.SGD?\n"),
        (["--model.scheduler", "StepLR"], "error: --model.scheduler torch.optim.lr_scheduler.StepLR needs "
         "--model.scheduler.step_size VALUE.\n"),
    ],
)
def test_config_mistakes_are_named(arguments, message, capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(CONFIGS / "digits.yaml"), *arguments])
    assert done.value.code == 2
    error = capsys.readouterr().err
    assert "error:" in error and message in error


def test_a_missing_config_or_no_task_lists_the_task_configs(tmp_path, capsys):
    # The working folder is the test's, not the project's: relative config paths are not found.
    names = ", ".join(f"configs/{p.name}" for p in sorted(CONFIGS.glob("*.yaml")) if p.name != "defaults.yaml")
    tasks = f"Task configs: {names} (in {CONFIGS.parent}: run from there, or give their full paths)."
    for arguments, what in [
        (["fit"], "fit needs a task: python cli.py fit --config configs/<task>.yaml."),
        (["test", "--config", "configs/mnist.yaml"], f"--config configs/mnist.yaml does not exist (looked in {tmp_path})."),
        (["fit", f"--config={CONFIGS}"], f"--config {CONFIGS} is a folder, not a config file."),
    ]:
        with pytest.raises(SystemExit) as done:
            main(arguments)
        assert done.value.code == f"error: {what} {tasks}", arguments
    # A task config before the subcommand is read as the whole program's (a section per subcommand).
    with pytest.raises(SystemExit) as done:
        main(["-c", str(CONFIGS / "digits.yaml"), "test", "--ckpt_path", "best"])
    assert done.value.code == f"error: --config goes after the subcommand: python cli.py test -c {CONFIGS / 'digits.yaml'} --ckpt_path best"
    whole = tmp_path / "whole.yaml"  # which LightningCLI takes there
    whole.write_text("fit:\n  trainer:\n    max_epochs: 7\n")
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["--config", str(whole), "fit", "--print_config"])
    assert done.value.code == 0 and "max_epochs: 7" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:  # every knob's default, no task needed
        main(["fit", "--print_config"])
    assert done.value.code == 0 and "test_after_fit: false" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model.label_smoothing", "1.5"], "label_smoothing=1.5: give a share between 0 (none) and 1."),
        (["--trainer.devices", "0"], "`Trainer(devices='0')` value is not a valid input using cpu accelerator."),  # Lightning's
        (["--trainer.barebones", "true"], "--trainer.barebones: Lightning's mode for timing its own loop forbids self.log"),
        (["--data.batch_size", "1"], "batch_size=1: the network's BatchNorm1d normalises each channel over the batch, "
         "and a batch of one image gives it a single value per channel (training would stop at its first step). Use "
         "--data.batch_size 2 or more, or a network without BatchNorm."),
        (["--optimizer", "torch.optim.SGD", "--optimizer.lr", "0.5"], "--optimizer: LightningCLI's top-level optimizer "
         "would replace the model's and drop its schedule; use --model.optimizer torch.optim.SGD --model.optimizer.lr 0.1"),
        (["--lr_scheduler", "torch.optim.lr_scheduler.StepLR"], "--lr_scheduler: LightningCLI's top-level scheduler would "
         "replace the model's; use --model.scheduler CLASS (or null)."),
    ],
)
def test_impossible_settings_stop_with_the_message_alone(arguments, message):
    with pytest.raises(SystemExit) as done:
        cli("digits", "fit", "--trainer.fast_dev_run", "true", *arguments)
    assert done.value.code.startswith(f"error: {message}")  # no traceback: the message says what to change


@pytest.mark.parametrize(("setting", "message"), [
    (["--trainer.accelerator", "gpux"], r"You selected an invalid accelerator name: `accelerator='gpux'`. Available names are: auto, .*cpu"),
    (["--trainer.strategy", "ddpx"], r"You selected an invalid strategy name: `strategy='ddpx'`. .* Example choices: auto, ddp, "),
])
def test_a_misspelt_device_setting_stops_with_lightnings_message_alone(setting, message):
    with pytest.raises(SystemExit) as done:  # Lightning raises a plain ValueError for these
        cli("digits", "fit", "--trainer.fast_dev_run", "true", *setting)
    assert re.fullmatch(f"error: {message}.*", done.value.code)


def test_a_run_config_written_before_the_callback_sections_still_loads_with_each_callback_once(tmp_path):
    """tests/fixtures/run_config_0.1.yaml: a run's config.yaml as 0.1 wrote it (every callback in trainer.callbacks, the
    top-level optimizer keys null). The classes it lists take the place of the sections that configure them."""
    run = main(["fit", "--config", str(Path(__file__).with_name("fixtures") / "run_config_0.1.yaml"),
                "--trainer.fast_dev_run", "true"])
    names = [type(c).__name__ for c in run.trainer.callbacks]
    assert names.count("ModelCheckpoint") == 3 and names.count("EarlyStopping") == names.count("ProgressBar") == 1
    assert type(run.trainer.optimizers[0]).__name__ == "Adam"  # the model's, with its schedule
    assert type(run.trainer.lr_scheduler_configs[0].scheduler).__name__ == "ReduceLROnPlateau"


def test_an_always_on_callback_can_be_turned_off(capsys):
    """Training without validation: the callbacks and the schedule that watch it turned off, as the refusal says."""
    with pytest.raises(SystemExit, match=r"--early_stopping null --checkpoint null; --model.scheduler null"):
        cli("digits", "fit", "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0")
    run = cli("digits", "fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches",
              "0", "--early_stopping", "null", "--checkpoint", "null", "--model.scheduler", "null")
    assert run.trainer.global_step == 2 and not [c for c in run.trainer.callbacks if type(c).__name__ == "EarlyStopping"]
    assert len(run.trainer.checkpoint_callbacks) == 2  # last.ckpt, at the epoch's end and mid-epoch


def test_progress_bar_follows_the_config_and_the_trainer_switch():
    """The configs set the bar's refresh rate; ``--trainer.enable_progress_bar false`` still turns it off."""
    shown = cli("digits", "fit", "--trainer.fast_dev_run", "true")
    assert isinstance(shown.trainer.progress_bar_callback, ProgressBar)
    assert shown.trainer.progress_bar_callback.refresh_rate == 10
    hidden = cli("digits", "fit", "--trainer.fast_dev_run", "true", "--trainer.enable_progress_bar", "false")
    assert hidden.trainer.progress_bar_callback is None and hidden.trainer.state.finished


def test_progress_bar_shows_figures_in_the_thousands_as_whole_numbers(monkeypatch):
    """tqdm writes a float with three significant digits: 3840.4321 images a second would read 3.84e+3."""
    figures = {"train/images_per_s": 3840.4321, "val/acc": 0.979, "train/loss_step": float("nan"), "big": float("inf"), "v_num": 0,
               "almost": 999.8123}
    monkeypatch.setattr(TQDMProgressBar, "get_metrics", lambda self, trainer, module: dict(figures))
    shown = ProgressBar().get_metrics(None, None)
    assert shown["train/images_per_s"] == 3840 and Tqdm.format_num(shown["train/images_per_s"]) == "3840"
    assert Tqdm.format_num(figures["train/images_per_s"]) == "3.84e+3"  # what Lightning's bar would show
    assert shown["val/acc"] == 0.979 and shown["big"] == float("inf") and shown["train/loss_step"] != shown["train/loss_step"]
    assert Tqdm.format_num(figures["almost"]) == "1e+3" and Tqdm.format_num(shown["almost"]) == "1000"


@pytest.mark.slow
def test_switching_off_checkpoints_or_the_logger_drops_the_configured_callbacks_that_need_them(capsys):
    """Lightning refuses ModelCheckpoint without checkpointing and LearningRateMonitor without a logger."""
    common = ("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--test_after_fit", "true")
    unsaved = cli("digits", "fit", *common, "--trainer.enable_checkpointing", "false")
    assert unsaved.trainer.checkpoint_callbacks == [] and "test/acc" in unsaved.trainer.callback_metrics
    assert not list(Path("lightning_logs").rglob("*.ckpt"))
    assert "no best checkpoint (checkpointing or validation is off); testing the final weights" in capsys.readouterr().out
    unlogged = cli("digits", "fit", *common, "--trainer.logger", "false")
    assert unlogged.trainer.logger is None and "test/acc" in unlogged.trainer.callback_metrics
    # In the config's trainer.default_root_dir, under lightning_logs: not in the folder the command runs in.
    assert list(Path("lightning_logs/digits/checkpoints").glob("best-*.ckpt")) and (Path("lightning_logs/digits/inputs.png")).is_file()
    assert [p.name for p in Path(".").iterdir()] == ["lightning_logs"]


def test_data_warnings_show_as_their_message_alone_and_others_as_python_shows_them(monkeypatch):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # put back after the test
    quiet_the_libraries(cli_module.LIBRARY_FILTERS, cli_module.LIBRARY_FORMAT_WARNING, (DataWarning,))  # what main() sets
    with pytest.warns(DataWarning, match="Skipped 1 unreadable"):  # what the data modules warn with
        report_skipped(["photos/empty.jpg: empty file (0 bytes)."], Path("photos"))
    skipped = "Skipped 1 unreadable image file(s) in photos:\n  photos/empty.jpg: empty file (0 bytes)."
    assert warnings.formatwarning(skipped, DataWarning, "datamodules/base.py", 100, "rank_zero_warn(...)") == f"Warning: {skipped}\n"
    other = warnings.formatwarning("deprecated", UserWarning, "/site-packages/somelib.py", 7, "warn(...)")
    assert other.startswith("/site-packages/somelib.py:7: UserWarning: deprecated")


@pytest.mark.parametrize(
    "choice",
    [
        ["--model.optimizer", "torch.optim.SGD", "--model.optimizer.lr", "0.05", "--model.optimizer.momentum", "0.9"],
        ["--model.optimizer", "torch.optim.RMSprop", "--model.optimizer.lr", "0.001"],
        ["--model.scheduler", "torch.optim.lr_scheduler.StepLR", "--model.scheduler.step_size", "1"],
        ["--model.scheduler", "torch.optim.lr_scheduler.OneCycleLR", "--model.scheduler.max_lr", "0.01"],
        ["--model.scheduler", "torch.optim.lr_scheduler.OneCycleLR", "--model.scheduler.max_lr", "0.01", "--model.scheduler.total_steps", "6"],
        ["--model.scheduler", "torch.optim.lr_scheduler.CyclicLR", "--model.scheduler.base_lr", "0.001", "--model.scheduler.max_lr", "0.01"],
    ],
    ids=["sgd-momentum", "rmsprop", "steplr", "onecycle", "onecycle-own-budget", "cyclic"],
)
def test_optimizer_and_scheduler_are_config_choices(choice):
    run = cli("digits", "fit", "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", *choice)
    optimizer = run.trainer.optimizers[0]
    assert type(optimizer).__name__ == choice[1].rsplit(".", 1)[-1] or choice[0] == "--model.scheduler"
    if choice[0] == "--model.scheduler":
        config = run.trainer.lr_scheduler_configs[0]
        assert type(config.scheduler).__name__ == choice[1].rsplit(".", 1)[-1]
        assert config.interval == ("step" if "Cyclic" in choice[1] or "OneCycle" in choice[1] else "epoch")  # per batch
        if "OneCycle" in choice[1]:
            assert config.scheduler.total_steps == 6  # the run's whole step budget, from the trainer or as given
            assert config.scheduler.last_epoch == 6  # stepped after every batch, not once an epoch

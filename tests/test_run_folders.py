"""Run folders: one per run, none for a run refused before it logged anything, paths as the user wrote them."""

from pathlib import Path

import pytest
import yaml

from datamodules import Digits
from modules.loggers import TensorBoardRunLogger
from tests.runs import cli, run_in_tmp  # noqa: F401 (run_in_tmp: a fixture)

pytestmark = pytest.mark.usefixtures("run_in_tmp")

def test_runs_started_together_never_share_a_folder_and_one_that_fails_early_leaves_none(monkeypatch):
    """Lightning numbers a run one above the newest folder but creates it only after preparing the data (seconds for
    a folder set decoded the first time): two runs started together drew one number. A run's logger now claims its
    folder as it numbers it."""
    others, prepare = [], Digits.prepare_data

    def prepare_beside_another_run(self):  # another run of this task numbers its folder while this one prepares
        other = TensorBoardRunLogger("lightning_logs", name="digits")
        Path(other.log_dir, "checkpoints").mkdir(parents=True)
        others.append(Path(other.log_dir))
        prepare(self)

    monkeypatch.setattr(Digits, "prepare_data", prepare_beside_another_run)
    run = cli("digits", "fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2")
    ours = Path(run.trainer.log_dir)
    assert len({ours, *others}) == 2 and {ours, *others} == {Path(f"lightning_logs/digits/version_{n}") for n in (0, 1)}
    assert list((ours / "checkpoints").iterdir()) and not list((others[0] / "checkpoints").iterdir())
    # The run's config still asks for a new folder: commands made from it start their own run.
    assert yaml.safe_load((ours / "config.yaml").read_text())["trainer"]["logger"]["init_args"]["version"] is None
    # A run refused before it starts, or one that crashes before logging anything, leaves no folder.
    monkeypatch.setattr(Digits, "prepare_data", prepare)
    with pytest.raises(SystemExit, match="cannot take this data's images"):
        cli("digits", "fit", "--model.net.init_args.in_features", "10")
    monkeypatch.setattr(Digits, "setup", lambda self, stage: 1 / 0)  # not a user error: no message, the traceback
    with pytest.raises(ZeroDivisionError):
        cli("digits", "fit")
    assert sorted(p.name for p in Path("lightning_logs/digits").iterdir()) == ["version_0", "version_1"]


def test_a_resumed_csv_run_keeps_its_earlier_rows():
    """Lightning's CSV writer deletes the metrics.csv it finds as it starts; the project's CSVRunLogger keeps it."""
    common = ("--trainer.logger", "modules.loggers.CSVRunLogger", "--trainer.logger.save_dir", "lightning_logs",
              "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1")
    cli("digits", "fit", "--trainer.max_epochs", "1", *common)
    metrics = Path("lightning_logs/digits/version_0/metrics.csv")
    first = metrics.read_text().splitlines()
    cli("digits", "fit", "--trainer.max_epochs", "2", "--ckpt_path", "last", *common)
    rows = metrics.read_text().splitlines()
    assert rows[:len(first)] == first and len(rows) > len(first) and rows[0] == first[0]  # one header, then both epochs
    assert not Path("lightning_logs/digits/version_1").exists()


def test_a_run_refused_before_its_first_step_leaves_no_run_folder_and_one_refused_later_keeps_its_own():
    runs = Path("lightning_logs/digits")
    with pytest.raises(SystemExit, match="validation is off"):  # refused as the trainer starts, after config.yaml
        cli("digits", "fit", "--trainer.limit_val_batches", "0")
    with pytest.raises(SystemExit, match="model.scheduler plans 5 steps"):  # refused in configure_optimizers
        cli("digits", "fit", "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", "--model.scheduler",
            "torch.optim.lr_scheduler.OneCycleLR", "--model.scheduler.max_lr", "0.01", "--model.scheduler.total_steps", "5")
    assert not list(runs.glob("version_*"))
    with pytest.raises(SystemExit, match="refused at step 2"):
        cli("digits", "fit", "--trainer.callbacks+=tests.killer.RefuseAtStep", "--trainer.callbacks.step=2",
            "--trainer.enable_checkpointing", "false")
    assert [p.name for p in runs.glob("version_*")] == ["version_0"] and list(runs.glob("version_0/events.out.tfevents.*"))


def test_a_tilde_that_no_shell_expanded_means_home_in_every_path(tmp_path, monkeypatch):
    # A YAML value or --opt=~/x reaches the CLI with its "~": logs and checkpoints must both go under $HOME.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cli("digits", "fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", logs="~/runs")
    last = tmp_path / "home" / "runs" / "digits" / "version_0" / "checkpoints" / "last.ckpt"
    assert last.is_file() and list(last.parents[1].glob("events.out.tfevents.*"))
    cli("digits", "predict", "--ckpt_path", "~/runs/digits/version_0/checkpoints/last.ckpt", "--predictions.output", "~/p.csv")
    assert (tmp_path / "home" / "p.csv").is_file()
    assert not (tmp_path / "~").exists()  # the working directory (tmp_path here) holds no folder named "~"


def test_a_config_without_a_task_folder_runs_in_the_loggers_folder_and_finds_its_checkpoints(capsys):
    """No trainer.default_root_dir and no logger name: runs in lightning_logs/version_N, where --ckpt_path looks."""
    common = ("--trainer.default_root_dir", "null", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1")
    cli("digits", "fit", "--trainer.max_epochs", "1", *common)
    assert Path("lightning_logs/version_0/checkpoints/last.ckpt").is_file()
    tested = cli("digits", "test", "--ckpt_path", "best", *common)
    assert "test/acc" in tested.trainer.callback_metrics and Path("lightning_logs/version_1").is_dir()


@pytest.mark.slow
def test_a_spawned_run_names_the_folder_it_wrote(capsys):
    """ddp_spawn starts its processes from a pickled trainer: the folder is numbered before, in this process."""
    cli("digits", "fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1")
    capsys.readouterr()
    cli("digits", "validate", "--ckpt_path", "last", "--trainer.strategy", "ddp_spawn", "--trainer.devices", "1",
        "--trainer.limit_val_batches", "1")
    assert "Validation metrics and pictures: lightning_logs/digits/version_1 " in capsys.readouterr().out
    assert sorted(p.name for p in Path("lightning_logs/digits").iterdir()) == ["version_0", "version_1"]
    assert list(Path("lightning_logs/digits/version_1").glob("events.out.tfevents.*"))

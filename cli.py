"""Train, validate, test and predict any task: ``python cli.py fit --config configs/<task>.yaml``."""

import argparse
import atexit
import contextlib
import csv
import ctypes
import ctypes.util
import difflib
import importlib
import inspect
import logging
import os
import re
import shlex
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import nn

from datamodules import ImageClassificationDataModule
from datamodules.errors import DataError, DataWarning
from modules import ClassifierModule
from modules.callbacks import PredictionWriter, blank_input, say_where_results_went
from modules.checkpoint_io import CheckpointWriteError
from modules.classifier import ConfigError
from modules.nets import WeightsUnavailableError

CONFIGS = Path(__file__).resolve().parent / "configs"
SUBCOMMANDS = ("fit", "validate", "test", "predict")
CKPT_ALIASES = ("last", "best")
RUN_SWITCHES = ("compile", "channels_last")  # how the model runs, not what it trained: the config's say wins
# Model settings a resumed fit may differ in: linked from the data, the run switches, the pretrained download.
NOT_TRAINED_SETTINGS = ("class_names", "input_shape", *RUN_SWITCHES, "net.init_args.weights")
LIGHTNING_OPTIMIZER_KEYS = ("optimizer", "lr_scheduler")  # LightningCLI's top-level ones, not used here

# Raised inside Lightning 2.6's own pytree helper under torch >= 2.10, once per run; nothing here can change it.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
# Lightning 2.6 advertises its cloud logger at every run start; the run's own output is what this terminal is for.
for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(name).addFilter(lambda record: not record.getMessage().startswith("💡 Tip"))


def format_warning(message, category, filename, lineno, line=None) -> str:
    """The project's data warnings as their message alone: Python's format adds the file, line and source line of
    the code that warned, which tell a user nothing about their data."""
    if issubclass(category, DataWarning):
        return f"Warning: {message}\n"
    return PYTHON_FORMAT_WARNING(message, category, filename, lineno, line)


PYTHON_FORMAT_WARNING, warnings.formatwarning = warnings.formatwarning, format_warning


class ClassifierParser(LightningArgumentParser):
    """LightningCLI's parser, whose errors for a misspelt option name the option meant."""

    def error(self, message: str, ex: Exception | None = None):
        if meant := option_meant(message, getattr(ex, "subcommand_parser", None) or self):
            message = f"{meant}\n{message}"
        return super().error(message, ex)


class ClassifierCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Facts the data knows flow into the model, so they are never typed twice.
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")
        parser.link_arguments("data.input_shape", "model.init_args.input_shape", apply_on="instantiate")
        # --predictions.output PATH, --predictions.kaggle_format: where and how `predict` writes its CSV.
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_argument(
            "--test_after_fit", type=bool, default=False,
            help="fit only: test the best checkpoint at the end, in the same process and run folder",
        )
        # LightningCLI's own top-level optimizer and lr_scheduler (turned off in main) would replace the model's
        # configure_optimizers and silently drop its schedule. Their keys stay, hidden, so that run configs written
        # with them (as null) still load; a value is refused in before_instantiate_classes with where it belongs.
        for key in LIGHTNING_OPTIMIZER_KEYS:
            parser.add_argument(f"--{key}", type=Any, default=None, help=argparse.SUPPRESS)

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        if args is None or isinstance(args, list):
            check_the_task_is_given(sys.argv[1:] if args is None else args)
        super().parse_arguments(parser, args)
        # Resolved here, before LightningCLI reads the checkpoint's hyperparameters to rebuild its network.
        config = self.config[self.config.subcommand]
        expand_home(config)
        if config.get("ckpt_path") in CKPT_ALIASES:
            config.ckpt_path = str(find_checkpoint(run_folder(config), config.ckpt_path))
            rank_zero_only(print)(f"Using {config.ckpt_path}")  # once, not once per DDP process
        trained = checkpoint_facts(config.ckpt_path) if config.get("ckpt_path") else {}
        self.trained_on, self.trained_shape = trained.get("class_names"), trained.get("input_shape")
        self.configured_model = config.model.clone()  # LightningCLI replaces it next with the checkpoint's settings

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        if given := [f"--{key}" for key in LIGHTNING_OPTIMIZER_KEYS if config.get(key) is not None]:
            raise ConfigError(
                f"{' and '.join(given)}: LightningCLI's top-level optimizer options are not used here; the model builds "
                "its optimizer and schedule. Use --model.optimizer torch.optim.SGD --model.optimizer.lr 0.1, and "
                "--model.scheduler CLASS (or null); --print_config shows the config's."
            )
        if config.trainer.precision is None:
            config.trainer.precision = default_precision(config.trainer.accelerator)
        if config.trainer.get("barebones"):
            raise ConfigError(
                "trainer.barebones is Lightning's mode for timing its own loop: it forbids self.log, and so the metrics, "
                "checkpoints and early stopping every config relies on. Leave it off; benchmarks/compare.py times "
                "Lightning's loop against a hand-written one."
            )
        # A trainer switch that turns a feature off also drops the configured callbacks that need it (the configs
        # name their progress bar, checkpoints and learning-rate monitor); Lightning would refuse the combination.
        for switched_off, needs in (("enable_progress_bar", ProgressBar), ("enable_checkpointing", ModelCheckpoint),
                                    ("logger", LearningRateMonitor)):
            if config.trainer.get(switched_off) is False and config.trainer.get("callbacks"):
                config.trainer.callbacks = [c for c in config.trainer.callbacks if not is_a(c, needs)]
        if hasattr(config.trainer.logger, "init_args") and not config.trainer.get("fast_dev_run"):
            check_writable(Path(config.trainer.logger.init_args.save_dir), "logs and checkpoints",
                           "--trainer.logger.init_args.save_dir PATH")
        if self.subcommand == "predict" and config.predictions.output:  # found out before predicting, not after
            check_writable(PredictionWriter.csv_path(config.predictions.output).parent, "predictions", "--predictions.output PATH")
        if self.subcommand != "fit" and not config.get("ckpt_path"):
            rank_zero_only(print)(
                f"No --ckpt_path: {self.subcommand} runs the network as the config builds it, untrained. "
                "Add --ckpt_path best (the newest run's best checkpoint), last, or the path of a .ckpt file."
            )
        if config.get("ckpt_path"):
            self.reconcile_model_settings(config)
        if self.subcommand == "fit" and config.get("ckpt_path"):
            resume_in_place(config)
        self.claimed = claim_run_folder(config)
        net = config.model.init_args.net
        if config.get("ckpt_path") and "weights" in getattr(net, "init_args", {}):
            net.init_args.weights = None  # the checkpoint holds every weight: no pretrained download needed
        data = config.data.init_args
        if self.trained_on is not None and "classes" in data and data.classes is None:
            data.classes = self.trained_on  # folder data without a training folder (predict) takes the checkpoint's

    def reconcile_model_settings(self, config) -> None:
        """With --ckpt_path, LightningCLI rebuilds the model from the checkpoint's settings, ignoring the config's. The
        switches of how it runs (compile, channels_last) follow the config again. A resumed fit whose config asks
        for another network, optimizer or schedule is refused: it would silently continue the checkpoint's."""
        configured, trained = self.configured_model.init_args, config.model.init_args
        for switch in RUN_SWITCHES:
            trained[switch] = configured[switch]
        if self.subcommand != "fit":
            return  # evaluating: the checkpoint's network, whatever the config says (as README tells)
        ours, theirs = flat_settings(configured.as_dict()), flat_settings(trained.as_dict())
        differ = [f"{key} {ours.get(key)} (checkpoint: {theirs.get(key)})" for key in sorted(ours.keys() | theirs.keys())
                  if ours.get(key) != theirs.get(key) and not key.startswith(NOT_TRAINED_SETTINGS)]
        if differ:
            own = Path(config.ckpt_path).parent.parent / "config.yaml"
            use = f"the run's own config (--config {own})" if own.is_file() else "the settings it was trained with"
            raise ConfigError(
                f"--ckpt_path {config.ckpt_path} continues a run as it was trained, but this config's model differs: "
                f"model.{', model.'.join(differ)}. Resume with {use}, or start a new run (no --ckpt_path) to train "
                "with these settings."
            )

    def before_fit(self) -> None:
        keep_earlier_csv_metrics(self.trainer)
        if self.config.fit.test_after_fit:
            for callback in self.trainer.callbacks:
                if hasattr(callback, "test_follows_fit"):  # RunSummary, TensorBoardPictures
                    callback.test_follows_fit = True

    def after_fit(self) -> None:
        trainer = self.trainer
        if not self.config.fit.test_after_fit or trainer.interrupted or trainer.fast_dev_run:
            return
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            rank_zero_only(print)("test_after_fit: no best checkpoint (checkpointing or validation is off); testing the final weights.")
        trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
        say_where_results_went(trainer, "test")

    def after_validate(self) -> None:
        say_where_results_went(self.trainer, "val")

    def after_test(self) -> None:
        say_where_results_went(self.trainer, "test")

    def after_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        if self.claimed is not None:  # the run's config.yaml still asks for a new folder, so commands made from it get one
            config.trainer.logger.init_args.version = None
        if self.trained_on is not None and list(self.datamodule.class_names) != list(self.trained_on):
            raise ConfigError(
                f"{config.ckpt_path} was trained on classes {self.trained_on}, but the data "
                f"has classes {list(self.datamodule.class_names)}. Use a checkpoint of this task and data."
            )
        # Batches of one image in training (SyncBatchNorm normalises over every process's batch instead).
        one_image_batches = self.subcommand == "fit" and config.data.init_args.batch_size == 1 and not config.trainer.get("sync_batchnorm")
        check_network_takes_the_data(self.model, self.trained_shape, config.get("ckpt_path"), one_image_batches)


def check_the_task_is_given(args: list[str]) -> None:
    """A --config file that is not there, or a subcommand without one: said with the task configs to choose from
    (jsonargparse says "File does not exist", or "required: fit.data, fit.model")."""
    tasks = "Task configs: " + ", ".join(str(CONFIGS.relative_to(CONFIGS.parent) / p.name) for p in sorted(CONFIGS.glob("*.yaml")))
    here = Path.cwd()
    if here != CONFIGS.parent:
        tasks += f" (in {CONFIGS.parent}: run from there, or give their full paths)"
    given = [value for flag, value in zip(args, args[1:]) if flag in ("--config", "-c")]
    given += [arg.split("=", 1)[1] for arg in args if arg.startswith("--config=")]
    for path in given:
        inline = "\n" in path or ": " in path or path.lstrip().startswith("{")  # jsonargparse also takes YAML text here
        if not inline and not Path(path).expanduser().is_file():
            what = "is a folder, not a config file" if Path(path).expanduser().is_dir() else f"does not exist (looked in {here})"
            raise ConfigError(f"--config {path} {what}. {tasks}.")
    subcommand = next((arg for arg in args if arg in SUBCOMMANDS), None)
    first_config = next((i for i, arg in enumerate(args) if arg in ("--config", "-c") or arg.startswith("--config=")), None)
    # Before the subcommand, --config takes a file with a section per subcommand (fit:, test:); a task config there
    # gets "Option 'model.init_args.net...' is not accepted before subcommand 'fit'".
    if subcommand and first_config is not None and first_config < args.index(subcommand) and not any(map(has_sections, given)):
        rest = [arg for arg in args if arg != subcommand]
        raise ConfigError(f"--config goes after the subcommand: python cli.py {shlex.join([subcommand, *rest])}")
    asks_for_help = {"-h", "--help", "--print_config"} & {arg.split("=")[0] for arg in args}
    if subcommand and not given and not asks_for_help and not any(arg.startswith(("--model", "--data")) for arg in args):
        raise ConfigError(f"{subcommand} needs a task: python cli.py {subcommand} --config configs/<task>.yaml. {tasks}.")


def has_sections(config: str) -> bool:
    """Whether a --config file (or YAML text) is one for the whole program, with a section per subcommand."""
    path = Path(config).expanduser()
    try:
        content = yaml.safe_load(path.read_text() if path.is_file() else config)
    except (OSError, yaml.YAMLError):  # jsonargparse says what is wrong with it
        return True
    return isinstance(content, dict) and bool(set(content) & set(SUBCOMMANDS))


def option_meant(message: str, parser: argparse.ArgumentParser) -> str | None:
    """"Did you mean" for jsonargparse's message about an option it does not know: one of a class's (the model's,
    its network's or optimizer's, the data's: "Option 'X' is not accepted"), or of the trainer's and the rest; and for
    a class that is not there, or one given without an argument it needs."""
    where = "--" + ".".join(re.findall(r'Parser key "([\w.]+)"', message))
    if absent := re.search(r"module '([\w.]+)' has no attribute '(\w+)'", message):
        module, name = absent.groups()
        try:
            names = [n for n in dir(importlib.import_module(module)) if not n.startswith("_")]
        except ImportError:
            return None
        close = difflib.get_close_matches(name, names, n=1)
        return f"{where} {module}.{name}: {module} has no '{name}'" + (f"; did you mean {module}.{close[0]}?" if close else ".")
    required = re.search(r"the following arguments are required: ([\w, ]+)[\s\S]*?class_path='([\w.]+)'", message)
    if required and where != "--":
        needed = " ".join(f"{where}.{name} VALUE" for name in required.group(1).split(", "))
        return f"{where} {required.group(2)} needs {needed}."
    if unknown := re.findall(r"Option '(\w+)' is not accepted", message):
        name = unknown[-1]
        got = re.search(rf"Option '{name}' is not accepted\. Got value: Namespace\(class_path='([\w.]+)'", message)
        answers = []  # per class the message names (a callback's, then Callback's): the closest option, its options
        for owner in [got.group(1)] if got else re.findall(r"class_path '([\w.]+)'", message):
            module, _, qualname = owner.rpartition(".")
            try:
                accepted = list(inspect.signature(getattr(importlib.import_module(module), qualname)).parameters)
            except (AttributeError, ImportError, TypeError, ValueError):
                continue
            close = difflib.get_close_matches(name, accepted, n=1)
            meant = f"; did you mean {where}.{close[0]}?" if close else "."
            answers.append((not close, f"{where}.{name}: {qualname} takes no '{name}'{meant} Its options: {', '.join(accepted)}."))
        return min(answers)[1] if answers else None
    given = re.search(r"unrecognized arguments: (--[\w.]+)|does not accept option '([\w.]+)'", message)
    if not given:
        return None
    name = given.group(1) or f"--{given.group(2)}"
    parsers = [parser] + [sub for action in parser._actions if isinstance(action, argparse._SubParsersAction)
                          for sub in action.choices.values()]  # the subcommands', where the top-level parser answers
    accepted = sorted({option for p in parsers for action in p._actions for option in action.option_strings})
    close = difflib.get_close_matches(name, accepted, n=1)
    return f"{name}: no such option; did you mean {close[0]}? (--help lists them)" if close else None


def flat_settings(settings: dict, prefix: str = "") -> dict:
    """Nested settings as ``{"optimizer.init_args.lr": 0.001, ...}``."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def is_a(configured, kind: type | tuple[type, ...]) -> bool:
    """Whether a configured callback or logger (``class_path`` and ``init_args``, or an object) is a ``kind``."""
    if not hasattr(configured, "class_path"):
        return isinstance(configured, kind)
    module, _, name = configured.class_path.rpartition(".")
    return issubclass(getattr(importlib.import_module(module), name), kind)


def expand_home(config) -> None:
    """``~`` in the paths that Lightning and the predictions writer take as given (a YAML value, or ``--opt=~/x``,
    which no shell expands): a logger's ``save_dir: ~/runs`` put the TensorBoard files under $HOME but the
    checkpoints in a folder named ``~`` in the working directory. The data paths are expanded by the DataModules."""
    logger = config.trainer.get("logger")
    for holder, key in ((config, "ckpt_path"), (config.trainer, "default_root_dir"), (config.get("predictions"), "output"),
                        (getattr(logger, "init_args", None), "save_dir")):
        value = holder.get(key) if holder is not None else None
        if isinstance(value, str) and value.startswith("~"):
            holder[key] = os.path.expanduser(value)


def check_writable(folder: Path, what: str, option: str) -> None:
    """``what`` goes into ``folder``: find out before the work, not when the first file is written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        blocker = next((p for p in (folder, *folder.parents) if p.is_file()), None)  # a file where a folder must be
        why = f"{blocker} is a file, not a folder" if blocker else exc.strerror or exc
        raise ConfigError(f"cannot write {what} to {folder}: {why}. Choose a writable folder with {option}.") from exc


def checkpoint_facts(path: str) -> dict:
    """The hyperparameters a checkpoint of this project records (class names, input shape, network)."""
    file = Path(path)
    if file.is_dir():
        inside = sorted(str(p.relative_to(file)) for pattern in ("*.ckpt", "checkpoints/*.ckpt") for p in file.glob(pattern))
        raise ConfigError(f"--ckpt_path {path} is a folder: give a checkpoint file in it"
                          + (f" ({', '.join(inside)})." if inside else "; it holds no .ckpt file (a run's are in its checkpoints/)."))
    if not file.exists():
        raise ConfigError(f"--ckpt_path {path} does not exist (looked in {Path.cwd()}). Give the path of a .ckpt file, or "
                          "last or best (the newest run's of this task).")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # reads the hyperparameters only
    except Exception:
        try:  # mmap reads only the zip format: a file of torch's older format reads whole, and any other fails as it is
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling, truncation, not a checkpoint at all
            text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # torch's message carries terminal colour codes
            lines = [line.strip() for line in text.splitlines() if line.strip()] or ["no reason given"]
            advice = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)")
            reason = next((line for line in lines if not line.startswith(advice)), lines[0])  # torch's own reason
            if "GLOBAL" in reason:  # torch's weights_only check refused an object the file names
                why = "it holds objects that loading would run code for; this project's checkpoints hold tensors and plain values only"
            else:
                why = "a file cut short (a copy or download interrupted) or another kind of file: give a run's last.ckpt or best-*.ckpt"
            raise ConfigError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {reason[:300]}); {why}.") from exc
    facts = checkpoint.get("hyper_parameters", {})
    if facts.get("class_names") is None:
        raise ConfigError(f"{path}: this checkpoint records no class names; it was not written by this project.")
    return facts


def check_network_takes_the_data(
    model: ClassifierModule, trained_shape: tuple[int, ...] | None = None, ckpt_path: str | None = None,
    one_image_batches: bool = False,
) -> None:
    """One blank forward at the data's input shape (eval mode, no gradients) before the run, so that a network that
    cannot take the data stops with what to change instead of a traceback in the sanity check: another network size
    than the data's (an MLP's in_features), a checkpoint of other images (fine where the network adapts, as with global
    pooling, and said), or, in batches of one image, a BatchNorm layer that would see a single value per channel
    (BatchNorm1d after a Linear; BatchNorm2d normalises over pixels too) and stop at the first training step."""
    shape, single = tuple(model.hparams["input_shape"]), []
    other_size = trained_shape is not None and tuple(trained_shape) != shape

    def record(layer: nn.Module, inputs: tuple[torch.Tensor, ...], _) -> None:
        if inputs[0].shape[2:].numel() == 1:  # (N, C) or (N, C, 1, 1): one value per channel and image
            single.append(type(layer).__name__)

    batch_norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if one_image_batches else []
    hooks = [m.register_forward_hook(record) for m in batch_norms]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(blank_input(model, 1))  # eval mode: one image is enough, and half the work of two
    except RuntimeError as exc:
        if other_size:
            raise ConfigError(
                f"{ckpt_path} was trained on images of shape {tuple(trained_shape)} (channels, height, width); its network "
                f"cannot take this data's {shape} ({exc}). Use a checkpoint of this task and data, or the image size it "
                "was trained on."
            ) from exc
        raise ConfigError(
            f"the network ({type(model.net).__name__}) cannot take this data's images, of shape {shape} (channels, height, "
            f"width): {exc}. Set model.net's sizes (in_features, in_channels, image_size) to the data's."
        ) from exc
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    if single:
        raise ConfigError(
            f"batch_size=1: the network's {single[0]} normalises each channel over the batch, and a batch of one image "
            "gives it a single value per channel (training would stop at its first step). Use --data.batch_size 2 or "
            "more, or a network without BatchNorm."
        )
    if other_size:  # a network that adapts (global pooling) takes it
        rank_zero_only(print)(
            f"Note: {ckpt_path} was trained on images of shape {tuple(trained_shape)}; this run gives it {shape} (channels, "
            f"height, width). To use the size it was trained on: --data.image_size {trained_shape[-1]}."
        )


def resume_in_place(config) -> None:
    """Resume a fit inside the run folder its checkpoint came from: the TensorBoard curves continue, and
    ModelCheckpoint keeps its best score (in a new folder Lightning would drop it, and any epoch could
    become the "best")."""
    run = Path(config.ckpt_path).resolve().parent.parent
    if hasattr(config.trainer.logger, "init_args") and run.parent == run_folder(config).resolve():
        number = version_number(run)  # as a number, the progress bar shows v_num=0, not "on_0"
        config.trainer.logger.init_args.version = run.name if number is None else number
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


@rank_zero_only
def keep_earlier_csv_metrics(trainer) -> None:
    """Lightning's CSV writer deletes the metrics.csv it finds in its folder as it starts ("Previous log files in this
    directory will be deleted"), so a resumed run would lose its earlier epochs, and its curves with them. A copy is
    put back once the writer exists, which then appends to it."""
    for logger in trainer.loggers:
        path = Path(logger.log_dir) / "metrics.csv" if isinstance(logger, CSVLogger) else None
        if path is None or not path.is_file():
            continue
        kept = path.with_name(".metrics.csv.kept")
        shutil.copy2(path, kept)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
            writer = logger.experiment  # created here: it deletes metrics.csv
        os.replace(kept, path)
        with path.open(newline="") as file:
            writer.metrics_keys = next(csv.reader(file), [])  # the header the new rows join


def version_number(run: Path) -> int | None:
    """N of a ``version_N`` run folder, as Lightning's loggers number them; None for another name."""
    number = run.name.removeprefix("version_")
    return int(number) if number != run.name and number.isdigit() else None


def claim_run_folder(config) -> Path | None:
    """Create this run's ``version_N`` folder now, with the number set. Lightning numbers a run one above the newest
    folder but creates it only once the data is prepared and set up (seconds, for a folder set decoded the first
    time): runs started together drew the same number and wrote over each other's checkpoints. Global rank 0
    only: the other DDP processes take its folder from Lightning. A folder left empty (the run failed before
    writing anything) is removed at exit."""
    logger = config.trainer.logger
    numbered = hasattr(logger, "init_args") and is_a(logger, (TensorBoardLogger, CSVLogger)) and logger.init_args.get("version") is None
    first_process = rank_zero_only.rank == 0 and os.environ.get("NODE_RANK", "0") == "0"
    if not numbered or not first_process or config.trainer.get("fast_dev_run"):
        return None
    runs = run_folder(config).absolute()  # the exit handler may run in another working folder
    runs.mkdir(parents=True, exist_ok=True)
    number = max((n for p in runs.glob("version_*") if (n := version_number(p)) is not None), default=-1) + 1
    while True:
        folder = runs / f"version_{number}"
        try:
            folder.mkdir()  # fails where another run got there first
        except FileExistsError:
            number += 1
            continue
        logger.init_args.version = number
        atexit.register(remove_if_empty, folder, runs)
        CLAIMED_RUNS.append(folder)
        return folder


CLAIMED_RUNS: list[Path] = []  # the run folders this main() created


def causes(error: BaseException | None) -> list[BaseException]:
    """``error`` and the errors it was raised from or during (jsonargparse wraps errors raised while instantiating)."""
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def frames(error: BaseException) -> list[Any]:
    """The code of each frame ``error`` passed through, from the outermost to where it was raised."""
    trace, codes = error.__traceback__, []
    while trace is not None:
        codes.append(trace.tb_frame.f_code)
        trace = trace.tb_next
    return codes


def discard_refused_runs(error: BaseException) -> None:
    """A run refused before its first step (a setting found wrong as the trainer set up: validation off under early
    stopping, a schedule shorter than the run) leaves no run folder: its config.yaml and events file would list a run
    that never trained among the real ones. Once a loop has started (Lightning's ``_run_stage``), or the fit is over
    (a test after it, ``after_fit``), the folder stays, whatever stops the run."""
    running = any(code.co_name in ("_run_stage", "after_fit") for cause in causes(error) for code in frames(cause))
    for folder in [] if running else CLAIMED_RUNS:
        if folder.is_dir() and not any(folder.rglob("*.ckpt")):
            shutil.rmtree(folder, ignore_errors=True)


def remove_if_empty(*folders: Path) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):  # not empty: a run wrote into it
            folder.rmdir()


def default_precision(accelerator: str) -> str:
    """bf16-mixed on a GPU that has it; 32-bit elsewhere (bf16 autocast is several times slower on CPUs)."""
    on_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"


def run_folder(config) -> Path:
    """``<save_dir>/<name>`` of the configured logger: where this task's ``version_N`` runs live."""
    logger = config.trainer.logger
    if not hasattr(logger, "init_args"):
        raise ConfigError("--ckpt_path last/best needs the task's logger (trainer.logger) to find earlier runs.")
    return Path(logger.init_args.save_dir) / (logger.init_args.name or "")


def find_checkpoint(task_runs: Path, alias: str) -> Path:
    """The newest run's ``last.ckpt``, or the best checkpoint that run recorded."""
    runs = sorted(task_runs.glob("version_*"), key=lambda p: -1 if (n := version_number(p)) is None else n)
    for run in reversed(runs):
        last = run / "checkpoints" / "last.ckpt"
        if not last.is_file():
            continue
        if alias == "last":
            return last
        state = torch.load(last, map_location="cpu", weights_only=True, mmap=True)  # the callbacks' state only
        for key, value in state.get("callbacks", {}).items():
            # The checkpoint callback that monitors a metric is the one with a score.
            if key.startswith("ModelCheckpoint") and value.get("best_model_score") is not None:
                best = run / "checkpoints" / Path(value["best_model_path"]).name
                if best.is_file():
                    return best
    raise ConfigError(
        f"--ckpt_path {alias}: no run under {task_runs}/version_*/checkpoints/ has a {alias} checkpoint. "
        "Train first with `fit`, or pass the path of a .ckpt file."
    )


def keep_freed_memory() -> None:
    """Let glibc keep the memory a training step frees for the next step, instead of returning it to the OS.

    By default glibc gives large blocks back on free and trims the heap's top, so every CPU step faults its
    activations in again: 0.19-1.06 million page faults in a 2-epoch MNIST run here, a different count each
    run (the worst cost a fifth of an epoch's speed), against 0.19 million with fixed thresholds, same peak memory.
    Skipped where glibc is not the C library, or where the user tunes malloc through the environment."""
    if any(name.startswith("MALLOC_") or name == "GLIBC_TUNABLES" for name in os.environ):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):  # no C library by that name (Windows: no name at all)
        return
    if not hasattr(libc, "gnu_get_libc_version"):  # glibc's own symbol: other C libraries lack or ignore mallopt
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    libc.mallopt(m_mmap_threshold, 32 * 2**20)  # blocks below 32 MiB (glibc's maximum) come from the reusable heap
    libc.mallopt(m_trim_threshold, 256 * 2**20)  # and the heap keeps up to 256 MiB free at its top


def skip_absent_nvml(library: str = "libnvidia-ml.so.1") -> None:
    """Where the NVIDIA driver's NVML ``library`` is not installed, let ``torch.cuda.is_available()`` skip it.

    Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 on import, so that the check asks NVML rather than initialising
    CUDA in a process that forks DataLoader workers. Without the driver every check tries to load NVML, fails, and
    asks CUDA anyway; Adam's step makes that check, so each CPU step paid 0.1-0.4 ms for a failed load (up to 2% of
    a small CNN's step on MNIST). With no driver there is no CUDA to initialise, so nothing a fork could inherit."""
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") != "1":
        return
    try:
        ctypes.CDLL(library)
    except OSError:
        del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]


def tune_the_process() -> None:
    """What every run sets for its whole process (benchmarks/compare.py sets it for the runs it makes in its own)."""
    keep_freed_memory()
    skip_absent_nvml()


def main(args: list[str] | None = None, cli_class: type[ClassifierCLI] = ClassifierCLI) -> ClassifierCLI:
    """``cli_class``: a subclass, for tools that add to a run (benchmarks/compare.py adds a callback)."""
    tune_the_process()
    CLAIMED_RUNS.clear()
    try:
        return cli_class(
            ClassifierModule,
            ImageClassificationDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            parser_class=ClassifierParser,
            save_config_kwargs={"overwrite": True},  # a resumed fit rewrites its run's config.yaml
            args=args,
        )
    except Exception as error:
        cause = user_error(error)
        if cause is None:
            raise
        discard_refused_runs(error)
        sys.exit(f"error: {cause}")


# Errors whose message says what to change: the project's own, and Lightning's for a setting it cannot use.
USER_ERRORS = (DataError, ConfigError, WeightsUnavailableError, CheckpointWriteError, MisconfigurationException)


def user_error(error: BaseException | None) -> BaseException | None:
    """The user-fixable error behind ``error``, if any."""
    return next((cause for cause in causes(error) if isinstance(cause, USER_ERRORS) or device_setting_refused(cause)), None)


def device_setting_refused(error: BaseException) -> bool:
    """Lightning refuses a device setting it cannot use (a misspelt ``accelerator`` or ``strategy`` name, FSDP on a CPU)
    with a plain ValueError that names the setting and the choices; raised by its accelerator connector."""
    raised_in = Path(frames(error)[-1].co_filename) if error.__traceback__ is not None else Path()
    return isinstance(error, ValueError) and raised_in.parts[-3:] == ("trainer", "connectors", "accelerator_connector.py")


if __name__ == "__main__":
    main()

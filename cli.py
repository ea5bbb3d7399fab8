"""Train, validate, test and predict any task: ``python cli.py fit --config configs/<task>.yaml``."""

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

# The warning filters and format torch and Lightning set as they are imported are kept aside and set by main(), so
# that importing this module leaves the importer's warning settings as they were.
with warnings.catch_warnings():
    BEFORE, PYTHON_FORMAT_WARNING = list(warnings.filters), warnings.formatwarning
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, ProgressBar
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
    from lightning.pytorch.utilities import rank_zero_only
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    from datamodules import ImageClassificationDataModule
    from datamodules.errors import DataError, DataWarning
    from modules import ClassifierModule, callbacks
    from modules.checkpoint_io import CheckpointWriteError
    from modules.classifier import ConfigError
    from modules.loggers import resume_in_place, run_folder, run_name
    from modules.messages import SUBCOMMANDS, causes, check_the_task_is_given, option_meant
    from modules.nets import WeightsUnavailableError, pretrained_preprocessing
    from modules.pictures import TensorBoardPictures
    from modules.preflight import (check_network_takes_the_data, check_writable, checkpoint_facts, default_precision,
                                   expand_home, find_checkpoint, flat_settings)
    from modules.process import quiet_the_libraries, tune_the_process
    from modules.export import is_exported, load_exported
    from modules.trainer import Trainer
    LIBRARY_FILTERS = [f for f in warnings.filters if f not in BEFORE]
    LIBRARY_FORMAT_WARNING, warnings.formatwarning = warnings.formatwarning, PYTHON_FORMAT_WARNING  # Lightning's

CONFIGS = Path(__file__).resolve().parent / "configs"
DEFAULTS = CONFIGS / "defaults.yaml"  # what every task shares, loaded before its own config
# The always-on callbacks, each a config section of its own (``--early_stopping.patience 7``, ``--early_stopping null``);
# trainer.callbacks holds what a task adds, since a list in a task config replaces the shared one, not adds to it.
CALLBACKS = {
    "checkpoint": ModelCheckpoint, "last_checkpoint": ModelCheckpoint, "mid_epoch_checkpoint": ModelCheckpoint,
    "early_stopping": EarlyStopping, "lr_monitor": LearningRateMonitor, "summary": callbacks.RunSummary,
    "pictures": TensorBoardPictures, "progress_bar": callbacks.ProgressBar,
}
# A trainer switch that turns a feature off drops the callbacks that need it (Lightning would refuse the pair).
SWITCHED_OFF = {"enable_checkpointing": ModelCheckpoint, "enable_progress_bar": ProgressBar, "logger": LearningRateMonitor}
CKPT_ALIASES = ("last", "best")
RUN_SWITCHES = ("compile", "channels_last", "tta")  # how the model runs, not what it trained: the config's say wins
# Model settings a resumed fit may differ in: linked from the data, the run switches, the pretrained download.
NOT_TRAINED_SETTINGS = ("class_names", "input_shape", *RUN_SWITCHES, "net.init_args.weights")
REFUSED = {  # settings that cannot work here: why, and what to use instead
    "optimizer": "LightningCLI's top-level optimizer would replace the model's and drop its schedule; use "
                 "--model.optimizer torch.optim.SGD --model.optimizer.lr 0.1 (--print_config shows the config's)",
    "lr_scheduler": "LightningCLI's top-level scheduler would replace the model's; use --model.scheduler CLASS (or null)",
    "trainer.barebones": "Lightning's mode for timing its own loop forbids self.log, and so the metrics, checkpoints and "
                         "early stopping every config relies on; benchmarks/compare.py times the loop instead",
}
# Errors whose message says what to change: the project's own, and Lightning's for a setting it cannot use.
USER_ERRORS = (DataError, ConfigError, WeightsUnavailableError, CheckpointWriteError, MisconfigurationException)


class ClassifierParser(LightningArgumentParser):
    """LightningCLI's parser, whose errors for a misspelt option name the option meant."""

    def error(self, message: str, ex: Exception | None = None):
        if meant := option_meant(message, getattr(ex, "subcommand_parser", None) or self):
            message = f"{meant}\n{message}"
        return super().error(message, ex)


class ClassifierCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), **Trainer.SUBCOMMANDS}  # export and serve: methods of modules.trainer.Trainer

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Facts the data knows flow into the model, so they are never typed twice.
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")
        parser.link_arguments("data.input_shape", "model.init_args.input_shape", apply_on="instantiate")
        for key, callback in CALLBACKS.items():  # instantiated by the parser, handed to the trainer below
            parser.add_argument(f"--{key}", type=callback | None, default=None, help=f"a {callback.__name__}; null: none")
        # --predictions.output PATH, --predictions.kaggle_format: where and how `predict` writes its CSV.
        parser.add_lightning_class_args(callbacks.PredictionWriter, "predictions")
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="fit only: test the best checkpoint at the end, in the same process and run folder")
        for key in ("optimizer", "lr_scheduler"):  # kept, hidden, so that run configs written with them (null) load
            parser.add_argument(f"--{key}", type=Any, default=None, help=argparse.SUPPRESS)

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        if args is None or isinstance(args, list):
            check_the_task_is_given(sys.argv[1:] if args is None else args, CONFIGS)
        super().parse_arguments(parser, args)
        # Resolved here, before LightningCLI reads the checkpoint's hyperparameters to rebuild its network.
        config = self.config[self.config.subcommand]
        expand_home(config)
        if config.get("ckpt_path") in CKPT_ALIASES:
            config.ckpt_path = str(find_checkpoint(run_folder(config), config.ckpt_path))
            rank_zero_only(print)(f"Using {config.ckpt_path}")  # once, not once per DDP process
        # An exported file to serve: kept from LightningCLI, which would read it as a checkpoint; put back to run.
        self.exported = config.ckpt_path if self.config.subcommand == "serve" and is_exported(config.ckpt_path) else None
        if self.exported:
            config.ckpt_path = None
        trained = load_exported(self.exported)[1] if self.exported else checkpoint_facts(config.ckpt_path) if config.get("ckpt_path") else {}
        self.trained_on, self.trained_shape = trained.get("class_names"), None if self.exported else trained.get("input_shape")
        self.configured_model = config.model.clone()  # LightningCLI replaces it next with the checkpoint's settings

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        for key, why in REFUSED.items():
            if config.get(key) not in (None, False):
                raise ConfigError(f"--{key}: {why}.")
        if config.trainer.precision is None:  # null: what suits the chip, said once with why
            config.trainer.precision, why = default_precision(config.trainer.accelerator)
            rank_zero_only(print)(f"Precision {config.trainer.precision} (trainer.precision null): {why}.")
        logger = config.trainer.logger
        if hasattr(logger, "init_args") and logger.init_args.get("name") is None:
            logger.init_args.name = run_name(config)  # the task's folder, from trainer.default_root_dir
        if hasattr(logger, "init_args") and not config.trainer.get("fast_dev_run"):
            check_writable(Path(logger.init_args.save_dir), "logs and checkpoints", "--trainer.logger.init_args.save_dir PATH")
        if self.subcommand == "predict" and config.predictions.output:  # found out before predicting, not after
            check_writable(callbacks.PredictionWriter.csv_path(config.predictions.output).parent, "predictions",
                           "--predictions.output PATH")
        if self.subcommand in Trainer.SUBCOMMANDS and not (config.get("ckpt_path") or self.exported):
            raise ConfigError(f"{self.subcommand} needs a trained model: --ckpt_path best (the newest run's best checkpoint), "
                              "last, or the path of a .ckpt file" + (" or of a file export wrote." if self.subcommand == "serve" else "."))
        if self.subcommand != "fit" and not config.get("ckpt_path"):
            rank_zero_only(print)(
                f"No --ckpt_path: {self.subcommand} runs the network as the config builds it, untrained. "
                "Add --ckpt_path best (the newest run's best checkpoint), last, or the path of a .ckpt file."
            )
        if "pretrained" in config.data.init_args:  # what the network's weights expect of images flows into the data
            config.data.init_args.pretrained = pretrained_preprocessing(config.model.init_args.net)
        if config.get("ckpt_path"):
            self.reconcile_model_settings(config)
        if config.get("ckpt_path") or self.exported:
            net = config.model.init_args.net
            if "weights" in getattr(net, "init_args", {}):
                net.init_args.weights = None  # the checkpoint holds every weight: no pretrained download needed
        if self.subcommand == "fit" and config.get("ckpt_path"):
            resume_in_place(config)
        data = config.data.init_args
        if self.trained_on is not None and "classes" in data and data.classes is None:
            data.classes = self.trained_on  # folder data without a training folder (predict) takes the checkpoint's
        config.ckpt_path = self.exported or config.ckpt_path

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

    def instantiate_trainer(self, **kwargs: Any):
        config = self.config_init[self.subcommand]
        off = tuple(callback for switch, callback in SWITCHED_OFF.items() if config.trainer.get(switch) is False)
        listed = list(config.trainer.get("callbacks") or [])
        # A class trainer.callbacks lists itself (as run configs written before these sections did) takes their place.
        sections = [config[key] for key, kind in CALLBACKS.items() if not any(type(c) is kind for c in listed)]
        given = [callback for callback in sections + listed if callback is not None and not isinstance(callback, off)]
        try:
            return super().instantiate_trainer(**kwargs, callbacks=given)
        except ValueError as error:  # a misspelt accelerator or strategy: Lightning's message names the choices
            if not str(error).startswith("You selected an invalid"):
                raise
            raise ConfigError(str(error)) from error

    def after_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        if self.trained_on is not None and list(self.datamodule.class_names) != list(self.trained_on):
            raise ConfigError(
                f"{config.ckpt_path} was trained on classes {self.trained_on}, but the data "
                f"has classes {list(self.datamodule.class_names)}. Use a checkpoint of this task and data."
            )
        # Batches of one image in training (SyncBatchNorm normalises over every process's batch instead).
        one_image_batches = (self.subcommand == "fit" and config.data.init_args.batch_size == 1
                             and not config.trainer.get("sync_batchnorm"))
        check_network_takes_the_data(self.model, self.trained_shape, config.get("ckpt_path"), one_image_batches)

    def claim_run_folder(self) -> None:
        """The run's folder, numbered here: a spawning strategy (ddp_spawn) would have each process number its own."""
        _ = [logger.version for logger in self.trainer.loggers]

    before_validate = before_test = before_predict = claim_run_folder

    def before_fit(self) -> None:
        self.claim_run_folder()
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
        callbacks.say_where_results_went(trainer, "test")

    def after_validate(self) -> None:
        callbacks.say_where_results_went(self.trainer, "val")

    def after_test(self) -> None:
        callbacks.say_where_results_went(self.trainer, "test")


def main(args: list[str] | None = None, cli_class: type[ClassifierCLI] = ClassifierCLI) -> ClassifierCLI:
    """``cli_class``: a subclass, for tools that add to a run (benchmarks/compare.py adds a callback)."""
    tune_the_process()
    quiet_the_libraries(LIBRARY_FILTERS, LIBRARY_FORMAT_WARNING, message_only=(DataWarning,))
    try:
        return cli_class(
            ClassifierModule, ImageClassificationDataModule, subclass_mode_model=True, subclass_mode_data=True,
            auto_configure_optimizers=False, parser_class=ClassifierParser, trainer_class=Trainer,
            parser_kwargs={subcommand: {"default_config_files": [str(DEFAULTS)]} for subcommand in SUBCOMMANDS},
            save_config_kwargs={"overwrite": True},  # a resumed fit rewrites its run's config.yaml
            args=args,
        )
    except Exception as error:
        cause = next((cause for cause in causes(error) if isinstance(cause, USER_ERRORS)), None)
        if cause is None:
            raise
        sys.exit(f"error: {cause}")


if __name__ == "__main__":
    main()

"""What a user is told before a run starts: which task config to give, and the option they meant."""

import argparse
import difflib
import importlib
import inspect
import re
import shlex
from pathlib import Path

import yaml

from modules.classifier import ConfigError

SUBCOMMANDS = ("fit", "validate", "test", "predict", "export", "serve")


def task_configs(configs: Path) -> str:
    """The task configs to choose from, as a sentence (``defaults.yaml`` is not one: every task builds on it)."""
    names = [str(Path(configs.name) / p.name) for p in sorted(configs.glob("*.yaml")) if p.name != "defaults.yaml"]
    where = "" if Path.cwd() == configs.parent else f" (in {configs.parent}: run from there, or give their full paths)"
    return f"Task configs: {', '.join(names)}{where}"


def check_the_task_is_given(args: list[str], configs: Path) -> None:
    """A --config file that is not there, or a subcommand without one: said with the task configs to choose from
    (jsonargparse says "File does not exist", or "required: fit.data, fit.model")."""
    given = [value for flag, value in zip(args, args[1:]) if flag in ("--config", "-c")]
    given += [arg.split("=", 1)[1] for arg in args if arg.startswith("--config=")]
    for path in given:
        inline = "\n" in path or ": " in path or path.lstrip().startswith("{")  # jsonargparse also takes YAML text here
        if not inline and not Path(path).expanduser().is_file():
            what = "is a folder, not a config file" if Path(path).expanduser().is_dir() else f"does not exist (looked in {Path.cwd()})"
            raise ConfigError(f"--config {path} {what}. {task_configs(configs)}.")
    subcommand = next((arg for arg in args if arg in SUBCOMMANDS), None)
    first_config = next((i for i, arg in enumerate(args) if arg in ("--config", "-c") or arg.startswith("--config=")), None)
    # Before the subcommand, --config takes a file with a section per subcommand (fit:, test:); a task config there
    # gets "Option 'model.init_args.net...' is not accepted before subcommand 'fit'".
    if subcommand and first_config is not None and first_config < args.index(subcommand) and not any(map(has_sections, given)):
        rest = [arg for arg in args if arg != subcommand]
        raise ConfigError(f"--config goes after the subcommand: python cli.py {shlex.join([subcommand, *rest])}")
    asks_for_help = {"-h", "--help", "--print_config"} & {arg.split("=")[0] for arg in args}
    if subcommand and not given and not asks_for_help and not any(arg.startswith(("--model", "--data")) for arg in args):
        raise ConfigError(f"{subcommand} needs a task: python cli.py {subcommand} --config configs/<task>.yaml. {task_configs(configs)}.")


def has_sections(config: str) -> bool:
    """Whether a --config file (or YAML text) is one for the whole program, with a section per subcommand."""
    path = Path(config).expanduser()
    try:
        content = yaml.safe_load(path.read_text() if path.is_file() else config)
    except (OSError, yaml.YAMLError):  # jsonargparse says what is wrong with it
        return True
    return isinstance(content, dict) and bool(set(content) & set(SUBCOMMANDS))


def close_option(name: str, owner: str, where: str) -> tuple[bool, str] | None:
    """``where.name`` is not an option of the class ``owner`` (a dotted path): the closest one, and all of them."""
    module, _, qualname = owner.rpartition(".")
    try:
        accepted = list(inspect.signature(getattr(importlib.import_module(module), qualname)).parameters)
    except (AttributeError, ImportError, TypeError, ValueError):
        return None
    close = difflib.get_close_matches(name, accepted, n=1)
    meant = f"; did you mean {where}.{close[0]}?" if close else "."
    return not close, f"{where}.{name}: {qualname} takes no '{name}'{meant} Its options: {', '.join(accepted)}."


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
        # Per class the message names (a callback's, then Callback's): the closest option, and its options.
        answers = [a for owner in ([got.group(1)] if got else re.findall(r"class_path '([\w.]+)'", message))
                   if (a := close_option(name, owner, where))]
        return min(answers)[1] if answers else None
    given = re.search(r"unrecognized arguments: (--[\w.]+)|does not accept option '([\w.]+)'", message)
    if not given:
        return None
    name = given.group(1) or f"--{given.group(2)}"
    accepted = sorted({option for p in [parser, *subcommand_parsers(parser)] for action in p._actions
                       for option in action.option_strings})
    close = difflib.get_close_matches(name, accepted, n=1)
    return f"{name}: no such option; did you mean {close[0]}? (--help lists them)" if close else None


def subcommand_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The subcommands' parsers, where the top-level parser answers (argparse keeps them in its actions)."""
    return [sub for action in parser._actions if isinstance(action, argparse._SubParsersAction) for sub in action.choices.values()]


def causes(error: BaseException | None) -> list[BaseException]:
    """``error`` and the errors it was raised from or during (jsonargparse wraps errors raised while instantiating)."""
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain

"""README's two commands are the ones that CI and users run, and every `python cli.py` command the docs give parses."""

import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLACEHOLDERS = ("PATH", "DIR", "FILE")  # stand for the reader's own data: PATH, DIR/sub, PATH/TO/mnist
SHELL_ENDS = (">", ">>", "2>", "2>&1", "|", ";")  # a command's own arguments stop at a redirection or a pipe


def two_commands() -> list[str]:
    section = (ROOT / "README.md").read_text().split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_readme_gives_a_quickstart_and_a_test_command():
    quickstart, tests = two_commands()
    assert "cli.py fit --config configs/digits.yaml" in quickstart
    assert tests.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command_word_for_word():
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert two_commands()[1] in ci_lines


def cli_commands() -> list[tuple[str, list[str]]]:
    """Every `python cli.py ...` in a fenced bash block of README.md and docs/*.md: (where, its arguments), once each.
    Backslash continuations are joined, `&&` chains split, comments, `VAR=value` prefixes and redirections dropped."""
    found: dict[tuple[str, ...], str] = {}
    for page in PAGES:
        text = page.read_text()
        for block in re.finditer(r"^[ \t]*```bash\n(.*?)^[ \t]*```", text, flags=re.M | re.S):
            first_line = text.count("\n", 0, block.start(1)) + 1
            for offset, line in enumerate(block.group(1).replace("\\\n", " ").splitlines()):
                for command in line.split("&&"):
                    words = shlex.split(command, comments=True)
                    while words and re.fullmatch(r"\w+=\S*", words[0]):
                        words.pop(0)
                    if words[:2] != ["python", "cli.py"]:
                        continue
                    args = words[2:]
                    args = args[: next((i for i, word in enumerate(args) if word in SHELL_ENDS), len(args))]
                    found.setdefault(tuple(args), f"{page.relative_to(ROOT)}:{first_line + offset}")
    return [(where, list(args)) for args, where in found.items()]


COMMANDS = cli_commands()


def test_the_docs_give_cli_commands():
    assert len(COMMANDS) >= 20, [where for where, _ in COMMANDS]


@pytest.mark.slow  # about 1 s a command: LightningCLI builds its whole parser for each
@pytest.mark.parametrize("args", [args for _, args in COMMANDS], ids=[where for where, _ in COMMANDS])
def test_a_documented_command_parses(args, tmp_path, capsys, monkeypatch):
    """Parsing reads no data and no checkpoint, so a command for a dataset that is not here, or with `--ckpt_path
    best`/`last` before any run, parses all the same: `--print_config` prints the resolved config and exits before
    the data is set up and before `best`/`last` are looked up."""
    import cli

    monkeypatch.chdir(ROOT)  # configs/... as a reader runs them, from the repository root
    monkeypatch.setattr(sys, "argv", ["cli.py"])  # pytest's own arguments are not the command's
    args = [re.sub(rf"^({'|'.join(PLACEHOLDERS)})(?=/|$)", str(tmp_path), arg) for arg in args]
    for i, arg in enumerate(args):
        if run := re.fullmatch(r"lightning_logs/(\w+)/version_\d+/config\.yaml", arg):  # a run's own config, as it saves it
            with pytest.raises(SystemExit):
                cli.main(["fit", "--config", f"configs/{run.group(1)}.yaml", "--print_config"])
            args[i] = str(tmp_path / "config.yaml")
            Path(args[i]).write_text(capsys.readouterr().out)
    with pytest.raises(SystemExit) as exit:
        cli.main(args if "--print_config" in args else [*args, "--print_config"])
    out, err = capsys.readouterr()
    assert exit.value.code in (0, None), f"python cli.py {shlex.join(args)}\n{exit.value.code}\n{err[-3000:]}"
    if "--help" in args:
        assert "usage:" in out
    else:
        assert {"model", "data", "trainer"} <= set(yaml.safe_load(out)), out[-3000:]


def test_every_link_of_the_docs_leads_to_a_file():
    linked = set()
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)[^)]*\)|src=\"([^\"]+)\"", page.read_text()):
            target = next(t for t in target if t)
            if not re.match(r"\w+://", target):
                linked.add((page.parent / target).resolve())
                assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links {target}, which is not there"
    assert set(PAGES[1:]) <= linked, "README's documentation index links every page in docs/"


def test_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 160, "move the detail into a page in docs/"

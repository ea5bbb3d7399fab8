"""README's two commands are the ones that CI and users run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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

"""The README's Quickstart has exactly two commands, and CI runs the test command verbatim."""

import re
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def quickstart_commands():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_quickstart_has_one_demo_and_one_test_command():
    commands = quickstart_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert commands[0].endswith("python pipelines/demo.py")
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert quickstart_commands()[1] in ci


def readme_python_commands():
    """Every ``python …`` line in the README's code blocks, as it is written there."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip().startswith("python ")]


def test_every_readme_command_answers_its_help_with_the_options_it_shows(capsys, monkeypatch):
    commands = readme_python_commands()
    assert len(commands) >= 8
    for command in commands:
        words = command.split()[1:]
        first_option = next((i for i, w in enumerate(words) if w.startswith("-") and w != "-m"), len(words))
        program, arguments = words[:first_option], words[first_option:]
        shown = {w.strip("[]").split("=")[0] for w in arguments if w.lstrip("[").startswith("--")}
        module = program[1] if program[0] == "-m" else None
        script = str(ROOT / program[0]) if module is None else None
        subcommand = program[2:] if module else program[1:]
        monkeypatch.setattr(sys, "argv", [module or script, *subcommand, "--help"])
        with pytest.raises(SystemExit) as exit_:  # in this process: one import of torch for all of them
            if module:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(script, run_name="__main__")
        help_text = capsys.readouterr().out
        assert exit_.value.code in (0, None), f"{command}: exit {exit_.value.code}"
        missing = [option for option in shown if option not in help_text]
        assert not missing, f"{command}: --help does not list {missing}"

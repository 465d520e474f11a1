"""The README Quickstart holds exactly two commands, and .ci/run runs the test one verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_quickstart_has_two_one_line_commands() -> None:
    commands = _quickstart_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)
    assert commands[0].endswith("sigma demo")
    assert "pytest" in commands[1]
    assert all("-c constraints-cpu.txt" in c for c in commands)


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert _quickstart_commands()[1] in ci


def test_constraints_pin_cpu_torch_and_pyproject_keeps_a_range() -> None:
    assert "torch==2.13.0" in (ROOT / "constraints-cpu.txt").read_text(encoding="utf-8")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'"torch>=[\d.]+,<\d+"', pyproject)
    assert "torch==" not in pyproject

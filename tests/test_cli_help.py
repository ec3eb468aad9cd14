"""`--help` of every command-line entry point exits 0 and lists its flags (the first thing a new user types)."""

import dataclasses
import importlib.util
import re
import runpy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINTS = sorted(
    str(path.relative_to(REPO))
    for folder in ("vla-scripts", "scripts", "experiments")
    for path in (REPO / folder).rglob("*.py")
    if "__main__" in path.read_text()
)


def config_fields(script: Path) -> list[str]:
    """Fields of the draccus config dataclasses the script uses (none for argparse scripts)."""
    spec = importlib.util.spec_from_file_location(f"cli_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    classes = [
        c for c in vars(module).values()
        if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__name__.endswith("Config")
    ]  # fmt: skip
    return [f.name for c in classes for f in dataclasses.fields(c)]


def documented_flags(script: Path) -> set[str]:
    """Flags that the script's docstring passes to it in its example command lines (not the launcher's flags)."""
    docstring = script.read_text().split('"""')[1].replace("\\\n", " ")
    commands = [line.strip() for line in docstring.splitlines() if script.name in line]
    arguments = [line.split(script.name, 1)[1] for line in commands if line.startswith(("python", "torchrun"))]
    return {flag for line in arguments for flag in re.findall(r"--([a-z_][a-z0-9_]*)", line)}


def test_every_entry_point_is_covered():
    assert {"vla-scripts/finetune.py", "experiments/robot/libero/run_libero_eval.py",
            "vla-scripts/deploy.py", "scripts/compare_eval_runs.py"} <= set(ENTRY_POINTS)  # fmt: skip


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_help_exits_cleanly_and_lists_the_flags(entry_point, monkeypatch, capsys):
    script = REPO / entry_point
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code in (0, None)
    text = capsys.readouterr().out
    assert text.startswith("usage:"), text[:500]
    fields = set(config_fields(script))
    missing = sorted(flag for flag in documented_flags(script) | fields if f"--{flag}" not in text)
    assert not missing, f"{entry_point} --help does not list {missing}"

"""The README's configuration reference is generated from the model and must not drift."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_reference_matches_the_config_model() -> None:
    spec = importlib.util.spec_from_file_location(
        "update_readme_reference", ROOT / "scripts" / "update_readme_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (ROOT / "README.md").read_text()
    assert module.updated(readme) == readme, "run scripts/update_readme_reference.py"
    assert "`services.<name>.pool.max_idle`" in readme


def test_readme_quick_start_is_two_commands_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in quick.strip().splitlines()]
    assert commands == ["./scripts/demo", "./scripts/test"]
    for command in commands:
        assert (ROOT / command).stat().st_mode & 0o111
    assert "exec ./scripts/test" in (ROOT / ".ci" / "run").read_text()

"""Helpers for config tests: write YAML to a temporary file and load it for real."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from portway.config.loader import load_config
from portway.errors import ConfigError, ConfigIssue

WriteYaml = Callable[[str], Path]
IssuesIn = Callable[[str], list[ConfigIssue]]


@pytest.fixture
def write_yaml(tmp_path: Path) -> WriteYaml:
    """Writes dedented YAML to ``portway.yaml``; line 1 is the first line after the quotes."""

    def write(text: str) -> Path:
        path = tmp_path / "portway.yaml"
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


@pytest.fixture
def issues_in(write_yaml: WriteYaml) -> IssuesIn:
    """Loads YAML that must fail and returns the issues, checking that each names the file."""

    def load(text: str) -> list[ConfigIssue]:
        path = write_yaml(text)
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        issues = caught.value.issues
        assert issues, "a ConfigError must carry at least one issue"
        assert all(issue.source == str(path) for issue in issues)
        return issues

    return load


def where(issue: ConfigIssue) -> tuple[int | None, int | None, str]:
    """Line, column and field of an issue: what most assertions compare."""
    return issue.line, issue.column, issue.field

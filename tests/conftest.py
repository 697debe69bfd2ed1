"""Shared fixtures: every test gets its own run store, never the user's."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(autouse=True)
def isolated_store(tmp_path, monkeypatch):
    """WORKBENCH_STORE points at a fresh SQLite file for each test."""
    path = tmp_path / "store" / "runs.sqlite"
    monkeypatch.setenv("WORKBENCH_STORE", str(path))
    monkeypatch.delenv("WORKBENCH_RUN_DIR", raising=False)
    monkeypatch.delenv("WORKBENCH_ARTIFACTS", raising=False)
    return path


def workbench_cmd(*args: str) -> list[str]:
    """The CLI as a subprocess command (the venv's python, whatever PATH says)."""
    return [sys.executable, "-m", "workbench.cli", *args]


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def blobs():
    """The tiny synthetic classification set (ci size)."""
    from workbench.data import load_dataset
    return load_dataset("synthetic", size="ci")


@pytest.fixture(scope="module")
def text():
    """The standard-library byte corpus (ci size)."""
    from workbench.data import load_dataset
    return load_dataset("bytes", size="ci")


def pytest_configure(config):
    # Bokeh (3.9) calls DataFrame.reset_index(inplace=True) on every ColumnDataSource made
    # from a frame, which pandas 3.1 deprecates: dozens of identical lines per dashboard test.
    config.addinivalue_line(
        "filterwarnings", "ignore:The inplace keyword in DataFrame.reset_index is deprecated"
                          ":DeprecationWarning:bokeh.models.sources")

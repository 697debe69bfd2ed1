"""environment.yml and pyproject.toml must agree, and the console script must exist."""
import subprocess
import sys
import tomllib

import yaml

from conftest import ROOT


def _pip_section(env: dict) -> list[str]:
    for dep in env["dependencies"]:
        if isinstance(dep, dict) and "pip" in dep:
            return dep["pip"]
    raise AssertionError("environment.yml has no pip section")


def test_environment_yml_lists_pyproject_dependencies():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    pip = _pip_section(env)
    assert set(p for p in pip if not p.startswith("-e")) == wanted
    assert "-e ." in pip and "python=3.11" in env["dependencies"]
    assert env["name"] == "workbench"


def test_console_script_and_help():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["workbench"] == "workbench.cli:main"
    out = subprocess.run([sys.executable, "-m", "workbench.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for verb in ("run", "sweep", "runs", "serve", "lab"):
        assert verb in out


def test_ci_script_calls_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()

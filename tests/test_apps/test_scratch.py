"""The suite's temporary files: a passing test file leaves none behind
(pyproject's ``tmp_path_retention_policy`` and conftest's
``module_scratch``); a failing one keeps its folders to debug; a session
fixture's folder outlives the files that use it. Checked by running pytest
on two small test files with this repository's conftest fixtures."""

import os
import subprocess
import sys
import textwrap

import tomllib

import conftest

CONFTEST = f"""
import importlib.util
spec = importlib.util.spec_from_file_location("repo_conftest", {conftest.__file__!r})
repo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(repo)
module_scratch = repo.module_scratch

import pytest

@pytest.fixture(scope="session")
def shared(tmp_path_factory):
    path = repo.session_tmp(tmp_path_factory, "shared")
    (path / "kept.bin").write_bytes(b"x")
    return path
"""

PASSING = """
import pytest

@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "w.bin"
    path.write_bytes(bytes(1000))
    return path

def test_reads_the_module_file(weights, shared):
    assert weights.stat().st_size == 1000

written = []

def test_writes_its_own(tmp_path):
    (tmp_path / "out.bin").write_bytes(b"y")
    written.append(tmp_path)

def test_a_passing_test_folder_is_freed_when_it_ends():
    assert written and not written[0].exists()
"""

FAILING = """
import pytest

@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return tmp_path_factory.mktemp("export")

def test_fails(export, shared, tmp_path):
    (tmp_path / "out.bin").write_bytes(b"z")
    assert False
"""


def run(tmp_path, files):
    project = tmp_path / "project"
    project.mkdir()
    (project / "conftest.py").write_text(CONFTEST)
    for name, text in files.items():
        (project / name).write_text(textwrap.dedent(text))
    base = tmp_path / "base"
    # This repository's setting, so that changing it fails here.
    ini = tomllib.loads((conftest.REPO / "pyproject.toml").read_text())["tool"]["pytest"]
    policy = ini["ini_options"].get("tmp_path_retention_policy", "all")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "-o", f"tmp_path_retention_policy={policy}", f"--basetemp={base}", str(project)],
        capture_output=True, text=True, cwd=project, timeout=300)
    # Folders only: pytest's own ``<prefix>current`` links are not counted.
    return proc, sorted(n for n in os.listdir(base) if not (base / n).is_symlink())


def test_a_passing_file_leaves_only_session_folders(tmp_path):
    proc, left = run(tmp_path, {"test_passing.py": PASSING})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert left == ["shared0"]


def test_a_failing_file_keeps_its_folders(tmp_path):
    proc, left = run(tmp_path, {"test_passing.py": PASSING, "test_failing.py": FAILING})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert left == ["export0", "shared0", "test_fails0"]

"""The import layering holds: ``apps -> localization -> detection -> resnet_tf``.

``lint-imports`` (import-linter) checks the contracts in ``pyproject.toml``;
``make test`` runs it before pytest, and these tests run it too, on the real
tree and on a copy with an upward import added (which must fail, so the
contracts can catch what they are for).
"""

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("apps", "localization", "detection", "resnet_tf")  # top layer first


def _lint_imports(cwd):
    """Run ``lint-imports --no-cache`` in ``cwd`` with ``cwd`` first on the
    path; return (exit status, output)."""
    script = Path(sys.executable).parent / "lint-imports"
    if not script.exists():
        pytest.fail(f"{script} not found: install the dev requirements "
                    "(pip install -r requirements-dev.txt, or make setup).")
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    out = subprocess.run([str(script), "--no-cache", "--no-logo"], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=300)
    return out.returncode, out.stdout + out.stderr


def _config():
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["importlinter"]


def test_config_names_all_four_packages_in_layer_order():
    config = _config()
    assert sorted(config["root_packages"]) == sorted(PACKAGES)
    layers = [c for c in config["contracts"] if c["type"] == "layers"
              and not c.get("containers")]
    assert [c["layers"] for c in layers] == [list(PACKAGES)]


def test_contracts_hold_on_the_tree():
    status, output = _lint_imports(ROOT)
    assert status == 0, output
    assert " 0 broken" in output and "BROKEN" not in output, output
    assert output.count("KEPT") == len(_config()["contracts"]), output


@pytest.mark.parametrize("low, high", [("resnet_tf", "detection"),
                                       ("detection", "localization"),
                                       ("localization", "apps")])
def test_an_upward_import_breaks_the_layers(tmp_path, low, high):
    """A copy of the tree, with one module of ``low`` importing ``high``:
    ``lint-imports`` must fail and name that import."""
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / low / "_upward_probe.py").write_text(f"import {high}\n")
    status, output = _lint_imports(tmp_path)
    assert status != 0, output
    assert f"{low} is not allowed to import {high}" in output, output
    assert f"{low}._upward_probe -> {high}" in output, output

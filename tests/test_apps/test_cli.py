"""The resnet-tf command line."""

import json
import subprocess
import sys

from apps import cli


def test_models_json_for_chosen_architectures(capsys):
    assert cli.main(["models", "resnet18", "plain20", "resnet20", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["resnet18", "plain20", "resnet20"]
    for r in rows:
        assert {"name", "params", "trainable_params", "macs"} <= set(r)
    r18 = rows[0]
    assert r18["trainable_params"] == 11_689_512 and r18["block"] == "basic"
    assert r18["shortcut"] == "B" and r18["input_size"] == 224
    assert abs(r18["macs"] / 1e9 - 1.8) < 0.09
    # Plain twin == option-A residual net.
    assert rows[1]["params"] == rows[2]["params"] and rows[1]["macs"] == rows[2]["macs"]
    assert rows[2]["shortcut"] == "A" and rows[2]["input_size"] == 32


def test_models_table_with_shortcut_options(capsys):
    assert cli.main(["models", "resnet34", "--shortcuts", "A,B,C"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [ln.split() for ln in lines[2:]]
    assert [r[3] for r in rows] == ["A", "B", "C"]
    params = [int(r[5].replace(",", "")) for r in rows]
    assert params[0] < params[1] < params[2]  # C adds projections everywhere


def test_bad_names_and_options_fail_cleanly(capsys):
    assert cli.main(["models", "resnet19"]) == 2
    assert "Unsupported CIFAR depth 19" in capsys.readouterr().err
    assert cli.main(["models", "resnet18", "--shortcuts", "Z"]) == 2
    assert "'Z'" in capsys.readouterr().err


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "apps.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "models" in out

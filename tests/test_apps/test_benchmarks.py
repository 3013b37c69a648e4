"""The issue-9 benchmarks still run: each script, at a tiny size, measures
every peer that is installed here and prints its table.

These are not timings (benchmarks/RESULTS.md holds those); they catch a
benchmark that breaks when the package changes under it. tf_keras and
PyTorch are benchmark extras (`make bench`); without them those peers are
left out.
"""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

import conftest

REPO = str(conftest.REPO)
EXTRAS = [p for p, mod in (("tf_keras", "tf_keras"), ("torch", "torch"))
          if importlib.util.find_spec(mod) is not None]


def _run(script, *args):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", script), *args],
                          capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _table(out, peers):
    """{setting: [value per peer]} from the printed markdown table."""
    lines = [ln for ln in out.splitlines() if ln.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[1:1 + len(peers)] == peers, header
    rows = {}
    for ln in lines[1:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        rows[cells[0]] = [float(re.match(r"[\d.]+", c).group()) for c in cells[1:1 + len(peers)]]
    return rows


@pytest.mark.slow
def test_train_throughput_runs_every_installed_peer():
    peers = ["ours", *EXTRAS, "keras_applications"]
    out = _run("train_throughput.py", "--peers", ",".join(peers), "--policies", "float32",
               "--size", "32", "--batch", "2", "--steps", "1", "--warmup", "1",
               "--repeats", "1")
    rows = _table(out, peers)
    assert list(rows) == ["float32"]
    assert all(v > 0 for v in rows["float32"]), rows
    assert "x (" in out  # the ratio column: ours / the best other peer


@pytest.mark.slow
def test_train_throughput_cifar_net_has_its_peers():
    # keras.applications has no CIFAR ResNet; the others build ResNet-8.
    peers = ["ours", *EXTRAS]
    out = _run("train_throughput.py", "--arch", "resnet8", "--size", "32",
               "--peers", ",".join(peers + ["keras_applications"]), "--policies", "float32",
               "--batch", "4", "--steps", "1", "--warmup", "1", "--repeats", "1")
    rows = _table(out, peers)
    assert all(v > 0 for v in rows["float32"]), rows


@pytest.mark.slow
def test_infer_latency_runs_every_installed_peer():
    peers = ["ours", *EXTRAS, "keras_applications"]
    out = _run("infer_latency.py", "--peers", ",".join(peers), "--policies", "float32",
               "--size", "32", "--batches", "1", "--iters", "1", "--warmup", "1",
               "--repeats", "1")
    rows = _table(out, peers)
    assert list(rows) == ["float32 batch 1"]
    assert all(v > 0 for v in rows["float32 batch 1"]), rows


@pytest.mark.slow
def test_import_weights_times_and_compares_one_torchvision_file():
    # find_spec, not importorskip: torchvision must not be imported in a process
    # that has imported TensorFlow (tests/torch_source.py says why).
    missing = [m for m in ("torch", "torchvision", "safetensors")
               if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")
    from conftest import shared_data

    shared_data("imagenet-val-loc")
    shared_data("hymenoptera")
    out = _run("import_weights.py", "--sources", "torchvision", "--depths", "18",
               "--images", "2", "--repeats", "1")
    rows = [ln for ln in out.splitlines() if ln.startswith("| torchvision ")]
    assert len(rows) == 1, out
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1] == "ResNet-18"
    ours, peer = (float(re.match(r"[\d.]+", c).group()) for c in cells[3:5])
    assert ours > 0 and peer > 0
    assert cells[5].endswith("x")  # the ratio column: ours / the framework's own load
    assert float(cells[6]) < 1e-4, rows  # max |diff| / max |logit|
    assert cells[8] == "2/2", rows  # top-1 agreement

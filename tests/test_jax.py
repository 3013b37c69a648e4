"""The same model, weights and outputs under KERAS_BACKEND=jax."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from resnet_tf import build

JAX_SCRIPT = r"""
import sys, numpy as np, keras
assert keras.backend.backend() == "jax", keras.backend.backend()
from resnet_tf import build
name, weights, x_path, out_path = sys.argv[1:5]
model = build(name, classes=7)
model.load_weights(weights)
x = np.load(x_path)
np.save(out_path, np.asarray(model(x, training=False)))
feats = model.feature_model()(x)
assert set(feats) == set(model.stage_outputs)
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                    reason="jax is not installed")
@pytest.mark.parametrize("name,size", [("resnet20", 32), ("resnet50", 64),
                                       ("plain18", 64)])
def test_forward_pass_under_jax_matches_tensorflow(tmp_path, name, size):
    model = build(name, classes=7)
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype("float32")
    want = np.asarray(model(x))
    weights = tmp_path / "w.weights.h5"
    model.save_weights(weights)
    np.save(tmp_path / "x.npy", x)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, name, str(weights),
         str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, atol=1e-5)

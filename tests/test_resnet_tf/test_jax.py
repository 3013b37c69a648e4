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
# Batch norm folded for inference works under JAX too (no tf.* inside).
from resnet_tf.fold import serving_function
folded = np.asarray(serving_function(model)(x))
ref = np.asarray(model(x, training=False))
assert np.abs(folded - ref).max() <= 1e-4 * max(1e-6, np.abs(ref).max()) + 1e-6, \
    np.abs(folded - ref).max()
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


PRIMITIVES_SCRIPT = r"""
import sys, numpy as np, keras
assert keras.backend.backend() == "jax"
from detection.anchors import AnchorGenerator
from detection.box_coder import BoxCoder, HEAD_WEIGHTS
from detection.matcher import rpn_matcher
from detection.sampler import sample_balanced
data = np.load(sys.argv[1])
anchors = AnchorGenerator()(4, 6)
m, _, iou = rpn_matcher().match(anchors, data["gt"])
d = BoxCoder(HEAD_WEIGHTS).encode(data["gt"][:1], anchors)
s = sample_balanced(np.asarray(m)[None] >= 0, 16, 0.5, seed=0)
np.savez(sys.argv[2], matches=np.asarray(m), iou=np.asarray(iou), deltas=np.asarray(d),
         sampled=np.asarray(s).sum())
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                    reason="jax is not installed")
def test_detection_primitives_under_jax_match_tensorflow(tmp_path):
    import keras

    from detection.anchors import AnchorGenerator
    from detection.box_coder import BoxCoder, HEAD_WEIGHTS
    from detection.matcher import rpn_matcher

    gt = np.array([[0, 0, 100, 80], [30, 20, 90, 60], [-1, -1, -1, -1]], np.float32)
    np.savez(tmp_path / "in.npz", gt=gt)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", PRIMITIVES_SCRIPT, str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    anchors = AnchorGenerator()(4, 6)
    m, _, iou = rpn_matcher().match(anchors, gt)
    np.testing.assert_array_equal(out["matches"], keras.ops.convert_to_numpy(m))
    np.testing.assert_allclose(out["iou"], keras.ops.convert_to_numpy(iou), atol=1e-6)
    d = BoxCoder(HEAD_WEIGHTS).encode(gt[:1], anchors)
    np.testing.assert_allclose(out["deltas"], keras.ops.convert_to_numpy(d), atol=1e-4)
    assert int(out["sampled"]) > 0

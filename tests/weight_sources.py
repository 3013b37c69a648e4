"""Source models with realistic BN statistics, shared by the weight-import
tests and benchmarks/import_weights.py (no pytest here, so the benchmark can
import it)."""

import numpy as np


def calibrate_batch_norms(model, forward, seed=0):
    """Random BN scale and shift for every ``keras.layers.BatchNormalization``
    of ``model``, then the moving statistics of one training-mode call of
    ``forward()`` (momentum 0 for that call: exactly this batch's statistics,
    so inference on that batch reproduces the training-mode outputs)."""
    import keras

    rng = np.random.default_rng(seed)
    bns = [l for l in _walk(model) if isinstance(l, keras.layers.BatchNormalization)]
    old = [bn.momentum for bn in bns]
    for bn in bns:
        bn.gamma.assign(rng.uniform(0.5, 1.5, bn.gamma.shape).astype("float32"))
        bn.beta.assign(rng.normal(0, 0.2, bn.beta.shape).astype("float32"))
        bn.momentum = 0.0
    forward()
    for bn, m in zip(bns, old):
        bn.momentum = m
    return rng


def _walk(layer):
    yield layer
    for child in getattr(layer, "layers", ()):
        yield from _walk(child)

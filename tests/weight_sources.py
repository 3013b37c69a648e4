"""Source models with realistic BN statistics, shared by the weight-import
tests and benchmarks/import_weights.py (no pytest here, so the benchmark can
import it)."""

import os
import subprocess
import sys

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


def torch_source(arch, pixels_npy, out, *extra):
    """Run tests/torch_source.py; returns the source's logits [N, classes]."""
    logits = str(out) + ".logits.npy"
    subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_source.py"), arch,
                    pixels_npy, str(out), logits, *extra], check=True,
                   env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    return np.load(logits)


def keras_source(pixels, include_top=True, seed=0):
    """keras.applications ResNet50 (logits out) with random weights and BN
    statistics of ``pixels`` under its own caffe preprocessing."""
    import keras

    keras.utils.set_random_seed(seed)
    src = keras.applications.ResNet50(weights=None, include_top=include_top,
                                      classifier_activation=None, input_shape=(224, 224, 3))
    x = keras.applications.resnet.preprocess_input(pixels.copy())
    calibrate_batch_norms(src, lambda: src(x, training=True), seed)
    return src, np.asarray(src(x, training=False))


def save_keras2_weights(src, path, include_top=True):
    """The downloaded keras.applications file format: Keras 2 HDF5 weights,
    written by tf_keras (Keras 2) from the same weights."""
    import pytest

    tf_keras = pytest.importorskip("tf_keras")
    k2 = tf_keras.applications.ResNet50(weights=None, include_top=include_top,
                                        input_shape=(224, 224, 3))
    for layer in k2.layers:
        if layer.weights:
            layer.set_weights(src.get_layer(layer.name).get_weights())
    k2.save_weights(str(path))


def tiny_torchvision_file(tmp_path, classes=1000, top=True, depth=18):
    """A torchvision-layout ResNet state dict written by torch.save, built
    from resnet-tf's own key mapping in reverse (no torchvision import in
    this process)."""
    import torch

    from resnet_tf.zoo import IMAGENET_STAGES

    kind, counts = IMAGENET_STAGES[depth]
    g = torch.Generator().manual_seed(0)
    state = {}

    def conv(key, o, i, k):
        state[key] = torch.randn(o, i, k, k, generator=g) * 0.05

    def bn(key, c):
        for name, v in (("weight", torch.ones(c)), ("bias", torch.zeros(c)),
                        ("running_mean", torch.zeros(c)), ("running_var", torch.ones(c))):
            state[f"{key}.{name}"] = v
        state[f"{key}.num_batches_tracked"] = torch.tensor(0)

    conv("conv1.weight", 64, 3, 7)
    bn("bn1", 64)
    cin = 64
    for s, n in enumerate(counts, 1):
        w = 64 * 2 ** (s - 1)
        out = w * (4 if kind == "bottleneck" else 1)
        for b in range(n):
            p = f"layer{s}.{b}"
            if kind == "bottleneck":
                conv(f"{p}.conv1.weight", w, cin, 1)
                conv(f"{p}.conv2.weight", w, w, 3)
                conv(f"{p}.conv3.weight", out, w, 1)
                for i, c in ((1, w), (2, w), (3, out)):
                    bn(f"{p}.bn{i}", c)
            else:
                conv(f"{p}.conv1.weight", w, cin, 3)
                conv(f"{p}.conv2.weight", w, w, 3)
                bn(f"{p}.bn1", w)
                bn(f"{p}.bn2", w)
            if b == 0 and (cin != out or s > 1):
                conv(f"{p}.downsample.0.weight", out, cin, 1)
                bn(f"{p}.downsample.1", out)
            cin = out
    if top:
        state["fc.weight"] = torch.randn(classes, cin, generator=g) * 0.01
        state["fc.bias"] = torch.zeros(classes)
    path = tmp_path / f"resnet{depth}{'' if top else '_notop'}.pth"
    torch.save(state, path)
    return str(path)

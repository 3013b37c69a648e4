"""RPN and conv5 RoI heads, weight carry-over, and the losses."""

import numpy as np
import pytest

import keras

from detection.heads import (build_conv5_head, build_rpn_head, freeze_backbone,
                             load_backbone_weights)
from detection.losses import head_losses, rpn_losses, smooth_l1, total_loss
from resnet_tf import ResNet
from resnet_tf.blocks import BlockOptions
from resnet_tf.layers import BatchNorm


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def test_rpn_head_shapes_follow_anchor_order():
    head = build_rpn_head(in_channels=32, num_anchors=9, conv_channels=16)
    out = head(np.zeros((2, 5, 7, 32), np.float32))
    assert out["objectness"].shape == (2, 5 * 7 * 9)
    assert out["deltas"].shape == (2, 5 * 7 * 9, 4)


@pytest.mark.parametrize("depth,channels", [(18, 256), (50, 1024)])
def test_conv5_head_shapes_and_names(depth, channels):
    head = build_conv5_head(num_classes=3, depth=depth)
    out = head(np.zeros((4, 14, 14, channels), np.float32))
    assert out["class_logits"].shape == (4, 4)
    assert out["box_deltas"].shape == (4, 3, 4)
    assert head.get_layer("conv5_block1_1_conv").strides in ((1, 1), (2, 2))
    # Stride 2 in conv5_1: 14x14 RoIs become 7x7 before pooling.
    assert head.get_layer("conv5_block1_out").output.shape[1:3] == (7, 7)


def test_classifier_conv5_weights_carry_into_the_head():
    clf = ResNet(18, classes=10)
    rng = np.random.default_rng(0)
    for w in clf.weights:
        w.assign(rng.normal(size=w.shape).astype("float32"))
    head = build_conv5_head(num_classes=2, depth=18)
    copied = load_backbone_weights(head, clf)
    assert copied and all(n.startswith("conv5_") for n in copied)
    for name in copied:
        for a, b in zip(head.get_layer(name).weights, clf.get_layer(name).weights):
            np.testing.assert_array_equal(_np(a), _np(b))
    # The classifier's own head is not copied into the detector's.
    assert not np.allclose(_np(head.get_layer("cls_logits").kernel)[:, :2],
                           _np(clf.get_layer("predictions").kernel)[:, :2])
    bias_head = build_conv5_head(2, depth=18, options=BlockOptions(conv_bias=True))
    with pytest.raises(ValueError, match="conv5_block1_1_conv"):
        load_backbone_weights(bias_head, clf)


def test_smooth_l1_and_rpn_losses_against_numpy():
    x = np.array([-2.0, -0.05, 0.0, 0.1, 3.0], np.float32)
    beta = 0.11
    ref = np.where(np.abs(x) < beta, 0.5 * x ** 2 / beta, np.abs(x) - 0.5 * beta)
    np.testing.assert_allclose(_np(smooth_l1(x, beta)), ref, rtol=1e-6)
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 6)).astype(np.float32)
    deltas = rng.normal(size=(2, 6, 4)).astype(np.float32)
    target = rng.normal(size=(2, 6, 4)).astype(np.float32)
    labels = np.array([[1, 0, -1, 0, 1, 0], [0, 0, 1, -1, -1, 0]])
    sampled = labels >= 0
    sampled[0, 5] = False
    out = {k: float(v) for k, v in rpn_losses(logits, deltas, labels, sampled,
                                              target).items()}
    p = 1 / (1 + np.exp(-logits))
    y = (labels == 1).astype(float)
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    n = sampled.sum()
    assert out["rpn_objectness"] == pytest.approx((bce * sampled).sum() / n, rel=1e-5)
    box = np.where(np.abs(deltas - target) < 1 / 9, 0.5 * (deltas - target) ** 2 * 9,
                   np.abs(deltas - target) - 0.5 / 9).sum(-1)
    assert out["rpn_box"] == pytest.approx((box * sampled * y).sum() / n, rel=1e-5)


def test_head_losses_pick_the_labelled_class_deltas():
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [1.0, 1.0, 1.0]], np.float32)
    deltas = np.zeros((3, 2, 4), np.float32)
    deltas[1, 1] = [1.0, 0.0, 0.0, 0.0]  # RoI 1 is class 2: its deltas are row 1
    deltas[1, 0] = [9.0, 9.0, 9.0, 9.0]  # another class's: must be ignored
    labels = np.array([0, 2, 1])
    sampled = np.array([True, True, False])
    out = head_losses(logits, deltas, labels, sampled, np.zeros((3, 4), np.float32))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    assert float(out["head_class"]) == pytest.approx(-(logp[0, 0] + logp[1, 2]) / 2,
                                                     rel=1e-5)
    assert float(out["head_box"]) == pytest.approx((1.0 - 0.5) / 2, rel=1e-5)


@pytest.mark.parametrize("freeze_at,frozen", [(0, ()), (1, ("conv1",)),
                                              (2, ("conv1", "conv2")), (5, ("conv1", "conv2"))])
def test_freeze_backbone_freezes_the_stem_then_conv2(freeze_at, frozen):
    for frozen_bn in (False, True):
        model = ResNet(18, classes=3, width=8)
        freeze_backbone((model,), freeze_at, frozen_bn)
        for layer in model.layers:
            if not layer.weights:
                continue
            want = not layer.name.startswith(frozen) if frozen else True
            if frozen_bn and isinstance(layer, BatchNorm):
                want = False
            assert layer.trainable == want, (freeze_at, frozen_bn, layer.name)
    with pytest.raises(ValueError, match="freeze_at must be 0"):
        freeze_backbone((model,), -1, True)


def test_total_loss_adds_the_regularisation_and_divides_by_the_replicas(monkeypatch):
    import tensorflow as tf

    assert float(total_loss([1.0, 2.0], [0.25, 0.25])) == pytest.approx(3.5)
    assert float(total_loss([1.0, 2.0])) == pytest.approx(3.0)

    class FourReplicas:
        num_replicas_in_sync = 4

    monkeypatch.setattr(tf.distribute, "get_strategy", lambda: FourReplicas())
    assert float(total_loss([1.0, 2.0], [0.5])) == pytest.approx(3.5 / 4)

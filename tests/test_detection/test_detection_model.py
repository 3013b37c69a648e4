"""FasterRCNN (C4): inference outputs, learning with model.fit, frozen BN,
classifier weights carried into the trunk and the conv5 head."""

import numpy as np
import pytest

import keras

from detection.heads import load_backbone_weights
from detection.model import LOSS_NAMES, FasterRCNN
from resnet_tf import ResNet
from resnet_tf.layers import BatchNorm

SMALL = dict(depth=18, anchor_scales=(32, 64, 128), roi_batch=32, rpn_batch=64,
             pooled_size=8, proposals=dict(pre_nms_train=600, post_nms_train=100,
                                           pre_nms_test=300, post_nms_test=50))


def _problem():
    rng = np.random.default_rng(0)
    x = {"images": rng.normal(size=(2, 160, 192, 3)).astype("float32"),
         "image_sizes": np.array([[160, 192], [150, 180]], "float32")}
    y = {"boxes": np.array([[[10, 10, 60, 80], [80, 90, 150, 170], [-1, -1, -1, -1]],
                            [[20, 30, 90, 100], [-1] * 4, [-1] * 4]], "float32"),
         "classes": np.array([[0, 2, -1], [1, -1, -1]], "int32")}
    return x, y


def test_inference_outputs_are_padded_fixed_size():
    model = FasterRCNN(3, **SMALL, max_detections=20)
    x, _ = _problem()
    out = model(x)
    assert out["boxes"].shape == (2, 20, 4) and out["classes"].shape == (2, 20)
    n = out["num_detections"].numpy()
    for b in range(2):
        assert (out["classes"].numpy()[b, n[b]:] == -1).all()
        kept = out["boxes"].numpy()[b, :n[b]]
        h, w = x["image_sizes"][b]
        assert (kept >= 0).all() and (kept[:, 2] <= h).all() and (kept[:, 3] <= w).all()


@pytest.mark.slow
def test_fit_learns_to_detect_the_ground_truth():
    keras.utils.set_random_seed(0)
    model = FasterRCNN(3, **SMALL, frozen_bn=False, freeze_at=0)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9, clipnorm=10.0))
    x, y = _problem()
    hist = model.fit(x, y, epochs=40, batch_size=2, verbose=0).history
    assert set(LOSS_NAMES) <= set(hist)
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]
    assert hist["head_class"][-1] < 0.3 * hist["head_class"][0]
    out = model(x)
    for b in range(2):
        n = int(out["num_detections"][b])
        boxes, classes = out["boxes"].numpy()[b, :n], out["classes"].numpy()[b, :n]
        scores = out["scores"].numpy()[b, :n]
        for gt, c in zip(y["boxes"][b], y["classes"][b]):
            if c < 0:
                continue
            hit = [(s, box) for box, k, s in zip(boxes, classes, scores) if k == c]
            assert hit, (b, c)
            best = max(hit, key=lambda t: t[0])[1]
            assert np.abs(best - gt).max() < 12, (best, gt)


def test_frozen_bn_statistics_do_not_change_while_training():
    model = FasterRCNN(3, **SMALL)  # frozen_bn=True, freeze_at=2 (the paper)
    bns = [l for part in (model.trunk, model.roi_head) for l in part.layers
           if isinstance(l, BatchNorm)]
    assert bns and not any(l.trainable for l in bns)
    rng = np.random.default_rng(1)
    for l in bns:  # pretrained-like statistics, so activations stay sane
        c = l.moving_mean.shape[0]
        l.moving_mean.assign(rng.normal(0, 0.1, c).astype("float32"))
        l.moving_variance.assign(rng.uniform(50, 100, c).astype("float32"))
    before = {id(w): np.array(w) for l in bns for w in l.weights}
    conv = model.trunk.get_layer("conv4_block1_1_conv").kernel
    conv_before = np.array(conv)
    frozen_conv = np.array(model.trunk.get_layer("conv2_block1_1_conv").kernel)
    model.compile(keras.optimizers.SGD(1e-3, momentum=0.9))
    x, y = _problem()
    model.fit(x, y, epochs=2, batch_size=2, verbose=0)
    for l in bns:
        for w in l.weights:
            np.testing.assert_array_equal(np.array(w), before[id(w)])
    assert not np.array_equal(np.array(conv), conv_before)  # conv4 trains
    np.testing.assert_array_equal(  # conv2_x is frozen (freeze_at=2)
        np.array(model.trunk.get_layer("conv2_block1_1_conv").kernel), frozen_conv)


def test_classifier_weights_fill_the_trunk_and_the_conv5_head():
    clf = ResNet(18, classes=10)
    rng = np.random.default_rng(2)
    for w in clf.weights:
        w.assign(rng.normal(size=w.shape).astype("float32"))
    model = FasterRCNN(2, **SMALL)
    copied = load_backbone_weights(model, clf)
    assert any(n.startswith("conv5_") for n in copied)
    assert any(n.startswith("conv4_") for n in copied) and "conv1_conv" in copied
    for name in ("conv5_block1_1_conv", "conv5_block2_2_bn"):
        for a, b in zip(model.roi_head.get_layer(name).weights,
                        clf.get_layer(name).weights):
            np.testing.assert_array_equal(np.array(a), np.array(b))
    np.testing.assert_array_equal(np.array(model.trunk.get_layer("conv1_conv").kernel),
                                  np.array(clf.get_layer("conv1_conv").kernel))


def test_a_narrow_detector_has_a_narrow_trunk():
    model = FasterRCNN(2, width=16, **SMALL)
    assert model.width == 16 and model.get_config()["width"] == 16
    assert model.trunk.output.shape[-1] == 64  # C4 = 4 x 16
    x, _ = _problem()
    assert model(x)["boxes"].shape[0] == 2


def test_narrow_classifier_weights_fill_only_a_detector_of_its_width():
    clf = ResNet(18, classes=4, width=16)
    copied = load_backbone_weights(FasterRCNN(2, width=16, **SMALL), clf)
    assert "conv5_block2_2_conv" in copied and "conv4_block1_1_conv" in copied
    with pytest.raises(ValueError, match="conv1_conv.*width"):
        load_backbone_weights(FasterRCNN(2, **SMALL), clf)  # a width-64 detector


def test_train_detector_refuses_a_classifier_of_another_width(tmp_path):
    from detection.train import train_detector
    from resnet_tf import model_dir
    from resnet_tf.data.preprocessing import Preprocessing

    directory = str(tmp_path / "clf")
    model_dir.save_classifier(directory, ResNet(18, classes=4, width=16), list("abcd"),
                              None, Preprocessing.for_style("imagenet"))
    with pytest.raises(ValueError, match="classifier .* has width 16"):
        train_detector("synthetic", str(tmp_path / "det"), init_from=directory,
                       model_kwargs={"width": 64})


def test_anchors_and_pooling_follow_the_c4_stride():
    from resnet_tf import zoo

    model = FasterRCNN(2, **SMALL)
    assert model.feature_stride == zoo.stage_layout(18).stride("C4") == 16
    assert model.anchor_generator.stride == model.feature_stride
    x, _ = _problem()
    pred = model(x, training=True)
    cells = pred["c4"].shape[1] * pred["c4"].shape[2] * model.anchor_generator.num_anchors
    assert pred["anchors"].shape[0] == cells
    # The C4 map covers the image: 160 x 192 pixels are 10 x 12 cells of 16.
    assert pred["c4"].shape[1:3] == (160 // 16, 192 // 16)


def test_config_round_trip_and_bad_arguments():
    model = FasterRCNN(2, class_names=["a", "b"], **SMALL)
    clone = FasterRCNN.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    x, _ = _problem()
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(x)["scores"].numpy(), model(x)["scores"].numpy())
    with pytest.raises(ValueError, match="pooler"):
        FasterRCNN(2, pooler="warp")
    with pytest.raises(ValueError, match="class names"):
        FasterRCNN(2, class_names=["a"])


class CountsCalls(keras.Model):
    """One Dense layer and a counter that each run of ``call`` increments."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(3)
        self.runs = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                    name="runs")

    def call(self, x):
        self.runs.assign_add(1.0)
        return self.dense(x)


def test_build_variables_creates_the_variables_without_running_the_call():
    from detection.model import build_variables

    model = build_variables(CountsCalls(), np.zeros((2, 5), np.float32))
    assert model.built and model.dense.kernel.shape == (5, 3)
    assert float(model.runs.numpy()) == 0.0  # traced, never run
    model(np.zeros((2, 5), np.float32))
    assert float(model.runs.numpy()) == 1.0


def test_the_detector_built_by_tracing_has_the_eager_call_s_variables():
    """``FasterRCNN.ensure_built`` (traced) makes the variables one eager call
    on the same blank image makes: the same paths, shapes and dtypes."""
    import tensorflow as tf

    from detection.model import FasterRCNN

    def variables(model):
        return sorted((v.path, tuple(v.shape), v.dtype) for v in model.variables)

    kwargs = dict(depth=18, width=8, anchor_scales=(16, 32), global_context=True)
    keras.backend.clear_session()  # the same automatic names in both
    traced = FasterRCNN(3, **kwargs).ensure_built(size=48)
    keras.backend.clear_session()
    eager = FasterRCNN(3, **kwargs)
    eager({"images": tf.zeros([1, 48, 48, 3]), "image_sizes": tf.constant([[48.0, 48.0]])})
    assert traced.built and variables(traced) == variables(eager)

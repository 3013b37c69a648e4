"""Multi-scale testing (Appendix B): C4 on an image pyramid, each RoI read
at its two adjacent levels nearest 224 x 224, merged by maxout before the
siblings; proposals from the single input scale."""

import numpy as np
import pytest
import tensorflow as tf

from detection import multiscale
from detection.model import FasterRCNN

TINY = dict(depth=18, width=8, anchor_scales=(16, 32, 64), pooled_size=6,
            proposals=dict(pre_nms_test=100, post_nms_test=10))
SIZES = np.array([[96, 128], [80, 112]], "float32")


def _images(seed=0):
    return np.random.default_rng(seed).normal(size=(2, 96, 128, 3)).astype("float32")


def test_scale_selection_picks_the_level_nearest_224_squared_and_its_neighbour():
    factors = tf.constant([[f, f] for f in (0.5, 1.0, 2.0, 4.0)], tf.float32)
    boxes = tf.constant([
        [0, 0, 224, 224],   # areas 112^2, 224^2, 448^2 ...: level 1 exact -> 0 below
        [0, 0, 100, 100],   # 50^2, 100^2, 200^2, 400^2: level 2 (below 224) -> 3
        [0, 0, 300, 300],   # 150^2 is nearer in area than 300^2: level 0 -> 1
        [0, 0, 170, 170],   # 85^2, 170^2, 340^2: level 1 (below) -> 2
        [0, 0, 10, 10],     # tiny: the largest level, its only neighbour 2
        [0, 0, 2000, 1000],  # huge: the smallest level, its only neighbour 1
    ], tf.float32)
    first, second = multiscale.select_scales(boxes, factors)
    # The reference: argmin over |area at level - 224^2|, by numpy.
    area = (boxes[:, 2] * boxes[:, 3]).numpy()[:, None] * np.array([0.25, 1, 4, 16])
    np.testing.assert_array_equal(first, np.argmin(np.abs(area - 224.0 ** 2), 1))
    np.testing.assert_array_equal(first, [1, 2, 0, 1, 3, 0])
    np.testing.assert_array_equal(second, [0, 3, 1, 2, 2, 1])
    assert (np.abs(first.numpy() - second.numpy()) == 1).all()  # adjacent levels


def test_one_level_is_both_choices_and_scales_are_checked():
    first, second = multiscale.select_scales(tf.constant([[0, 0, 50, 60.]]),
                                             tf.constant([[1.0, 1.0]]))
    assert int(first[0]) == int(second[0]) == 0
    assert multiscale.check_scales("200,400,600") == (200, 400, 600)
    assert multiscale.check_scales(None) is None
    for bad in ("600,400", "0,200", "a,b", ()):
        with pytest.raises(ValueError, match="test_scales"):
            multiscale.check_scales(bad)


def test_pyramid_levels_follow_the_shorter_side():
    levels, factors = multiscale.pyramid_images(tf.zeros([2, 96, 128, 3]), SIZES, (48, 96, 192))
    # The batch's largest shorter side is 96: factors 0.5, 1, 2.
    assert [tuple(l.shape) for l in levels] == [(2, 48, 64, 3), (2, 96, 128, 3),
                                               (2, 192, 256, 3)]
    np.testing.assert_allclose(factors, [[0.5, 0.5], [1, 1], [2, 2]])
    np.testing.assert_allclose(multiscale.scale_boxes(tf.constant([[2., 4, 6, 8]]),
                                                      factors[2]), [[4, 8, 12, 16]])


def test_take_levels_and_maxout():
    per_level = [tf.fill([3, 2], float(k)) for k in range(4)]
    a, b = multiscale.take_levels(iter(per_level), tf.constant([2, 0, 3]),
                                  tf.constant([1, 1, 0]))
    np.testing.assert_array_equal(a, [[2, 2], [0, 0], [3, 3]])
    np.testing.assert_array_equal(b, [[1, 1], [1, 1], [0, 0]])
    a, b = tf.constant([[1., -2, 3]]), tf.constant([[0., 5, 3]])
    np.testing.assert_array_equal(multiscale.maxout(a, b), [[1, 5, 3]])


@pytest.mark.parametrize("global_context", [False, True])
def test_head_feature_is_the_maxout_of_the_two_selected_single_scale_features(
        global_context):
    model = FasterRCNN(2, **TINY, test_scales=(48, 96, 192), global_context=global_context)
    images = _images()
    pyramid = model.feature_pyramid(images, SIZES)
    rois = tf.constant([[[0, 0, 40, 40], [10, 20, 90, 120]],
                        [[5, 5, 60, 70], [0, 0, 20, 10]]], tf.float32)
    got = model.region_features(pyramid, rois).numpy()
    first, second = (v.numpy().ravel() for v in
                     multiscale.select_scales(rois, pyramid.factors))
    assert len(set(first.tolist()) | set(second.tolist())) > 1  # levels differ by RoI
    # Reference: each level on its own, single-scale (the input resized by
    # hand), then the max of the two chosen per RoI.
    single = []
    for side in (48, 96, 192):
        f = side / 96
        c4 = model.trunk(tf.image.resize(images, [round(96 * f), round(128 * f)]))
        single.append(model.region_features(c4, rois * f).numpy())
    rows = np.arange(4)
    want = np.maximum(np.stack(single)[first, rows], np.stack(single)[second, rows])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert not np.allclose(got, np.stack(single)[first, rows])  # the max is not one side
    head = model.head_outputs(pyramid, rois, SIZES)
    assert head["class_logits"].shape == (4, 3) and head["box_deltas"].shape == (4, 2, 4)


def test_multiscale_detector_runs_end_to_end_and_round_trips_its_config():
    model = FasterRCNN(2, **TINY, test_scales=(48, 96, 192), max_detections=20)
    out = model({"images": _images(), "image_sizes": SIZES})
    assert out["boxes"].shape == (2, 20, 4)
    config = model.get_config()
    assert config["test_scales"] == [48, 96, 192]
    assert FasterRCNN.from_config(config).test_scales == (48, 96, 192)
    # One level at the input's own scale reproduces single-scale testing
    # exactly: the proposals come from the input scale in both.
    x = {"images": _images(), "image_sizes": SIZES}
    one = FasterRCNN.from_config({**config, "test_scales": [96]})
    single = FasterRCNN.from_config({**config, "test_scales": None})
    one.set_weights(model.get_weights())
    single.set_weights(model.get_weights())
    a, b = one(x), single(x)
    assert int(b["num_detections"].numpy().sum()) > 0
    for key in ("boxes", "scores", "classes", "num_detections"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-4)


def test_scale_target_is_a_checked_option_stored_with_the_model():
    factors = tf.constant([[f, f] for f in (0.5, 1.0, 2.0)], tf.float32)
    boxes = tf.constant([[0, 0, 48, 48], [0, 0, 100, 100]], tf.float32)
    # With the paper's 224 both boxes read the largest level; with 24 the
    # 48-pixel box reads the level where it is 24 pixels (exactly: its
    # smaller neighbour second), the 100-pixel one where it is 50.
    first, _ = multiscale.select_scales(boxes, factors)
    np.testing.assert_array_equal(first, [2, 2])
    first, second = multiscale.select_scales(boxes, factors, 24)
    np.testing.assert_array_equal(first, [0, 0])
    np.testing.assert_array_equal(second, [1, 1])
    model = FasterRCNN(2, **TINY, test_scales=(48, 96), scale_target=24)
    config = model.get_config()
    assert config["scale_target"] == 24 and FasterRCNN.from_config(config).scale_target == 24
    # A directory saved before the option existed has no key: the paper's 224.
    config.pop("scale_target")
    assert FasterRCNN.from_config(config).scale_target == 224 == FasterRCNN(2).scale_target
    for bad in (0, -5, "big", float("nan")):
        with pytest.raises(ValueError, match="scale_target"):
            FasterRCNN(2, **TINY, scale_target=bad)


def test_a_level_at_the_input_scale_reuses_the_input_c4():
    model = FasterRCNN(2, **TINY, test_scales=(48, 96, 192))
    images = tf.constant(_images())
    c4 = model.trunk(images)
    calls = []

    def trunk(level):
        calls.append(tuple(level.shape[1:3]))
        return model.trunk(level, training=False)

    # The batch's largest shorter side is 96: level 96 is the input itself.
    got = multiscale.pyramid_features(trunk, images, SIZES, (48, 96, 192), input_features=c4)
    assert calls == [(48, 64), (192, 256)]  # the trunk ran on the two other levels only
    fresh = model.feature_pyramid(images, SIZES)  # without input_c4: every level computed
    for a, b in zip(got.features, fresh.features):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got.factors, fresh.factors)
    # The choice is made at run time: in a graph, and when no level is at
    # the input's scale (shorter sides 80 here), nothing is reused.
    marked = c4 + 1000.0  # a stand-in, so a reuse shows
    graph = tf.function(lambda x, s, f: multiscale.pyramid_features(
        trunk, x, s, (48, 96, 192), input_features=f).features)
    reused = graph(images, SIZES, marked)
    np.testing.assert_array_equal(reused[1], marked)
    assert np.abs(reused[0] - fresh.features[0]).max() < 1e-4
    other = graph(images, np.array([[80, 128], [80, 112]], "float32"), marked)
    assert all(np.abs(level).max() < 1000.0 for level in other)
    assert tuple(other[1].shape[1:3]) != tuple(c4.shape[1:3])


def test_the_cli_flags_reach_the_model(tmp_path, monkeypatch):
    import detection.train
    from apps import cli

    got = {}
    monkeypatch.setattr(detection.train, "train_detector",
                        lambda *a, **k: got.update(k) or {"results": {}})
    assert cli.main(["train", "detector", "--data", "synthetic", "--out", str(tmp_path / "d"),
                     "--test-scales", "48,96", "--scale-target", "24"]) == 0
    model = FasterRCNN(2, **{**TINY, **got["model_kwargs"]})
    assert model.test_scales == (48, 96) and model.scale_target == 24
    assert cli.main(["train", "detector", "--data", "synthetic",
                     "--out", str(tmp_path / "e")]) == 0
    assert got["model_kwargs"]["scale_target"] == 224  # the paper's

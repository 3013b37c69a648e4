"""resnet-tf export detector: TF Object Detection API style outputs, equal to
the in-process Keras detector on real BCCD JPEGs, in a fresh process and
through TF Serving's C++ loader."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import shared_data
from apps import cli
from resnet_tf import serving
from export_helpers import (assert_core_ops_only, build_loader_once, calibrate_bn,
                                    decoded, fresh_process_outputs)

CLASSES = ["RBC", "WBC", "Platelets"]
TINY = dict(anchor_scales=(24, 48, 96), roi_batch=16, rpn_batch=32, pooled_size=6,
            proposals=dict(pre_nms_train=300, post_nms_train=50, pre_nms_test=200,
                           post_nms_test=30))


def make_detector_dir(directory):
    """A small detector directory (ResNet-18 C4, 3 classes, shorter side 128)
    whose BN statistics follow the data, so it detects many boxes with spread
    scores instead of one saturated box."""
    import keras

    from detection.data.pipeline import DetectionPreprocessing
    from detection.model import FasterRCNN
    from detection.proposals import generate_proposals
    from detection.model_dir import save_detector

    keras.utils.set_random_seed(0)
    model = FasterRCNN(len(CLASSES), depth=18, class_names=CLASSES, frozen_bn=False,
                       freeze_at=0, **TINY)
    model.ensure_built()
    x = tf.random.stateless_normal([4, 160, 160, 3], [1, 2], stddev=50.0)
    sizes = tf.constant([[120, 160]] * 4, tf.float32)
    calibrate_bn(lambda v, training: model.rpn_head(model.trunk(v, training=training),
                                                    training=training), x)
    c4, rpn, anchors = model._rpn(x, False)
    rois, _, _ = generate_proposals(rpn["objectness"], rpn["deltas"], anchors, sizes,
                                    model.proposal_config, training=False)
    calibrate_bn(model.roi_head, model._pool(c4, rois))
    save_detector(directory, model, DetectionPreprocessing(shorter_side=128, max_side=160))
    return str(directory)


def keras_detections(directory, images):
    """In-process reference, per image (as ``predict_detector``, unrounded):
    normalised boxes, scores, 0-based classes of the valid rows."""
    from detection.data.pipeline import prepare_example
    from detection.model_dir import load_detector

    model, prep, _ = load_detector(directory)
    rows = []
    for image in images:
        x, _ = prepare_example(tf.constant(image), tf.fill([1, 4], -1.0), tf.constant([-1]),
                               prep)
        det = model({k: v[None] for k, v in x.items()}, training=False)
        n = int(det["num_detections"][0])
        size = np.tile(x["image_sizes"].numpy(), 2)
        rows.append({"boxes": det["boxes"].numpy()[0, :n] / size,
                     "scores": det["scores"].numpy()[0, :n],
                     "classes": det["classes"].numpy()[0, :n]})
    return rows


def assert_detections(out, reference, atol=1e-5):
    assert set(out) == {"detection_boxes", "detection_scores", "detection_classes",
                        "detection_labels", "num_detections"}
    n_images = len(reference)
    assert out["detection_boxes"].shape == (n_images, 100, 4)
    np.testing.assert_array_equal(out["num_detections"], [len(r["scores"]) for r in reference])
    for i, ref in enumerate(reference):
        n = len(ref["scores"])
        assert n >= 5 and ref["scores"].max() < 0.99  # a comparison that can fail
        np.testing.assert_allclose(out["detection_scores"][i, :n], ref["scores"], atol=atol)
        np.testing.assert_allclose(out["detection_boxes"][i, :n], ref["boxes"], atol=atol)
        np.testing.assert_array_equal(out["detection_classes"][i, :n], ref["classes"] + 1)
        labels = [v.decode() if isinstance(v, bytes) else v for v in out["detection_labels"][i]]
        assert labels[:n] == [CLASSES[c] for c in ref["classes"]]
        assert labels[n:] == [""] * (100 - n)
        assert (out["detection_scores"][i, n:] == 0).all()
        assert (out["detection_classes"][i, n:] == 0).all()
        assert (out["detection_boxes"][i, n:] == 0).all()
        assert ((out["detection_boxes"][i] >= 0) & (out["detection_boxes"][i] <= 1)).all()


def bccd_jpegs(n=2):
    return [str(f) for f in sorted((shared_data("bccd/BCCD") / "JPEGImages").glob("*.jpg"))[:n]]


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    root = tmp_path_factory.mktemp("detector")
    directory = make_detector_dir(root / "model")
    base = str(root / "serving")
    assert cli.main(["export", "detector", "--model", directory, "--out", base]) == 0
    return directory, os.path.join(base, "1")


@pytest.mark.slow
def test_fresh_process_reload_matches_keras(detector, tmp_path):
    directory, export_dir = detector
    files = bccd_jpegs(2)
    images = decoded(files)
    assert images.shape[1:] == (480, 640, 3)  # BCCD: all one size, nothing cut
    by_bytes, by_tensor = fresh_process_outputs(export_dir, files, images, tmp_path)
    reference = keras_detections(directory, images)
    assert_detections(by_bytes, reference)
    assert_detections(by_tensor, reference)
    info = json.load(open(os.path.join(export_dir, "assets.extra", "resnet_tf_export.json")))
    assert info["kind"] == "detector" and info["class_names"] == CLASSES


def test_graph_has_only_core_tensorflow_ops(detector):
    assert_core_ops_only(detector[1], {"DecodeJpeg", "Conv2D", "CropAndResize",
                                       "CombinedNonMaxSuppression"})


@pytest.mark.slow
def test_tf_serving_cpp_loader_matches_python(detector, tmp_path_factory):
    directory, export_dir = detector
    files = bccd_jpegs(2)
    out = serving.run_loader(build_loader_once(tmp_path_factory), export_dir, files)
    assert_detections(out, keras_detections(directory, decoded(files)))


def test_odd_inputs(detector):
    """Empty batch, 1x1, grayscale: correct results, never a crash."""
    from PIL import Image
    import io

    loaded = tf.saved_model.load(detector[1])
    serve = loaded.signatures["serving_default"]
    empty = serve(image_bytes=tf.constant([], tf.string))
    assert empty["detection_boxes"].shape == (0, 100, 4)
    assert empty["num_detections"].shape == (0,)
    with Image.open(bccd_jpegs(1)[0]) as im:
        gray, tiny = io.BytesIO(), io.BytesIO()
        im.convert("L").save(gray, "JPEG")
        im.resize((1, 1)).save(tiny, "PNG")
    out = serve(image_bytes=tf.constant([gray.getvalue(), tiny.getvalue()]))
    assert out["detection_boxes"].shape == (2, 100, 4)
    gray_rgb = np.repeat(np.asarray(Image.open(io.BytesIO(gray.getvalue())))[..., None], 3, -1)
    ref = keras_detections(detector[0], [gray_rgb])[0]
    n = len(ref["scores"])
    assert int(out["num_detections"][0]) == n
    np.testing.assert_allclose(out["detection_scores"][0, :n], ref["scores"], atol=1e-5)

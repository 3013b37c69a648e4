"""resnet-tf export localizer: top-5 classes with their boxes, equal to the
in-process whole-image test (``predict_localizer``) on real ILSVRC JPEGs, in
a fresh process, through TF Serving's C++ loader and a REST request."""

import contextlib
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import shared_data
from apps import cli
from resnet_tf import export, serving
from export_helpers import (assert_core_ops_only, build_loader_once, calibrate_bn,
                                    decoded, fresh_process_outputs)

CLASSES = ["goldfish", "tench", "hen", "ostrich", "kite", "jay"]
OUTPUTS = {"top_k_classes", "top_k_labels", "top_k_scores", "top_k_box_scores",
           "top_k_boxes"}
# Wide (500 x 375), tall (375 x 500) and grayscale (363 x 500) JPEGs.
IMAGES = ("ILSVRC2012_val_00000001", "ILSVRC2012_val_00000009", "ILSVRC2012_val_00000034")


def make_localizer_dir(directory):
    """A small localizer directory: ResNet-18 (ImageNet family, C5, stride
    32), 6 classes, test shorter side 64, a mean image. BN statistics follow
    the data and the head has unit-scale weights, so class probabilities,
    anchor scores and box deltas are spread out, not saturated or ~0.5."""
    import keras

    import resnet_tf
    from localization.model import Localizer
    from localization.model_dir import save_localizer
    from resnet_tf.data.preprocessing import Preprocessing

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    clf = resnet_tf.ResNet(18, classes=len(CLASSES), input_shape=(None, None, 3))
    calibrate_bn(clf, rng.normal(0, 60, (8, 64, 64, 3)).astype("float32"))
    loc = Localizer(clf.get_config(), class_names=CLASSES, anchor_scales=(16, 32, 48),
                    head_channels=16)
    loc.ensure_built(64)
    loc.load_classifier_weights(clf)
    for v in loc.head.weights:
        if len(v.shape) == 4:  # kernels; biases stay 0
            fan_in = int(np.prod(v.shape[:3]))
            v.assign(rng.normal(0, 0.3 * np.sqrt(2 / fan_in), v.shape).astype("float32"))
    prep = Preprocessing.for_style("imagenet", crop_size=64, eval_resize=72,
                                   scale_range=(72, 96))
    mean = rng.uniform(90, 140, (64, 64, 3)).astype("float32")
    save_localizer(str(directory), loc, prep, mean, results={})
    return str(directory)


def ilsvrc_jpegs():
    root = shared_data("imagenet-val-loc") / "images"
    return [str(root / f"{name}.JPEG") for name in IMAGES]


def keras_localizations(directory, images, scales=None):
    """In-process reference, unrounded: ``predict_localizer``'s ``Tester``
    per uint8 image -> classes, probabilities, box scores, normalised boxes."""
    from localization.evaluate import Tester
    from localization.model_dir import load_localizer

    model, prep, mean, _ = load_localizer(directory)
    tester = Tester(model, prep, mean, scales=scales)
    rows = []
    for image in images:
        r = tester(tf.constant(image))
        h, w = image.shape[:2]
        rows.append({"classes": r["classes"], "scores": r["probabilities"][r["classes"]],
                     "box_scores": r["scores"], "boxes": r["boxes"] / [h, w, h, w]})
    return rows


def assert_localizations(out, reference, atol=1e-5, exact_dtypes=True):
    assert set(out) == OUTPUTS
    n = len(reference)
    assert out["top_k_boxes"].shape == (n, 5, 4) and out["top_k_classes"].shape == (n, 5)
    if exact_dtypes:
        assert out["top_k_classes"].dtype == np.int32
        assert out["top_k_boxes"].dtype == out["top_k_scores"].dtype == np.float32
    for i, ref in enumerate(reference):
        np.testing.assert_array_equal(out["top_k_classes"][i], ref["classes"])
        labels = [v.decode() if isinstance(v, bytes) else v for v in out["top_k_labels"][i]]
        assert labels == [CLASSES[c] for c in ref["classes"]]
        np.testing.assert_allclose(out["top_k_scores"][i], ref["scores"], atol=atol)
        np.testing.assert_allclose(out["top_k_box_scores"][i], ref["box_scores"], atol=atol)
        np.testing.assert_allclose(out["top_k_boxes"][i], ref["boxes"], atol=atol)
    boxes = np.asarray(out["top_k_boxes"])
    assert ((boxes >= 0) & (boxes <= 1)).all()
    assert (boxes[..., 2:] >= boxes[..., :2]).all()


@pytest.fixture(scope="module")
def localizer(tmp_path_factory):
    """(model directory, export path), exported through the CLI."""
    root = tmp_path_factory.mktemp("localizer")
    directory = make_localizer_dir(root / "model")
    base = str(root / "serving")
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        assert cli.main(["export", "localizer", "--model", directory, "--out", base,
                         "--json"]) == 0
    r = json.loads(stdout.getvalue().strip().splitlines()[-1])
    assert r == {"kind": "localizer", "export": os.path.join(base, "1"), "version": 1}
    return directory, r["export"]


@pytest.mark.slow
def test_fresh_process_reload_matches_predict_localizer(localizer, tmp_path):
    from localization.evaluate import predict_localizer

    directory, export_dir = localizer
    files = ilsvrc_jpegs()
    by_bytes, by_tensor = fresh_process_outputs(export_dir, files, decoded(files), tmp_path)
    full = [decoded([f])[0] for f in files]
    reference = keras_localizations(directory, full)
    # Comparisons that can fail: spread probabilities and anchor scores, and
    # boxes that are not all the same clipped anchor.
    assert max(r["scores"].max() for r in reference) < 0.99
    assert np.std([r["box_scores"] for r in reference]) > 0.03
    assert len({tuple(np.round(b, 3)) for r in reference for b in r["boxes"]}) > 5
    assert_localizations(by_bytes, reference)
    assert_localizations(by_tensor, keras_localizations(directory, decoded(files)))
    # predict_localizer itself (rounded to 5 decimals and 0.1 px).
    for i, row in enumerate(predict_localizer(directory, files)):
        h, w = row["height"], row["width"]
        assert (h, w) == full[i].shape[:2]
        assert [p["class"] for p in row["predictions"]] == list(by_bytes["top_k_classes"][i])
        np.testing.assert_allclose([p["probability"] for p in row["predictions"]],
                                   by_bytes["top_k_scores"][i], atol=6e-6)
        np.testing.assert_allclose([p["score"] for p in row["predictions"]],
                                   by_bytes["top_k_box_scores"][i], atol=6e-6)
        np.testing.assert_allclose([p["box"] for p in row["predictions"]],
                                   by_bytes["top_k_boxes"][i] * [h, w, h, w], atol=0.06)
    info = json.load(open(os.path.join(export_dir, "assets.extra", export.EXPORT_INFO)))
    assert info["kind"] == "localizer" and info["class_names"] == CLASSES
    assert info["test_shorter_side"] == 64 and info["max_longer_side"] == 256


def test_graph_has_only_core_tensorflow_ops(localizer):
    assert_core_ops_only(localizer[1], {"DecodeJpeg", "Conv2D", "TopKV2", "Assert",
                                        "ResizeBilinear", "Transpose"})


@pytest.mark.slow
def test_tf_serving_cpp_loader_matches_python(localizer, tmp_path_factory):
    directory, export_dir = localizer
    files = ilsvrc_jpegs()
    out = serving.run_loader(build_loader_once(tmp_path_factory), export_dir, files)
    assert_localizations(out, keras_localizations(directory, [decoded([f])[0]
                                                              for f in files]))


def test_rest_row_format_round_trip(localizer):
    from resnet_tf.serving import client
    from test_export_requests import serve_rest

    directory, export_dir = localizer
    files = ilsvrc_jpegs()[:2]
    response = json.loads(serve_rest(tf.saved_model.load(export_dir),
                                     json.dumps(client.rest_request(files))))
    assert len(response["predictions"]) == 2 and set(response["predictions"][0]) == OUTPUTS
    assert len(response["predictions"][0]["top_k_boxes"]) == 5
    assert_localizations(client.rest_outputs(response),
                         keras_localizations(directory, [decoded([f])[0] for f in files]),
                         exact_dtypes=False)


def test_odd_images_and_the_aspect_cap(localizer):
    """Empty batch, 1x1 PNG: shapes, no crash. Past 4:1 the longer side is
    capped at 4 x 64: an 8:1 image of shorter side 32 is then tested exactly
    like ``predict_localizer`` at shorter side 32, in both orientations."""
    from PIL import Image

    directory, export_dir = localizer
    loaded = tf.saved_model.load(export_dir)
    empty = loaded.signatures["serving_default"](image_bytes=tf.constant([], tf.string))
    assert empty["top_k_boxes"].shape == (0, 5, 4) and empty["top_k_labels"].shape == (0, 5)
    tiny = io.BytesIO()
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(tiny, "PNG")
    out = loaded.signatures["serving_default"](image_bytes=tf.constant([tiny.getvalue()]))
    assert out["top_k_boxes"].shape == (1, 5, 4)
    assert np.isfinite(out["top_k_boxes"].numpy()).all()
    wide = decoded(ilsvrc_jpegs()[:1])[0][:32, :256]
    tall = np.ascontiguousarray(wide.transpose(1, 0, 2))
    for image in (wide, tall):
        out = loaded.signatures["serve_image_tensor"](images=tf.constant(image[None]))
        assert_localizations({k: v.numpy() for k, v in out.items()},
                             keras_localizations(directory, [image], scales=(32,)))


def test_cli_existing_version_and_wrong_kind(localizer, tmp_path, capsys):
    directory, export_dir = localizer
    base = os.path.dirname(export_dir)
    assert cli.main(["export", "localizer", "--model", directory, "--out", base,
                     "--version", "1"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(os.listdir(base)) == ["1"]  # nothing half-written beside it
    assert cli.main(["export", "classifier", "--model", directory, "--out",
                     str(tmp_path / "x")]) == 2
    assert "holds a localizer, not a classifier" in capsys.readouterr().err

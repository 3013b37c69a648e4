"""Fault kinds "any image size, bounded memory" and "every cap is counted".

Kind 4: every view (training, evaluation, 10-crop, multi-scale, serving) of
the classifier (CIFAR and ImageNet styles), the detector and the localizer
takes any image size in graph mode, with shapes unknown until run time, and
gives its fixed output shape; the crop views' memory does not grow with the
input's aspect ratio; a CIFAR-style classifier's export answers 36x36, 64x48
and 20x20 JPEGs exactly as ``predict classifier`` does.

Kind 6: every limit (boxes per image, proposals, detections, image size)
adapts to the data or is counted: ``../shared/cases/150-boxes`` trains all
150 boxes, and a run prints and saves what was capped.
"""

import io
import json
import logging
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, shared_case
from detection.data import pipeline as det_pipeline
from detection.data.annotations import ImageAnnotation
from detection.data.pipeline import DetectionPreprocessing, make_detection_dataset
from detection.ops.boxes import PAD
from detection.proposals import ProposalConfig
from localization.data import pipeline as loc_pipeline
from resnet_tf.data import augment
from resnet_tf.data.preprocessing import Preprocessing

SIZES = [(20, 20), (36, 36), (64, 48), (33, 500), (500, 33), (1, 1)]
ANY_IMAGE = tf.TensorSpec([None, None, 3], tf.uint8)
SEED = tf.constant([3, 4], tf.int64)



def image_of(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def jpeg_bytes(image):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def run_graph(fn, sizes=SIZES):
    """``fn`` traced ONCE with an unknown image shape, run on every size:
    ``{(h, w): outputs as numpy}``."""
    graph_fn = tf.function(fn, input_signature=[ANY_IMAGE])
    return {(h, w): tf.nest.map_structure(lambda t: t.numpy(), graph_fn(image_of(h, w)))
            for h, w in sizes}


CIFAR = Preprocessing.for_style("cifar")
IMAGENET = Preprocessing.for_style("imagenet", crop_size=32, eval_resize=40,
                                   scale_range=(40, 56), multiscale=(32, 48))
IMAGENET_FIXED = Preprocessing.for_style("imagenet", crop_size=32, eval_resize=40,
                                         scale_range=(40, 56), multiscale=(32, 48),
                                         scale_augmentation=False)
MEAN = tf.constant(np.random.default_rng(1).uniform(80, 160, (32, 32, 3)), tf.float32)


# --- kind 4: every view, every size, graph mode --------------------------------------


@pytest.mark.parametrize("prep", [CIFAR, IMAGENET, IMAGENET_FIXED],
                         ids=["cifar", "imagenet", "imagenet_fixed_scale"])
def test_classifier_views_take_any_size_in_graph_mode(prep):
    s = prep.crop_size
    n_crops = 2 if prep.style == "cifar" else 10
    out = run_graph(lambda im: {"train": prep.train_view(im, SEED, MEAN),
                                "eval": prep.eval_view(im, MEAN),
                                "mean": prep.mean_view(im),
                                "ten": prep.ten_crop(im, MEAN)})
    for size, o in out.items():
        assert o["train"].shape == (s, s, 3), size
        assert o["eval"].shape == o["mean"].shape == (s, s, 3), size
        assert o["ten"].shape == (n_crops, s, s, 3), size
        assert all(np.isfinite(v).all() for v in o.values()), size
    multi = run_graph(lambda im: prep.multiscale_views(im, MEAN, flip=True))
    for (h, w), views in multi.items():
        assert len(views) == 2 * len(prep.multiscale)
        for v, scale in zip(views[::2], prep.multiscale):
            assert min(v.shape[:2]) == scale and v.shape[2] == 3, (h, w)


def test_crop_views_equal_resize_then_crop():
    """The windowed resampling is the resize-then-crop of the paper (to float
    rounding): the centre, the 10 crops and the fixed-scale training crop
    (the same draw as ``stateless_random_crop`` of the resized image)."""
    for h, w in [(36, 36), (64, 48), (33, 500), (500, 33), (300, 200)]:
        image = image_of(h, w, seed=h * w)
        full = augment.resize_shorter_side(image, 40).numpy()
        fh, fw = full.shape[:2]
        top, left = (fh - 32) // 2, (fw - 32) // 2
        np.testing.assert_allclose(IMAGENET.mean_view(image), full[top:top + 32,
                                                                   left:left + 32], atol=0.02)
        ten = IMAGENET.ten_crop(image, None).numpy()
        np.testing.assert_allclose(ten[1], full[:32, fw - 32:], atol=0.02)
        np.testing.assert_allclose(ten[8], full[fh - 32:, fw - 32:][:, ::-1], atol=0.02)
        s_scale, s_crop, s_flip, s_color = augment.split_seed(SEED, 4)
        expected = augment.random_crop(full, s_crop, 32)
        expected = augment.random_flip(expected, s_flip)
        got = IMAGENET_FIXED.train_view(image, SEED, None)
        np.testing.assert_allclose(got, augment.pca_color(expected, s_color), atol=0.05)
    # CIFAR: a 32 x 32 image is its own base view, exactly.
    image = image_of(32, 32)
    np.testing.assert_array_equal(CIFAR.mean_view(image), image.astype(np.float32))


def test_detector_views_take_any_size_in_graph_mode():
    from detection.export import detector_serving_model

    prep = DetectionPreprocessing(shorter_side=48, max_side=80)
    boxes = tf.constant([[0.0, 0.0, 1.0, 1.0], [PAD] * 4])
    classes = tf.constant([0, -1])
    stub = types.SimpleNamespace(class_names=["a"], max_detections=5, score_threshold=0.05,
                                 proposal_config=ProposalConfig())
    serving = detector_serving_model(stub, prep)
    out = run_graph(lambda im: {
        "train": det_pipeline.prepare_example(im, boxes, classes, prep, SEED),
        "eval": det_pipeline.prepare_example(im, boxes, classes, prep),
        "serve": serving.preprocess(im)}, sizes=SIZES + [(1, 4000), (4000, 1)])
    for (h, w), o in out.items():
        for x in (o["train"][0], o["eval"][0], o["serve"]):
            assert x["images"].shape == (80, 80, 3), (h, w)
            nh, nw = x["image_sizes"]
            assert 1 <= nh <= 80 and 1 <= nw <= 80, (h, w)
            assert (nh == 48 or nw == 48 or max(nh, nw) == 80 or min(nh, nw) == 1), (h, w)
        assert o["train"][1]["boxes"].shape == (2, 4)


def test_localizer_views_take_any_size_in_graph_mode():
    from localization.export import localizer_serving_model

    boxes = tf.constant([[0.0, 0.0, 1.0, 1.0], [PAD] * 4])
    stub = types.SimpleNamespace(num_classes=3, class_names=["a", "b", "c"])
    for prep in (CIFAR, IMAGENET):
        serving = localizer_serving_model(stub, prep, MEAN.numpy())
        out = run_graph(lambda im: {
            "train": loc_pipeline.train_view(im, boxes, SEED, prep, MEAN),
            "test": loc_pipeline.test_views(im, prep, MEAN, (32, 48), flip=True),
            "serve": serving.preprocess(im)})
        for (h, w), o in out.items():
            x, b = o["train"]
            assert x.shape == (32, 32, 3) and b.shape == (2, 4), (h, w)
            assert len(o["test"]) == 4
            for (view, factor, _), scale in zip(o["test"][::2], (32, 48)):
                assert view.shape[0] == 1 and min(view.shape[1:3]) == scale, (h, w)
            assert o["serve"]["view"].shape == (32, 128, 3), (h, w)


def test_crop_views_do_not_grow_with_the_aspect_ratio():
    """A 1 x 20000 strip: resizing it whole to shorter side 40 would take
    40 x 800000 x 3 floats (384 MB); the crop views must stay near their
    output. Peak resident memory of a fresh process, around the calls."""
    script = r"""
import os, resource, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, tensorflow as tf
from resnet_tf.data.preprocessing import Preprocessing
from localization.data import pipeline as loc
prep = Preprocessing.for_style("imagenet", crop_size=32, eval_resize=40,
                               scale_range=(40, 56), scale_augmentation=False)
cifar = Preprocessing.for_style("cifar")
seed = tf.constant([1, 2], tf.int64)
box = tf.constant([[0.0, 0.0, 1.0, 1.0]])
fns = [tf.function(f, input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)]) for f in (
    lambda im: prep.eval_view(im, None), lambda im: prep.ten_crop(im, None),
    lambda im: prep.train_view(im, seed, None), lambda im: cifar.eval_view(im, None),
    lambda im: cifar.ten_crop(im, None), lambda im: loc.train_view(im, box, seed, cifar, None))]
for f in fns:
    f(np.zeros((48, 64, 3), np.uint8))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
strip = np.full((1, 20000, 3), 7, np.uint8)
for f in fns:
    f(strip)
    f(np.ascontiguousarray(strip.transpose(1, 0, 2)))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       cwd=str(REPO), env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    grew_mb = int(r.stdout.strip().splitlines()[-1])
    assert grew_mb < 100, f"peak memory grew {grew_mb} MB on a 1 x 20000 strip"


# --- kind 4: the CIFAR-style classifier's export answers as predict does -------------


@pytest.fixture(scope="module")
def cifar_classifier(tmp_path_factory):
    """A width-8 ResNet-8 CIFAR classifier, untrained but with batch-norm
    statistics calibrated (so its softmax is not saturated), a mean image."""
    import keras

    from resnet_tf import ResNet, model_dir

    keras.utils.set_random_seed(0)
    model = ResNet(8, family="cifar", width=8, classes=3, input_shape=(None, None, 3))
    x = np.random.default_rng(0).normal(0, 60, (8, 32, 32, 3)).astype("float32")
    for _ in range(10):
        model(x, training=True)
    mean = np.random.default_rng(2).uniform(90, 140, (32, 32, 3)).astype("float32")
    directory = str(tmp_path_factory.mktemp("cifar") / "clf")
    model_dir.save_classifier(directory, model, ["a", "b", "c"], mean, CIFAR)
    return directory


def test_cifar_export_serves_any_size_as_predict_does(cifar_classifier, tmp_path, capsys):
    from PIL import Image

    from apps import cli
    from resnet_tf.evaluate import predict_files

    files = []
    for h, w in [(36, 36), (64, 48), (20, 20), (32, 32), (33, 500)]:
        path = tmp_path / f"im_{h}x{w}.jpg"
        Image.fromarray(image_of(h, w, seed=h + w)).save(path, "JPEG", quality=90)
        files.append(str(path))
    assert cli.main(["export", "classifier", "--model", cifar_classifier,
                     "--out", str(tmp_path / "export")]) == 0
    printed = capsys.readouterr().out
    assert "Caps: none." in printed
    export_dir = str(tmp_path / "export" / "1")
    rows = predict_files(cifar_classifier, files, top=3)
    expected = np.zeros((len(files), 3), np.float32)
    for i, row in enumerate(rows):
        assert "error" not in row, row
        for p in row["predictions"]:
            expected[i, p["class"]] = p["probability"]
    assert np.ptp(expected, axis=0).max() > 1e-3  # the images get different answers
    loaded = tf.saved_model.load(export_dir)
    served = loaded.signatures["serving_default"](
        image_bytes=tf.constant([open(f, "rb").read() for f in files]))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=2e-5)
    from resnet_tf.data.decode import read_image_file
    for i, f in enumerate(files):  # one size per tensor request
        image, _ = read_image_file(f)
        out = loaded.signatures["serve_image_tensor"](images=tf.constant(image[None]))
        np.testing.assert_allclose(out["probabilities"].numpy()[0], expected[i], atol=2e-5)


# --- kind 6: every cap adapts or is counted ---------------------------------------


def read_case_150():
    from detection.data.voc import read_voc

    anns, names, report = read_voc(str(shared_case("150-boxes")))
    assert len(anns) == 1 and len(anns[0].boxes) == 150
    return anns, names, report


def test_150_boxes_all_reach_the_training_targets(caplog):
    anns, _, _ = read_case_150()
    prep = DetectionPreprocessing(shorter_side=64, max_side=96, flip=False)
    with caplog.at_level(logging.WARNING, logger="resnet_tf.data"):
        x, y = next(iter(make_detection_dataset(anns, prep, training=True, batch_size=1)))
    assert "max_boxes" not in caplog.text
    boxes = y["boxes"].numpy()[0]
    assert boxes.shape == (150, 4) and (y["classes"].numpy()[0] >= 0).all()
    sy, sx = x["image_sizes"].numpy()[0] / [anns[0].height, anns[0].width]
    np.testing.assert_allclose(boxes, anns[0].boxes * [sy, sx, sy, sx], rtol=1e-5)
    caps = det_pipeline.count_caps(anns, prep)
    assert caps[det_pipeline.CAP_MAX_BOXES] == {"limit": None, "images": 0, "of": 1,
                                                "boxes": 0, "largest": 150}


def test_an_explicit_max_boxes_is_warned_and_counted(caplog):
    anns, _, _ = read_case_150()
    prep = DetectionPreprocessing(shorter_side=64, max_side=96, flip=False, max_boxes=100)
    with caplog.at_level(logging.WARNING, logger="resnet_tf.data"):
        _, y = next(iter(make_detection_dataset(anns, prep, training=False, batch_size=1)))
    assert y["boxes"].shape == (1, 100, 4)
    assert "crowd.jpg: 50 of its 150 boxes are past max_boxes=100" in caplog.text
    caps = det_pipeline.count_caps(anns, prep)
    assert caps[det_pipeline.CAP_MAX_BOXES]["images"] == 1
    assert caps[det_pipeline.CAP_MAX_BOXES]["boxes"] == 50
    assert "boxes_over_max_boxes 1/1 images (limit 100, 50 boxes not trained" in \
        det_pipeline.format_caps(caps)
    with pytest.raises(ValueError, match="max_boxes must be >= 1"):
        DetectionPreprocessing(max_boxes=0)


def test_count_caps_counts_every_limit():
    def ann(h, w, n):
        return ImageAnnotation(path=f"{h}x{w}_{n}.jpg", height=h, width=w,
                               boxes=np.tile([[0, 0, 5, 5]], (n, 1)).astype(np.float32),
                               classes=np.zeros(n, np.int32), difficult=np.zeros(n, bool))

    anns = [ann(100, 100, 2), ann(100, 400, 7), ann(50, 60, 12), ann(0, 0, 1)]
    prep = DetectionPreprocessing(shorter_side=60, max_side=160, max_boxes=10)
    proposals = ProposalConfig(pre_nms_train=500, post_nms_train=8, pre_nms_test=90,
                               post_nms_test=6)
    caps = det_pipeline.count_caps(anns, prep, proposals=proposals, max_detections=5,
                                   anchors_per_location=9)
    c = det_pipeline
    assert caps[c.CAP_MAX_BOXES] == {"limit": 10, "images": 1, "of": 4, "boxes": 2,
                                     "largest": 12}
    # 100 x 400 at shorter side 60 would be 240 long > 160.
    assert caps[c.CAP_MAX_SIDE] == {"limit": 160, "images": 1, "of": 4, "unknown_size": 1}
    # the padded 160 x 160 image: 10 x 10 cells x 9 anchors = 900 > 90.
    assert caps[c.CAP_PRE_NMS] == {"limit": [500, 90], "images": 4, "of": 4, "anchors": 900}
    assert caps[c.CAP_POST_NMS]["images"] == 2  # 7 and 12 objects > 6
    assert caps[c.CAP_DETECTIONS] == {"limit": 5, "images": 2, "of": 4}
    line = c.format_caps(caps)
    assert line.startswith("Capped: ") and "held_by_max_side 1/4 images (limit 160" in line
    assert "anchors_over_pre_nms 4/4 images (limit 500/90 of 900 anchors)" in line


def test_localizer_boxes_adapt_to_the_split():
    anns = [ImageAnnotation(path=f"{n}.jpg", height=32, width=32,
                            boxes=np.tile([[0, 0, 5, 5]], (n, 1)).astype(np.float32),
                            classes=np.zeros(n, np.int32), difficult=np.zeros(n, bool))
            for n in (1, 150, 3)]
    _, boxes = loc_pipeline.pad_boxes(anns)
    assert boxes.shape == (3, 150, 4) and (boxes[1] >= 0).all()
    caps = loc_pipeline.count_caps(anns)
    assert caps[det_pipeline.CAP_MAX_BOXES]["largest"] == 150
    assert caps[det_pipeline.CAP_MAX_BOXES]["images"] == 0


def test_export_signatures_record_their_caps():
    from detection.export import detector_serving_model
    from localization.export import MAX_ASPECT, localizer_serving_model

    det = detector_serving_model(
        types.SimpleNamespace(class_names=["a"], max_detections=150, score_threshold=0.05,
                              proposal_config=ProposalConfig()),
        DetectionPreprocessing())
    assert det.info["caps"] == {"max_detections": 150, "pre_nms_test": 6000,
                                "post_nms_test": 300, "max_side": 1000}
    loc = localizer_serving_model(types.SimpleNamespace(num_classes=2, class_names=["a", "b"]),
                                  CIFAR)
    assert loc.info["caps"] == {"max_longer_side": 32 * MAX_ASPECT, "max_aspect": MAX_ASPECT}


def test_detector_trains_all_150_boxes_and_reports_caps(tmp_path, capsys):
    """The user's case end to end: ``train_detector`` on the 150-box VOC
    folder keeps every box, raises ``max_detections`` to 150, and prints and
    saves what was capped."""
    from detection.train import train_detector

    read_case_150()
    out = str(tmp_path / "det")
    r = train_detector(f"voc:{shared_case('150-boxes')}", out, depth=18, iterations=1,
                       batch_size=1, shorter_side=64, max_side=96, warmup_iterations=0,
                       model_kwargs=dict(width=16, anchor_scales=(16, 32, 64), roi_batch=32,
                                         rpn_batch=32, pooled_size=6,
                                         proposals=dict(pre_nms_train=200,
                                                        post_nms_train=40, pre_nms_test=100,
                                                        post_nms_test=20)),
                       verbose=0)
    printed = capsys.readouterr().out
    assert r["model"].max_detections == 150
    caps = r["results"]["caps"]
    assert caps[det_pipeline.CAP_MAX_BOXES]["boxes"] == 0
    assert caps[det_pipeline.CAP_MAX_BOXES]["largest"] == 150
    assert caps[det_pipeline.CAP_DETECTIONS] == {"limit": 150, "images": 0, "of": 1}
    assert caps[det_pipeline.CAP_POST_NMS]["images"] == 1  # 150 objects > 20 proposals
    assert "Capped: boxes_over_max_boxes 0/1 images (limit none, 0 boxes not trained, " \
        "largest image 150)" in printed
    assert "objects_over_post_nms 1/1 images (limit 40/20)" in printed
    meta = json.load(open(os.path.join(out, "resnet_tf.json")))
    assert meta["results"]["caps"] == json.loads(json.dumps(caps))
    assert meta["config"]["max_detections"] == 150


def test_localizer_training_prints_and_saves_its_caps(tmp_path, capsys):
    from localization.data.sources import open_localization_source
    from localization.train import train_localizer
    from resnet_tf.train import train_classifier

    clf = str(tmp_path / "clf")
    train_classifier("synthetic", clf, model="resnet8", recipe="cifar", iterations=1,
                     batch_size=8, synthetic_train=8, synthetic_eval=4, verbose=0)
    r = train_localizer("synthetic", str(tmp_path / "loc"), init_from=clf, iterations=1,
                        batch_size=4, anchor_scales=(12, 24), anchor_ratios=(1.0,),
                        head_channels=8, synthetic_train=8, synthetic_eval=4,
                        synthetic_size=32, verbose=0)
    printed = capsys.readouterr().out
    anns = open_localization_source("synthetic", synthetic_train=8, synthetic_eval=4,
                                    synthetic_size=32).split("train").annotations
    largest = max(len(a.boxes) for a in anns)
    caps = r["results"]["caps"][det_pipeline.CAP_MAX_BOXES]
    assert caps == {"limit": None, "images": 0, "of": 8, "boxes": 0, "largest": largest}
    assert "Capped: boxes_over_max_boxes 0/8 images (limit none, 0 boxes not trained, " \
        f"largest image {largest})" in printed

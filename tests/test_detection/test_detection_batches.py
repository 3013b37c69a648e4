"""Aspect-ratio grouped detector batches (issue 21 part 3) and multi-scale
training (issue 20 item 4), on real BCCD JPEGs and portrait copies of them."""

import json
import logging
import math
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import shared_data
from detection.data.annotations import ImageAnnotation
from detection.data.buckets import bucket_shapes, plan_buckets
from detection.data.pipeline import (IMAGENET_MEAN_RGB, DetectionPreprocessing,
                                     make_detection_dataset)
from detection.data.sources import open_detection_source
from resnet_tf.data.decode import read_image_file


def bccd_annotations(n):
    src = open_detection_source(f"voc:{shared_data('bccd/BCCD')}:trainval")
    return src.split("train").annotations[:n]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Three BCCD photos (640 x 480, landscape) and a transposed copy of each
    (480 x 640, portrait, boxes transposed), interleaved L, P, L, P, ..."""
    folder = tmp_path_factory.mktemp("portrait")
    out = []
    for a in bccd_annotations(3):
        path = folder / os.path.basename(a.path)
        with Image.open(a.path) as im:
            im.transpose(Image.Transpose.TRANSPOSE).save(path, quality=95)
        out += [a, ImageAnnotation(path=str(path), height=a.width, width=a.height,
                                   boxes=a.boxes[:, [1, 0, 3, 2]], classes=a.classes,
                                   difficult=a.difficult)]
    return out


def batches(ds):
    return [(x, y) for x, y in ds]


def test_mixed_orientations_batch_by_orientation_on_static_canvases(mixed, caplog):
    prep = DetectionPreprocessing(96, 160, flip=False)
    # 640 x 480 at shorter side 96 is 96 x 128: canvases 96 x 128 and 128 x 96.
    assert (96, 128) in bucket_shapes(prep, mixed) and (128, 96) in bucket_shapes(prep, mixed)
    out = batches(make_detection_dataset(mixed, prep, training=False, batch_size=2,
                                         with_index=True))
    seen, sizes = [], []
    for x, y in out:
        hw = tuple(x["images"].shape[1:3])
        landscape = x["image_sizes"].numpy()[:, 1] >= x["image_sizes"].numpy()[:, 0]
        assert landscape.all() or not landscape.any(), x["image_sizes"]
        assert hw == ((96, 128) if landscape[0] else (128, 96))
        seen += y["index"].numpy().tolist()
        sizes.append(len(landscape))
    # Evaluation keeps each bucket's partial last batch: every image once.
    assert sorted(seen) == list(range(6)) and sorted(sizes) == [1, 1, 2, 2]
    plan = {tuple(b["shape"]): b for b in plan_buckets(mixed, prep, batch_size=2)[:-1]}
    assert plan[(96, 128)]["partial"] == plan[(128, 96)]["partial"] == 1

    # Training, endless: windows run across epochs, so two epochs are exactly
    # six full batches with every image twice.
    ds = make_detection_dataset(mixed, prep, training=True, batch_size=2, repeat=True,
                                with_index=True)
    seen = []
    for x, y in ds.take(6):
        assert x["images"].shape[0] == 2
        landscape = x["image_sizes"].numpy()[:, 1] >= x["image_sizes"].numpy()[:, 0]
        assert landscape.all() or not landscape.any()
        seen += y["index"].numpy().tolist()
    assert np.bincount(seen).tolist() == [2] * 6
    # Training, one epoch: full batches only; the dropped partials are counted.
    with caplog.at_level(logging.WARNING, logger="resnet_tf.data"):
        out = batches(make_detection_dataset(mixed, prep, training=True, batch_size=2))
    assert [x["images"].shape[0] for x, _ in out] == [2, 2]
    assert "2 of the 6 images each epoch" in caplog.text


def test_grouped_canvas_pads_less_than_the_square_on_4_3_photos():
    anns = bccd_annotations(2)
    area = {}
    for mode in ("grouped", "square"):
        prep = DetectionPreprocessing(600, 1000, flip=False, batching=mode)
        (x, _), = batches(make_detection_dataset(anns, prep, training=False, batch_size=2))
        images = x["images"].numpy()
        h, w = x["image_sizes"].numpy()[0].astype(int)
        assert (h, w) == (600, 800)
        assert not images[:, h:].any() and not images[:, :, w:].any()  # zeros beyond
        area[mode] = images.shape[1] * images.shape[2]
    assert area["square"] == 1008 * 1008 and area["grouped"] == 608 * 800
    padded = {k: (v - 600 * 800) / v for k, v in area.items()}
    assert padded["grouped"] < 0.02 < 0.5 < padded["square"]


def test_boxes_sizes_and_pixels_equal_a_direct_resize(mixed):
    prep = DetectionPreprocessing(80, 200, flip=False)
    mean = np.array(IMAGENET_MEAN_RGB, np.float32)
    for x, y in make_detection_dataset(mixed, prep, training=False, batch_size=2,
                                       with_index=True):
        for b, i in enumerate(y["index"].numpy()):
            a = mixed[i]
            scale = min(80 / min(a.height, a.width), 200 / max(a.height, a.width))
            nh, nw = round(a.height * scale), round(a.width * scale)
            np.testing.assert_array_equal(x["image_sizes"].numpy()[b], [nh, nw])
            k = len(a.boxes)
            np.testing.assert_allclose(
                y["boxes"].numpy()[b, :k],
                a.boxes * np.array([nh / a.height, nw / a.width] * 2), rtol=1e-5)
            assert (y["boxes"].numpy()[b, k:] == -1).all()
            image, _ = read_image_file(a.path)  # the pipeline's decoder
            direct = tf.image.resize(image, (nh, nw)).numpy() - mean
            np.testing.assert_allclose(x["images"].numpy()[b, :nh, :nw], direct, atol=1e-3)
            assert not x["images"].numpy()[b, nh:].any()
            assert not x["images"].numpy()[b, :, nw:].any()


def test_multi_scale_training_draws_only_and_every_listed_scale(mixed, tmp_path,
                                                                monkeypatch):
    prep = DetectionPreprocessing(96, 200, flip=False, train_scales=(96, 64, 80))
    assert prep.train_scales == (64, 80, 96)
    shapes = bucket_shapes(prep, mixed, training=True)
    ds = make_detection_dataset(mixed, prep, training=True, batch_size=1, repeat=True,
                                with_index=True, seed=3)
    drawn = []
    for x, y in ds.take(30):
        h, w = x["image_sizes"].numpy()[0]
        a = mixed[int(y["index"][0])]
        short = int(min(h, w))
        drawn.append(short)
        canvas = tuple(x["images"].shape[1:3])
        # The (scale, orientation) canvas: the short side rounded up to 16.
        assert canvas in shapes and min(canvas) == math.ceil(short / 16) * 16
        assert (canvas[1] > canvas[0]) == (w > h)
        np.testing.assert_allclose(y["boxes"].numpy()[0, :len(a.boxes)],
                                   a.boxes * np.array([h / a.height, w / a.width] * 2),
                                   rtol=1e-5)
    assert set(drawn) == {64, 80, 96}
    # Evaluation uses shorter_side only.
    for x, _ in make_detection_dataset(mixed, prep, training=False, batch_size=2):
        assert (x["image_sizes"].numpy().min(axis=1) == 96).all()
    # Recorded with the detector's preprocessing, and read back.
    saved = json.loads(json.dumps(prep.to_dict()))
    assert saved["train_scales"] == [64, 80, 96] and saved["batching"] == "grouped"
    # (as detection.model_dir.load_detector reads it)
    assert DetectionPreprocessing(**{**saved, "mean_rgb": tuple(saved["mean_rgb"])}) == prep
    with pytest.raises(ValueError, match="train_scales"):
        DetectionPreprocessing(train_scales=(0, 600))
    with pytest.raises(ValueError, match="batching"):
        DetectionPreprocessing(batching="rect")

    # The CLI flag reaches train_detector.
    import detection.train
    from apps import cli

    got = {}
    monkeypatch.setattr(detection.train, "train_detector",
                        lambda *a, **k: got.update(k) or {"results": {}})
    assert cli.main(["train", "detector", "--data", "synthetic", "--out",
                     str(tmp_path / "d"), "--train-scales", "400,500,600"]) == 0
    assert got["train_scales"] == (400, 500, 600) and got["batching"] == "grouped"


def test_canvas_changes_no_feature_away_from_the_right_and_bottom_edges():
    """The trunk's C4 on the grouped canvas equals the square's, exactly, at
    every cell farther than the receptive field's reach from the image's
    right and bottom edges. Nearer, they differ: beyond the edge the square
    holds activations that spill from the image (and a trained network's
    batch-norm shifts), where the tighter canvas has the convolutions' zero
    padding; and the square adds anchors beyond the image that the proposal
    layer ranks too. So detections near those edges can change with the
    canvas (as in detectron2, whose batches pad to their largest image)."""
    from detection.model import FasterRCNN

    anns = bccd_annotations(1)
    model = FasterRCNN(3, depth=18, width=8, frozen_bn=False, freeze_at=0,
                       anchor_scales=(24, 48, 96))
    model.ensure_built()
    out = {}
    for mode in ("grouped", "square"):
        prep = DetectionPreprocessing(320, 480, flip=False, batching=mode)
        (x, _), = batches(make_detection_dataset(anns, prep, training=False, batch_size=1,
                                                 stride=model.feature_stride))
        c4, rpn, anchors = model._rpn(x["images"], False)
        out[mode] = (x["images"].shape[1:3], c4.numpy()[0], len(anchors))
    assert out["grouped"][0] == (320, 432) and out["square"][0] == (480, 480)
    g, s = out["grouped"][1], out["square"][1]
    h, w = g.shape[:2]  # 20 x 27 cells; the 320 x 427 image fills the grouped canvas
    diff = np.abs(g - s[:h, :w]).max(axis=-1) / np.abs(g).max()
    margin = 7  # cells (112 px): ResNet-18's reach through conv4_x here
    assert np.abs(g).max() > 1.0
    np.testing.assert_allclose(g[:h - margin, :w - margin], s[:h - margin, :w - margin],
                               rtol=1e-5, atol=1e-4)
    assert diff[-1].min() > 1e-3 and diff[:, -1].min() > 1e-3  # the edges do differ
    assert out["square"][2] > out["grouped"][2]  # anchors beyond the image

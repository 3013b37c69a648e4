"""Learning tests for multi-scale testing and multi-scale training (Appendix
B; issue 20 asks for one per piece that fails when the piece is skipped).

Both train a tiny detector from scratch on a synthetic set at one scale and
test it on objects twice as large, a scale it never saw:

- multi-scale testing: the class is a stripe texture's period in pixels, so
  a RoI twice the training size is misread at the input scale; the pyramid
  reads it at the level where it has its training size (``scale_target``);
- multi-scale training: with anchors of the object's size and twice it, a
  detector trained at one shorter side only ever trains the small anchor
  (and a head that has seen small objects only), so at twice the shorter
  side it misses; ``train_scales`` with twice the side trains both.
"""

import numpy as np
import pytest
import tensorflow as tf

import keras

from detection.data.annotations import ImageAnnotation
from detection.data.pipeline import DetectionPreprocessing, make_detection_dataset
from detection.data.split import DetectionSplit
from detection.evaluate import _to_original, detect_split
from detection.metrics.voc_map import evaluate_voc
from detection.model import FasterRCNN

TINY = dict(depth=18, width=8, rpn_batch=32, roi_batch=16, roi_positive_fraction=0.5,
            pooled_size=6, freeze_at=0,
            proposals=dict(pre_nms_train=200, post_nms_train=20, pre_nms_test=100,
                           post_nms_test=10))

# --- multi-scale testing: a class decided by a texture's pixel period -----------

SIDE, OBJ = 96, 24  # training images and objects (pixels)
PERIODS = (6, 12)  # class 0 and class 1 stripes at training size
# Test images are the same scenes drawn 2x (192 pixels, 48-pixel objects:
# class 0 then has class 1's training period). The pyramid's 96 level is
# the training scale; 80 is its smaller neighbour; 192 is the input itself.
TEST_SCALES = (80, 96, 192)


def striped_set(n, seed):
    """n SIDE x SIDE float32 images, each with four OBJ-pixel squares (one
    per quadrant, jittered) of vertical stripes, period PERIODS[class],
    random phase, on noise; the two classes have the same mean and
    contrast, so only the period tells them apart. Returns ``(images,
    boxes float32 [n, 4, 4] (ymin, xmin, ymax, xmax), classes int32 [n, 4])``."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0, 0.2, (n, SIDE, SIDE, 3)).astype("float32")
    boxes = np.zeros((n, 4, 4), "float32")
    classes = rng.integers(0, 2, (n, 4)).astype("int32")
    cell = SIDE // 2
    for i in range(n):
        for j in range(4):
            y0 = cell * (j // 2) + rng.integers(2, cell - OBJ - 1)
            x0 = cell * (j % 2) + rng.integers(2, cell - OBJ - 1)
            period = PERIODS[classes[i, j]]
            bright = (np.arange(OBJ) + rng.integers(period)) % period < period // 2
            images[i, y0:y0 + OBJ, x0:x0 + OBJ] = np.where(bright, 1.5, -0.5)[None, :, None]
            boxes[i, j] = [y0, x0, y0 + OBJ, x0 + OBJ]
    return images, boxes, classes


def head_accuracy(model, images, boxes, classes):
    """Foreground-class accuracy of the RoI head on the ground-truth boxes,
    read as ``FasterRCNN.call`` reads them: from the ``test_scales``
    pyramid when the model has one, else from the input's C4."""
    x = tf.constant(images)
    sizes = np.full((len(images), 2), images.shape[1:3], "float32")
    c4 = model.trunk(x)
    if model.test_scales:
        c4 = model.feature_pyramid(x, sizes, input_c4=c4)
    logits = model.head_outputs(c4, tf.constant(boxes), sizes)["class_logits"].numpy()
    return float(np.mean(np.argmax(logits[:, 1:], axis=1) == classes.ravel()))


def texture_accuracies(seed):
    """Head accuracies after 60 steps at the training scale: ``{(test,
    "single" | "multi"): accuracy}`` on held-out scenes at the training
    size ("same") and drawn 2x ("2x"), with and without the pyramid."""
    keras.utils.set_random_seed(seed)
    model = FasterRCNN(2, **TINY, anchor_scales=(16, 32, 64), seed=seed,
                       test_scales=TEST_SCALES, scale_target=OBJ)
    model.compile(keras.optimizers.Adam(1e-3))
    images, boxes, classes = striped_set(24, seed)
    model.fit({"images": images, "image_sizes": np.full((24, 2), SIDE, "float32")},
              {"boxes": boxes, "classes": classes}, batch_size=8, epochs=20, verbose=0)
    single = FasterRCNN.from_config({**model.get_config(), "test_scales": None})
    single.ensure_built().set_weights(model.get_weights())
    images, boxes, classes = striped_set(32, seed + 1000)
    big = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)  # the same scenes, 2x
    return {("same", "single"): head_accuracy(single, images, boxes, classes),
            ("2x", "single"): head_accuracy(single, big, boxes * 2, classes),
            ("2x", "multi"): head_accuracy(model, big, boxes * 2, classes)}


@pytest.mark.slow
def test_multiscale_testing_reads_a_roi_twice_the_training_size_at_its_training_scale(
        op_determinism):
    acc = texture_accuracies(seed=0)
    assert acc["same", "single"] >= 0.75, acc  # it learned the periods
    # Skipped (test_scales None): class 0 drawn 2x has class 1's period.
    assert acc["2x", "single"] <= 0.65, acc
    # With the pyramid each 48-pixel RoI is read at the 96 level (24 pixels).
    assert acc["2x", "multi"] >= 0.8, acc
    assert acc["2x", "multi"] - acc["2x", "single"] >= 0.25, acc


# --- multi-scale training: objects twice the training size -----------------------

SMALL, BOX = 64, 24  # source images and object sides (pixels)


def squares_set(n, seed):
    """n SMALL x SMALL uint8 images (noise around grey 128), each with one
    red square of side BOX +- 2; one class. Returns ``(images,
    annotations)`` for ``make_detection_dataset(..., images=images)``."""
    rng = np.random.default_rng(seed)
    images = rng.integers(118, 138, (n, SMALL, SMALL, 3)).astype("uint8")
    annotations = []
    for i in range(n):
        side = BOX + rng.integers(-2, 3)
        y0, x0 = rng.integers(2, SMALL - side - 2, 2)
        images[i, y0:y0 + side, x0:x0 + side] = (200, 60, 60)
        annotations.append(ImageAnnotation(
            path=f"synthetic:{i}", height=SMALL, width=SMALL,
            boxes=np.array([[y0, x0, y0 + side, x0 + side]], "float32"),
            classes=np.zeros(1, "int32"), difficult=np.zeros(1, bool)))
    return images, annotations


def squares_map(train_scales, seed):
    """VOC mAP@0.5 at shorter sides SMALL and 2 x SMALL of a detector with
    anchors (BOX, 2 x BOX) trained 100 steps through the real data pipeline
    at shorter side SMALL, or at a shorter side drawn per image from
    ``train_scales``."""
    keras.utils.set_random_seed(seed)
    model = FasterRCNN(1, **TINY, anchor_scales=(BOX, 2 * BOX), anchor_ratios=(1.0,),
                       max_detections=10, seed=seed)
    model.compile(keras.optimizers.Adam(1e-3))
    mean = (128.0,) * 3
    images, annotations = squares_set(32, seed)
    prep = DetectionPreprocessing(SMALL, 4 * SMALL, mean_rgb=mean, train_scales=train_scales)
    model.fit(make_detection_dataset(annotations, prep, training=True, batch_size=4,
                                     repeat=True, images=images, seed=seed),
              epochs=1, steps_per_epoch=100, shuffle=False, verbose=0)
    images, annotations = squares_set(16, seed + 1000)
    split = DetectionSplit("test", annotations=annotations, images=images)
    truth = [{"boxes": a.boxes, "classes": a.classes} for a in annotations]
    out = {}
    for side in (SMALL, 2 * SMALL):
        test = DetectionPreprocessing(side, 4 * SMALL, flip=False, mean_rgb=mean)
        dets = _to_original(detect_split(model, test, split, batch_size=4), annotations)
        out[side] = evaluate_voc(dets, truth, 1)["mAP"]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("train_scales", [(SMALL, 2 * SMALL), None])
def test_multiscale_training_detects_objects_at_twice_the_training_size(train_scales,
                                                                        op_determinism):
    got = squares_map(train_scales, seed=0)
    assert got[SMALL] >= 0.4, got  # both learn the objects at the training side
    if train_scales:
        assert got[2 * SMALL] >= 0.8, got
    else:  # skipped: the 2 x BOX anchor never had a positive, the head never a big object
        assert got[2 * SMALL] <= 0.3, got

"""Box refinement with box voting (detection.refine, FasterRCNN(box_refinement=True)):
the second pass pools from each RoI's top-class regressed box, NMS at 0.3 runs
over the union of both passes, voting moves the kept boxes; padding and empty
images; and the learning test of issue 20: on a detector whose head only gets
half-way to the object, refinement ends closer to it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from detection.model import FasterRCNN
from detection.ops.boxes import PAD, pairwise_iou
from detection.proposals import generate_proposals
from detection.refine import merge_and_vote, refine_detections, top_class_boxes

TINY = dict(depth=18, width=8, anchor_scales=(24, 48, 96), roi_batch=16, rpn_batch=32,
            pooled_size=6, proposals=dict(pre_nms_test=200, post_nms_test=30))
SIZE = 96
TRUTH = np.array([[[20, 30, 60, 70]], [[10, 10, 50, 40]], [[40, 20, 90, 60]],
                  [[30, 40, 70, 90]]], np.float32)  # one object per image, class 0


class HalfWayDetector(FasterRCNN):
    """A detector whose RoI head regresses every RoI half-way toward the
    image's object (``truth``, [B, 1, 4]) and scores it by its IoU with the
    object: the first pass ends off the object, a second pass from the
    regressed box gets closer. The rest (trunk, RPN, proposals, NMS) is the
    real model's."""

    truth = None

    def head_outputs(self, c4, rois, image_sizes, training=False):
        truth = tf.constant(self.truth)
        iou = pairwise_iou(rois, truth)[..., 0]  # [B, R]
        deltas = self.head_coder.encode((rois + truth) / 2, rois)  # [B, R, 4]
        k = self.num_classes
        fg = 8.0 * (iou - 0.3)  # class 0 likelier as the RoI fits better
        logits = tf.stack([tf.zeros_like(fg), fg] + [fg - 20.0] * (k - 1), -1)
        return {"class_logits": tf.reshape(logits, [-1, k + 1]),
                "box_deltas": tf.reshape(tf.tile(deltas[:, :, None], [1, 1, k, 1]),
                                         [-1, k, 4])}


def halfway_detector(box_refinement, num_classes=2):
    keras.utils.set_random_seed(0)
    model = HalfWayDetector(num_classes, box_refinement=box_refinement, **TINY)
    model.truth = TRUTH
    return model


def images():
    return {"images": tf.random.stateless_normal([4, SIZE, SIZE, 3], [0, 1], stddev=30.0),
            "image_sizes": tf.constant([[SIZE, SIZE]] * 4, tf.float32)}


def top_iou(det):
    """Mean over images of the top-scored detection's IoU with the object."""
    top = det["boxes"][:, :1]
    return float(tf.reduce_mean(pairwise_iou(top, tf.constant(TRUTH))))


def test_refinement_moves_boxes_toward_the_object():
    """The learning test: same weights, same proposals; refinement on must
    end closer to the object than the first pass alone."""
    x = images()
    before = halfway_detector(False)(x)
    after = halfway_detector(True)(x)
    assert int(tf.reduce_min(before["num_detections"])) >= 1
    assert int(tf.reduce_min(after["num_detections"])) >= 1
    iou_before, iou_after = top_iou(before), top_iou(after)
    print(f"top detection's mean IoU with the object: {iou_before:.3f} -> {iou_after:.3f}")
    assert iou_after > iou_before + 0.05, (iou_before, iou_after)


def test_model_output_is_refine_detections_and_config_round_trips():
    """The hook: FasterRCNN(box_refinement=True) returns exactly the
    refinement of its own first pass, in the detector's output format."""
    model = halfway_detector(True)
    x = images()
    det = model(x)
    c4, rpn, anchors = model._rpn(x["images"], False)
    rois, _, _ = generate_proposals(rpn["objectness"], rpn["deltas"], anchors,
                                    x["image_sizes"], model.proposal_config, training=False)
    boxes, probs = model.decode_head(model.head_outputs(c4, rois, x["image_sizes"]), rois,
                                     x["image_sizes"])
    ref = refine_detections(model.head_outputs, model.decode_head, c4, rois, boxes, probs,
                            x["image_sizes"], max_detections=model.max_detections,
                            score_threshold=model.score_threshold)
    for key in ("boxes", "scores", "classes", "num_detections"):
        np.testing.assert_allclose(det[key].numpy(), ref[key].numpy(), atol=1e-5)
    assert det["boxes"].shape == (4, model.max_detections, 4)
    assert det["num_detections"].dtype == tf.int32
    config = model.get_config()
    assert (config["box_refinement"], config["refinement_nms"], config["voting_iou"]) == \
        (True, 0.3, 0.5)
    assert FasterRCNN.from_config(config).box_refinement
    with pytest.raises(ValueError, match="voting_iou"):
        FasterRCNN(2, voting_iou=1.5, **TINY)


def test_second_pass_pools_from_the_top_class_box():
    rois = tf.constant([[[0, 0, 10, 10], [PAD] * 4]], tf.float32)
    boxes = tf.constant([[[[1, 1, 9, 9], [2, 2, 8, 8]], [[3, 3, 4, 4], [5, 5, 6, 6]]]],
                        tf.float32)
    probs = tf.constant([[[0.2, 0.7], [0.9, 0.1]]])
    np.testing.assert_array_equal(top_class_boxes(rois, boxes, probs).numpy(),
                                  [[[2, 2, 8, 8], [PAD] * 4]])


def union(first, second):
    """[B=1, R, K=2, 4] boxes and [1, R, 2] probs from lists of
    (box, class, score) rows, one prediction per row."""
    def rows(preds):
        boxes = np.full((1, len(preds), 2, 4), PAD, np.float32)
        probs = np.zeros((1, len(preds), 2), np.float32)
        for r, (box, c, s) in enumerate(preds):
            boxes[0, r, c], probs[0, r, c] = box, s
        return tf.constant(boxes), tf.constant(probs)
    return rows(first) + rows(second)


def test_nms_at_0_3_over_both_passes_then_voting():
    a = np.array([0, 0, 10, 10], np.float32)
    b_04 = np.array([0, 30 / 7, 10, 100 / 7], np.float32)  # IoU 0.4 with a; 0.62 with c
    c_02 = np.array([0, 20 / 3, 10, 50 / 3], np.float32)  # IoU 0.2 with a
    e_06 = np.array([0, 0, 10, 6], np.float32)  # IoU 0.6 with a, none with c
    first = [(a, 0, 0.9), (c_02, 0, 0.6), (a, 1, 0.5)]
    second = [(b_04, 0, 0.8), (e_06, 0, 0.3)]
    boxes, probs, new_boxes, new_probs = union(first, second)
    out = merge_and_vote(boxes, probs, new_boxes, new_probs, max_detections=10)
    n = int(out["num_detections"][0])
    kept = sorted(zip(out["scores"][0, :n].numpy().astype(float).round(3).tolist(),
                      out["classes"][0, :n].numpy().tolist()))
    # b (0.4 with a, second pass) is suppressed at 0.3, which 0.5 would keep;
    # c (0.2) and the class-1 copy of a survive.
    assert kept == [(0.5, 1), (0.6, 0), (0.9, 0)]
    # Voting: a's box is the weighted mean of a and e (b is under 0.5 IoU).
    # Suppressed boxes vote: a takes e (0.6), c takes b (0.62); the class-1
    # copy of a has only itself.
    np.testing.assert_allclose(out["boxes"][0, 0].numpy(), (0.9 * a + 0.3 * e_06) / 1.2,
                               atol=1e-4)
    np.testing.assert_allclose(out["boxes"][0, 1].numpy(), (0.6 * c_02 + 0.8 * b_04) / 1.4,
                               atol=1e-4)
    np.testing.assert_allclose(out["boxes"][0, 2].numpy(), a, atol=1e-4)
    # The cap: 2 detections at most, counted as 2.
    capped = merge_and_vote(boxes, probs, new_boxes, new_probs, max_detections=2)
    assert int(capped["num_detections"][0]) == 2
    assert capped["boxes"].shape == (1, 2, 4)


def test_empty_image_in_a_batch():
    """An image with no valid RoI gives no detection and padded rows; the
    other image of the batch is unaffected."""
    model = halfway_detector(True)
    model.truth = TRUTH[:2]
    rois = tf.constant([[[15, 25, 55, 65], [0, 0, 40, 40]], [[PAD] * 4, [PAD] * 4]])
    sizes = tf.constant([[SIZE, SIZE]] * 2, tf.float32)
    c4 = tf.zeros([2, SIZE // 16, SIZE // 16, 8])  # this head ignores features
    boxes, probs = model.decode_head(model.head_outputs(c4, rois, sizes), rois, sizes)
    out = refine_detections(model.head_outputs, model.decode_head, c4, rois, boxes, probs,
                            sizes, max_detections=5)
    assert out["num_detections"].numpy().tolist()[1] == 0
    assert out["num_detections"].numpy().tolist()[0] >= 1
    np.testing.assert_array_equal(out["boxes"][1].numpy(), PAD)
    np.testing.assert_array_equal(out["classes"][1].numpy(), -1)
    np.testing.assert_array_equal(out["scores"][1].numpy(), 0)



@pytest.mark.slow
def test_export_carries_refinement(tmp_path):
    """A detector saved with box_refinement=True exports a signature whose
    detections are the refined model's, and not the first pass's. The
    reference is the export's own in-process predict function (same batch
    path) on the loaded model, with refinement on, then off."""
    from detection.data.pipeline import DetectionPreprocessing, prepare_example
    from detection.export import detector_serving_model, export_detector
    from detection.model_dir import load_detector, save_detector

    keras.utils.set_random_seed(0)
    model = FasterRCNN(2, box_refinement=True, **TINY).ensure_built()
    directory = save_detector(str(tmp_path / "model"),
                              model, DetectionPreprocessing(shorter_side=96, max_side=128))
    export_dir = export_detector(directory, str(tmp_path / "serving"))
    image = tf.cast(tf.random.stateless_uniform([72, 96, 3], [3, 4], maxval=255), tf.uint8)
    out = tf.saved_model.load(export_dir).signatures["serve_image_tensor"](images=image[None])

    loaded, prep, _ = load_detector(directory)
    assert loaded.box_refinement
    x, _ = prepare_example(image, tf.fill([1, 4], -1.0), tf.constant([-1]), prep)
    x = {k: v[None] for k, v in x.items()}
    for refine in (True, False):
        loaded.box_refinement = refine
        ref = detector_serving_model(loaded, prep).predict(x)
        n = int(ref["num_detections"][0])
        same = (n == int(out["num_detections"][0]) and np.allclose(
            out["detection_boxes"][0, :n], ref["detection_boxes"][0, :n], atol=1e-5)
            and np.allclose(out["detection_scores"][0, :n], ref["detection_scores"][0, :n],
                            atol=1e-5))
        assert n >= 3 and same == refine, (refine, n)

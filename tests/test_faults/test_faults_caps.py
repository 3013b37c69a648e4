"""Issue 19, "Every cap is counted", at run time: the limits that only meet
the data while the model runs are counted when they are hit.

- detections: images whose ``num_detections`` filled ``max_detections``
  (evaluation result, CLI, ``predict``);
- COCO AP scores as many detections per image as the detector returns
  (``params.maxDets`` follows ``max_detections``; pycocotools' 100 would
  drop the rest), and says which it used;
- proposals: the fraction of training images whose post-NMS proposals
  filled the budget (the ``proposals_capped`` metric).
"""

import numpy as np
import pytest
import tensorflow as tf

from conftest import shared_case
from test_faults_missed import _detector, voc_folder


def _crowd():
    """The 150-box case's one annotation."""
    from detection.data.sources import open_detection_source

    (a,) = open_detection_source(f"voc:{shared_case('150-boxes')}").split("eval").annotations
    return a


def test_coco_ap_scores_every_detection_up_to_max_dets():
    """The 150-box case, detected perfectly: COCO AP is 1 when 150
    detections are scored, and the 100 of pycocotools' default lose a third
    of the objects."""
    from pycocotools.coco import COCO  # noqa: F401 (the reference below)

    from detection.metrics.coco_map import evaluate_coco, to_coco

    a = _crowd()
    assert len(a.boxes) == 150
    gts = [{"boxes": a.boxes, "classes": a.classes}]
    # Scores fall with the index: the top 100 are the first 100 objects.
    dets = [{"boxes": a.boxes, "scores": np.linspace(1, 0.5, 150), "classes": a.classes}]
    names = [str(k) for k in range(int(a.classes.max()) + 1)]
    full = evaluate_coco(dets, gts, names, [(a.height, a.width)], max_dets=150)
    assert full["max_dets"] == 150 and full["AP"] == pytest.approx(1.0)
    cut = evaluate_coco(dets, gts, names, [(a.height, a.width)])
    assert cut["max_dets"] == 100 and cut["AP"] < 0.9
    # At 100, the numbers are pycocotools' own summarize().
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    gt_dict, coco_dets = to_coco(dets, gts, names, [(a.height, a.width)])
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(coco_dets), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert [cut[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")] == pytest.approx(
        list(ev.stats[:6]))
    # Fewer than 10 works too (COCOeval's list is [1, max_dets] then).
    few = evaluate_coco(dets, gts, names, [(a.height, a.width)], max_dets=7)
    assert few["max_dets"] == 7 and 0 < few["AP"] < cut["AP"]


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return voc_folder(tmp_path_factory.mktemp("voc") / "voc")


@pytest.mark.parametrize("max_detections", [7, 500])
def test_evaluation_counts_images_that_filled_max_detections(max_detections, voc, tmp_path,
                                                             capsys):
    """A random detector with no score threshold returns as many boxes as
    NMS lets through: at 7 a call every image fills the cap, at 500 none;
    the evaluation's count agrees with predict's per-image flags and the
    number of boxes each returned."""
    from apps.cli import main
    from detection.evaluate import evaluate_detector, predict_detector

    directory = _detector(str(tmp_path / "det"), ["circle", "square"],
                          max_detections=max_detections)
    r = evaluate_detector(directory, f"voc:{voc}")
    cap = r["detections_capped"]
    assert r["coco"]["max_dets"] == max_detections
    rows = predict_detector(directory, [str(p) for p in sorted(voc.glob("*.jpg"))])
    full = [len(row["boxes"]) == max_detections for row in rows]
    assert [row["capped"] for row in rows] == full
    assert (cap["limit"], cap["of"], cap["images"]) == (max_detections, 3, sum(full))
    assert cap["images"] == (3 if max_detections == 7 else 0)
    assert main(["evaluate", "detector", "--model", directory, "--data", f"voc:{voc}"]) == 0
    out = capsys.readouterr().out
    assert f"Capped: detections {cap['images']}/3 images filled max_detections=" \
           f"{max_detections}" in out and f"(maxDets {max_detections})" in out


# A 64x64 image at stride 16 with 2 scales x 3 ratios has 96 anchors: a
# budget of 10 is filled by every image, one of 500 by none.
@pytest.mark.parametrize("post_nms, expected", [(10, 1.0), (500, 0.0)])
def test_training_counts_images_whose_proposals_filled_the_budget(post_nms, expected):
    from detection.model import FasterRCNN
    from detection.proposals import PROPOSALS_CAPPED

    model = FasterRCNN(2, depth=18, width=8, anchor_scales=(16, 32), roi_batch=8,
                       rpn_batch=16, pooled_size=4, frozen_bn=False, freeze_at=0,
                       proposals=dict(pre_nms_train=200, post_nms_train=post_nms,
                                      pre_nms_test=50, post_nms_test=10))
    x = {"images": tf.random.stateless_uniform([2, 64, 64, 3], [1, 2]),
         "image_sizes": tf.constant([[64, 64], [64, 48]], tf.float32)}
    y = {"boxes": tf.constant([[[4, 4, 40, 40]], [[10, 8, 30, 40]]], tf.float32),
         "classes": tf.constant([[0], [1]], tf.int32)}
    model.compute_loss(x, y, model(x, training=True))
    assert PROPOSALS_CAPPED in [m.name for m in model.metrics]
    assert float(model.proposals_capped.result()) == expected

"""VOC annotations and the detection metrics."""

import logging
import os

import numpy as np
import pytest

from conftest import shared_data
from detection.data.voc import read_voc
from detection.metrics.coco_map import evaluate_coco
from detection.metrics.voc_map import evaluate_voc, voc_ap


def test_bccd_loads_every_file_and_reports_exactly_the_two_degenerate_boxes(caplog):
    root = shared_data("bccd/BCCD")
    with caplog.at_level(logging.WARNING, logger="resnet_tf.data"):
        anns, names, report = read_voc(str(root))
    assert names == ["Platelets", "RBC", "WBC"]
    assert report.images == len(anns) == 364
    assert report.boxes == 4886 and report.dropped_boxes == 2
    assert sorted(os.path.basename(f) for f, _, _ in report.dropped) == [
        "BloodImage_00338.xml", "BloodImage_00343.xml"]
    assert "BloodImage_00338.xml" in caplog.text and "BloodImage_00343.xml" in caplog.text
    a = anns[0]
    assert (a.height, a.width) == (480, 640) and a.boxes.dtype == np.float32
    assert (a.boxes[:, 2] > a.boxes[:, 0]).all() and a.boxes.max() <= 640
    test, _, _ = read_voc(str(root), "test", class_names=names)
    trainval, _, _ = read_voc(str(root), "trainval", class_names=names)
    assert (len(test), len(trainval)) == (72, 292)


def _xml(path, filename, objects, size=(100, 80)):
    objs = "".join(
        f"<object><name>{n}</name><difficult>{int(d)}</difficult><bndbox>"
        f"<xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax>"
        f"</bndbox></object>" for n, b, d in objects)
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height></size>" if size else ""
    path.write_text(f"<annotation><filename>{filename}</filename>{size_xml}{objs}</annotation>")


def _image(path, w=100, h=80):
    from PIL import Image

    Image.new("RGB", (w, h), (10, 20, 30)).save(path)


def test_plain_folder_layout_clipping_difficult_and_empty_images(tmp_path):
    _image(tmp_path / "a.jpg")
    _image(tmp_path / "b.jpg")
    _xml(tmp_path / "a.xml", "a.jpg", [("cat", (1, 1, 10, 20), False),
                                       ("dog", (50, 60, 150, 90), True),  # past the edge
                                       ("cat", (30, 30, 20, 40), False)])  # inverted
    _xml(tmp_path / "b.xml", "b.jpg", [], size=None)  # no boxes, size from the file
    anns, names, report = read_voc(str(tmp_path))
    assert names == ["cat", "dog"]
    a, b = anns
    np.testing.assert_allclose(a.boxes, [[0, 0, 20, 10], [59, 49, 80, 100]])
    assert a.classes.tolist() == [0, 1] and a.difficult.tolist() == [False, True]
    assert (report.clipped_boxes, report.dropped_boxes, report.images_without_boxes) == (1, 1, 1)
    assert b.boxes.shape == (0, 4) and (b.height, b.width) == (80, 100)


@pytest.mark.parametrize("setup,match,reason", [
    (lambda d: (d / "x.xml").write_text("<annotation><filename>"), "malformed VOC XML",
     "malformed_annotation"),
    (lambda d: _xml(d / "x.xml", "missing.jpg", []), "does not exist", "missing_image"),
    (lambda d: _xml(d / "x.xml", "../outside.jpg", []), "points outside",
     "path_outside_root"),
    (lambda d: (_image(d / "x.jpg"), _xml(d / "x.xml", "x.jpg", [("bird", (1, 1, 5, 5), 0)])),
     "unknown class name 'bird'", "unknown_class"),
    (lambda d: (_image(d / "x.jpg"), (d / "x.xml").write_text(
        "<annotation><filename>x.jpg</filename><object><name>cat</name><bndbox>"
        "<xmin>a</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
        "</annotation>")), "<xmin> is 'a', not a number", "malformed_annotation"),
])
def test_bad_annotation_files_are_skipped_by_reason_naming_the_file(tmp_path, caplog, setup,
                                                                    match, reason):
    from detection.data.voc import parse_voc_xml

    data = tmp_path / "data"
    data.mkdir()
    _image(tmp_path / "outside.jpg")
    _image(data / "good.jpg")
    _xml(data / "good.xml", "good.jpg", [("cat", (1, 1, 5, 5), 0)])
    setup(data)
    with caplog.at_level(logging.WARNING, logger="resnet_tf.data"):
        anns, _, report = read_voc(str(data), class_names=["cat"])
    assert [os.path.basename(a.path) for a in anns] == ["good.jpg"]
    assert report.skipped_images == 1 and report.by_reason == {reason: 1}
    assert f"{data / 'x.xml'}: skipped: " in caplog.text and match in caplog.text
    with pytest.raises(ValueError, match=match) as e:  # one file alone: an error
        parse_voc_xml(str(data / "x.xml"), str(data), class_names=["cat"])
    assert "x.xml" in str(e.value)


def test_voc_ap_hand_worked_example():
    # 3 ground-truth boxes in 2 images; 4 detections by score:
    # TP, FP (duplicate), TP, FP (elsewhere) -> recall 1/3,1/3,2/3,2/3.
    gts = [{"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "classes": [0, 0]},
           {"boxes": [[0, 0, 10, 10]], "classes": [0]}]
    dets = [{"boxes": [[0, 0, 10, 10], [0, 0, 10, 9.5], [50, 50, 60, 60]],
             "scores": [0.9, 0.8, 0.6], "classes": [0, 0, 0]},
            {"boxes": [[0, 0, 10, 10]], "scores": [0.7], "classes": [0]}]
    # Sorted: .9 TP, .8 FP (taken), .7 TP, .6 FP. precision 1, .5, .667, .5.
    # All points: envelope 1 on (0, 1/3], .667 on (1/3, 2/3] -> 1/3 + 2/9.
    out = evaluate_voc(dets, gts, 1)
    assert out["mAP"] == pytest.approx(1 / 3 + 2 / 9)
    # 11-point: t = 0..0.3 -> 1 (4 points), 0.4..0.6 -> 2/3 (3 points), rest 0.
    out07 = evaluate_voc(dets, gts, 1, use_07_metric=True)
    assert out07["mAP"] == pytest.approx((4 + 3 * 2 / 3) / 11)
    assert voc_ap([0.5, 1.0], [1.0, 1.0]) == pytest.approx(1.0)


def test_difficult_boxes_are_neither_hits_nor_misses():
    gts = [{"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "classes": [0, 0],
            "difficult": [False, True]}]
    dets = [{"boxes": [[20, 20, 30, 30], [0, 0, 10, 10]], "scores": [0.9, 0.8],
             "classes": [0, 0]}]
    assert evaluate_voc(dets, gts, 1)["mAP"] == pytest.approx(1.0)


def _separated_problem(rng, images=20, classes=3):
    gts, dets, sizes = [], [], []
    for _ in range(images):
        n = rng.integers(1, 6)
        cells = rng.choice(16, n, replace=False)
        boxes = np.array([[(c // 4) * 50 + 5, (c % 4) * 50 + 5, (c // 4) * 50 + 40,
                           (c % 4) * 50 + 40] for c in cells], float)
        cls = rng.integers(0, classes, n)
        gts.append({"boxes": boxes, "classes": cls})
        db, ds, dc = [], [], []
        for b, c in zip(boxes, cls):
            for _ in range(rng.integers(0, 3)):  # 0-2 detections per object
                db.append(b + rng.normal(0, 4, 4))
                ds.append(rng.uniform())
                dc.append(c if rng.uniform() < 0.85 else (c + 1) % classes)
        for _ in range(rng.integers(0, 3)):  # false positives in empty cells
            y, x = rng.uniform(0, 160, 2)
            db.append([y, x, y + 30, x + 30])
            ds.append(rng.uniform())
            dc.append(rng.integers(0, classes))
        dets.append({"boxes": np.array(db).reshape(-1, 4), "scores": np.array(ds),
                     "classes": np.array(dc)})
        sizes.append((200, 200))
    return dets, gts, sizes


def test_voc_ap_agrees_with_pycocotools_at_iou_half():
    dets, gts, sizes = _separated_problem(np.random.default_rng(0))
    ours = evaluate_voc(dets, gts, 3)
    coco = evaluate_coco(dets, gts, ["a", "b", "c"], sizes, iou_thresholds=[0.5],
                         rec_thresholds=np.linspace(0, 1, 10001))
    for k, name in enumerate(["a", "b", "c"]):
        assert ours["per_class"][str(k)] == pytest.approx(coco["per_class"][name], abs=2e-3)
    assert ours["mAP"] == pytest.approx(coco["AP"], abs=2e-3)


def test_coco_ap_of_perfect_and_empty_detections():
    _, gts, sizes = _separated_problem(np.random.default_rng(1))
    perfect = [{"boxes": g["boxes"], "scores": np.ones(len(g["classes"])),
                "classes": g["classes"]} for g in gts]
    out = evaluate_coco(perfect, gts, ["a", "b", "c"], sizes)
    assert out["AP"] == pytest.approx(1.0) and out["AP50"] == pytest.approx(1.0)
    empty = [{"boxes": np.zeros((0, 4)), "scores": [], "classes": []} for _ in gts]
    assert evaluate_coco(empty, gts, ["a", "b", "c"], sizes)["AP"] <= 0

"""Issue 19, "Evaluation finishes": an image the annotation loader skips
because its file can't be read (missing, empty, unreadable header) counts as
missed in evaluation, like one the decoder skips: its ground-truth objects
stay in the denominators, the counts name the images and objects, and a
score can't rise by losing files. ``--strict`` refuses them.

Detection runs through ``evaluate_detector`` with an oracle in place of the
network (every readable image's ground truth returned as its detections),
so a perfect score is 1 and any object left out of the denominators shows.
"""

import numpy as np
import PIL.Image
import pytest

from detection.data import reasons as R

CLASSES = ["circle", "square"]
# (file stem, [(class, xmin, ymin, xmax, ymax)]): VOC 1-based pixels of 64x64 images
VOC_IMAGES = [("a", [("circle", 5, 5, 30, 30)]),
              ("b", [("square", 10, 12, 50, 40), ("circle", 34, 34, 60, 60)]),
              ("c", [("circle", 20, 8, 44, 30)])]


def _write_image(path, seed):
    rng = np.random.default_rng(seed)
    PIL.Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(path)


def voc_folder(root, size=True):
    """Three annotated 64x64 JPEGs side by side with their XML files."""
    root.mkdir(parents=True, exist_ok=True)
    for i, (stem, objects) in enumerate(VOC_IMAGES):
        _write_image(root / f"{stem}.jpg", i)
        objs = "".join(f"<object><name>{c}</name><difficult>0</difficult><bndbox><xmin>{x0}"
                       f"</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax>"
                       "</bndbox></object>" for c, x0, y0, x1, y1 in objects)
        stated = "<size><width>64</width><height>64</height><depth>3</depth></size>"
        (root / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename>{stated if size else ''}"
            f"{objs}</annotation>")
    return root


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory):
    return _detector(str(tmp_path_factory.mktemp("det") / "model"), CLASSES)


def _detector(directory, classes, max_detections=7):
    """A tiny random detector directory for ``classes``."""
    import keras

    from detection.data.pipeline import DetectionPreprocessing
    from detection.model import FasterRCNN
    from detection.model_dir import save_detector

    keras.utils.set_random_seed(0)
    model = FasterRCNN(len(classes), depth=18, width=8, class_names=classes,
                       frozen_bn=False, freeze_at=0, anchor_scales=(16, 32),
                       roi_batch=8, rpn_batch=16, pooled_size=4, score_threshold=0.0,
                       max_detections=max_detections,
                       proposals=dict(pre_nms_train=50, post_nms_train=10,
                                      pre_nms_test=50, post_nms_test=10))
    model.ensure_built()
    save_detector(directory, model, DetectionPreprocessing(shorter_side=64, max_side=64))
    return directory


@pytest.fixture
def oracle(monkeypatch):
    """``detect_split`` replaced by the ground truth of every annotation
    the split kept (score 1): a perfect detector on the readable images."""
    import detection.evaluate as ev

    def detect(model, prep, split, batch_size=2, counter=None, capped=None):
        return [{"boxes": a.boxes.copy(), "scores": np.ones(len(a.boxes), np.float32),
                 "classes": a.classes.copy(),
                 "resized": np.array([a.height, a.width], np.float32)}
                for a in split.annotations]

    monkeypatch.setattr(ev, "detect_split", detect)


def _objects():
    return sum(len(objs) for _, objs in VOC_IMAGES)


@pytest.mark.parametrize("fault", ["missing", "empty", "not_an_image"])
def test_voc_image_skipped_at_load_counts_as_missed(fault, detector_dir, oracle, tmp_path):
    from detection.evaluate import evaluate_detector

    whole = evaluate_detector(detector_dir, f"voc:{voc_folder(tmp_path / 'whole')}")
    assert whole["voc_map50"] == pytest.approx(1.0) and whole["unreadable_images"] == 0
    assert whole["coco"]["AP"] == pytest.approx(1.0)
    # Without <size>, a bad header can't be deferred to the decoder: the loader skips.
    root = voc_folder(tmp_path / "broken", size=fault == "missing")
    bad = root / "b.jpg"
    if fault == "missing":
        bad.unlink()
    else:
        bad.write_bytes(b"" if fault == "empty" else b"not an image at all")
    r = evaluate_detector(detector_dir, f"voc:{root}")
    reason = {"missing": R.MISSING_IMAGE, "empty": R.EMPTY, "not_an_image": R.NOT_AN_IMAGE}
    assert (r["images"], r["readable_images"], r["unreadable_images"]) == (3, 2, 1)
    assert (r["unreadable_objects"], r["unreadable_at_load_images"],
            r["unreadable_at_load_objects"]) == (2, 1, 2)
    assert r["skipped_by_reason"] == {reason[fault]: 1}
    assert len(r["unreadable_paths"]) == 1 and "b." in r["unreadable_paths"][0]
    # Strictly lower: each class lost one of its objects (circle 2 of 3, square 0 of 1).
    assert r["per_class_ap50"]["circle"] == pytest.approx(2 / 3)
    assert r["per_class_ap50"]["square"] == pytest.approx(0.0)
    assert r["voc_map50"] < whole["voc_map50"] and r["coco"]["AP"] < whole["coco"]["AP"]
    assert r["voc_map50_readable"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"1 of the 3 images .*b\..*--strict"):
        evaluate_detector(detector_dir, f"voc:{root}", strict=True)


def test_coco_image_skipped_at_load_counts_as_missed(detector_dir, oracle, tmp_path):
    import json

    from detection.evaluate import evaluate_detector

    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i, (stem, objects) in enumerate(VOC_IMAGES):
        _write_image(root / "images" / f"{stem}.jpg", i)
        images.append({"id": i, "file_name": f"images/{stem}.jpg", "width": 64, "height": 64})
        for c, x0, y0, x1, y1 in objects:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": CLASSES.index(c),
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0})
    cats = [{"id": k, "name": n} for k, n in enumerate(CLASSES)]
    path = root / "result.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    whole = evaluate_detector(detector_dir, f"coco:{path}")
    assert whole["coco"]["AP"] == pytest.approx(1.0)
    (root / "images" / "c.jpg").unlink()
    r = evaluate_detector(detector_dir, f"coco:{path}")
    assert (r["images"], r["unreadable_at_load_images"], r["unreadable_objects"]) == (3, 1, 1)
    assert r["skipped_by_reason"] == {R.MISSING_IMAGE: 1}
    assert "c.jpg" in r["unreadable_paths"][0]
    # COCO's ground truth keeps the missed image's object: recall 2 of 3 circles.
    assert r["coco"]["AP"] < whole["coco"]["AP"]
    assert r["per_class_ap50"]["circle"] == pytest.approx(2 / 3)
    assert r["per_class_ap50"]["square"] == pytest.approx(1.0)


def test_detector_cli_prints_the_missed_images(detector_dir, tmp_path, capsys):
    from apps.cli import main

    root = voc_folder(tmp_path / "voc")
    (root / "a.jpg").unlink()
    assert main(["evaluate", "detector", "--model", detector_dir, "--data",
                 f"voc:{root}"]) == 0
    out = capsys.readouterr().out
    assert "1 unreadable images" in out and "a.xml" in out and "3 images" in out
    assert main(["evaluate", "detector", "--model", detector_dir, "--data", f"voc:{root}",
                 "--strict"]) == 2
    assert "a.xml" in capsys.readouterr().err


def test_voc_without_class_list_keeps_the_missed_images_classes(tmp_path):
    from detection.data.voc import read_voc

    root = voc_folder(tmp_path / "voc")
    (root / "b.jpg").unlink()  # the only square
    anns, names, report = read_voc(str(root))
    assert names == CLASSES and len(anns) == 2
    (m,) = report.missed
    assert m.reason == R.MISSING_IMAGE and m.annotation.classes.tolist() == [1, 0]
    # 1-based inclusive -> continuous, as for a readable image.
    assert m.annotation.boxes.tolist() == [[11, 9, 40, 50], [33, 33, 60, 60]]
    assert report.to_dict()["missed_images"] == 1 and report.to_dict()["missed_objects"] == 2


def test_annotation_faults_are_not_counted_as_missed(tmp_path):
    """A size that disagrees with the image is the annotation's fault, not a
    lost file: skipped and counted by reason, but with no ground truth to
    trust, not in ``missed``."""
    from detection.data.voc import read_voc

    root = voc_folder(tmp_path / "voc")
    xml = root / "c.xml"
    xml.write_text(xml.read_text().replace("<width>64</width>", "<width>99</width>"))
    anns, _, report = read_voc(str(root), class_names=CLASSES)
    assert report.by_reason == {R.SIZE_MISMATCH: 1} and report.missed == []


# --- localization -----------------------------------------------------------------------

LOC_ROWS = {"val_1": "n01 2 2 30 30", "val_2": "n02 10 10 50 40 n02 3 3 20 20",
            "val_3": "n01 8 8 40 40", "val_4": "n02 4 6 60 50"}
LOC_CLASSES = ["n01", "n02"]


@pytest.fixture(scope="module")
def localizer_dir(tmp_path_factory):
    import keras

    import resnet_tf
    from localization.model import Localizer
    from localization.model_dir import save_localizer
    from resnet_tf.data.preprocessing import Preprocessing

    keras.utils.set_random_seed(0)
    clf = resnet_tf.ResNet(18, classes=2, width=8, input_shape=(None, None, 3))
    loc = Localizer(clf.get_config(), class_names=LOC_CLASSES, anchor_scales=(16, 32),
                    head_channels=8)
    loc.ensure_built(32)
    directory = str(tmp_path_factory.mktemp("loc") / "model")
    save_localizer(directory, loc, Preprocessing.for_style("imagenet", crop_size=32,
                                                           eval_resize=36,
                                                           scale_range=(36, 48)))
    return directory


def _ilsvrc(root, missing=()):
    (root / "images").mkdir(parents=True)
    for i, image_id in enumerate(LOC_ROWS):
        if image_id not in missing:
            _write_image(root / "images" / f"{image_id}.JPEG", i)
    (root / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n" + "".join(f"{k},{v}\n" for k, v in LOC_ROWS.items()))
    return root


def test_localizer_counts_a_missing_image_as_a_miss(localizer_dir, tmp_path):
    from localization.evaluate import evaluate_localizer

    whole = evaluate_localizer(localizer_dir, f"ilsvrc-loc:{_ilsvrc(tmp_path / 'w')}",
                               scales=(32,))
    root = _ilsvrc(tmp_path / "b", missing=("val_2",))
    r = evaluate_localizer(localizer_dir, f"ilsvrc-loc:{root}", scales=(32,),
                           per_image=True)
    assert (r["images"], r["readable_images"], r["unreadable_images"]) == (4, 3, 1)
    assert (r["unreadable_at_load_images"], r["unreadable_objects"]) == (1, 2)
    assert r["skipped_by_reason"] == {R.MISSING_IMAGE: 1}
    assert r["per_image"][0]["unreadable"] and "val_2" not in r["per_image"][1]["path"]
    for key in ("top1_loc_error", "top5_loc_error", "top1_cls_error", "oracle_loc_error"):
        assert r[key] * 4 == pytest.approx(r[f"{key}_readable"] * 3 + 1), key
        assert r[key] >= whole[key] - 1e-9, key
    # The first N images of the loader's order: val_1 and the missing val_2.
    r2 = evaluate_localizer(localizer_dir, f"ilsvrc-loc:{root}", scales=(32,), max_images=2)
    assert (r2["images"], r2["unreadable_images"]) == (2, 1)
    r1 = evaluate_localizer(localizer_dir, f"ilsvrc-loc:{root}", scales=(32,), max_images=1)
    assert (r1["images"], r1["unreadable_images"]) == (1, 0)
    with pytest.raises(ValueError, match=r"1 of the 4 images .*val_2.*--strict"):
        evaluate_localizer(localizer_dir, f"ilsvrc-loc:{root}", scales=(32,), strict=True)


def test_held_out_part_gets_its_own_missed_images(tmp_path):
    import zlib

    from localization.data.sources import open_localization_source

    root = _ilsvrc(tmp_path / "b", missing=("val_2",))
    src = open_localization_source(f"ilsvrc-loc:{root}:val", val_fraction=0.5)
    train, held = src.split("train"), src.split("eval")
    assert len(train.report.missed) + len(held.report.missed) == 1
    # The readable images' rule: the lowest (CRC-32, ImageId) keys are held
    # out, round(3 * 0.5) = 2 of them; val_2 goes with them if its key sorts
    # among theirs.
    key = lambda i: (zlib.crc32(i.encode()), i)  # noqa: E731
    cut = sorted(key(i) for i in ("val_1", "val_3", "val_4"))[1]
    assert bool(held.report.missed) == (key("val_2") <= cut)
    assert bool(train.report.missed) == (key("val_2") > cut)
    assert {a.path.rsplit("/", 1)[-1][:-5] for a in held.annotations} == {
        i for i in ("val_1", "val_3", "val_4") if key(i) <= cut}



# --- TFDS: the annotation pass applies the decode rule ---------------------------------


def test_tfds_prepass_uses_the_decode_rule(tmp_path, oracle):
    """Through the voc/2007 builder's own features: the case's real corrupt
    JPEG (header and end marker intact) passes the annotation pass and is
    named and counted by the pipeline's decoder; a TIFF (PIL reads it; the
    checks call it "not an image") is accepted with its decoded size; an
    empty image is rejected by the rule, counted, and its object counted
    as missed in evaluation. The old pre-pass (header checks) skipped the
    TIFF as not_an_image."""
    import tensorflow_datasets as tfds
    from conftest import shared_case
    from test_detection_sources import _mock_from

    from detection.data.annotations import ImageAnnotation
    from detection.data.pipeline import DetectionPreprocessing, make_detection_dataset
    from detection.data.sources import open_detection_source
    from detection.evaluate import evaluate_detector
    from resnet_tf.data.decode import SkipCounter

    case = shared_case("jpeg-corrupt-inside") / "voc" / "images"
    tiff = tmp_path / "3.tiff"
    PIL.Image.fromarray(np.full((40, 48, 3), 90, np.uint8)).save(tiff)
    empty = tmp_path / "4.jpg"
    empty.write_bytes(b"")
    files = [case / "0.jpg", case / "1.jpg", case / "2.jpg", tiff, empty]
    sizes = [PIL.Image.open(f).size[::-1] if f != empty else (32, 32) for f in files]
    anns = [ImageAnnotation(path=str(f), height=h, width=w,
                            boxes=np.array([[2, 3, h - 4, w - 5]], np.float32),
                            classes=np.array([i % 2], np.int32),
                            difficult=np.zeros(1, bool))
            for i, (f, (h, w)) in enumerate(zip(files, sizes))]
    labels = tfds.builder("voc/2007").info.features["objects"]["label"].names
    with _mock_from(anns, labels):
        split = open_detection_source("tfds:voc/2007").split("eval")
        # Kept: the three JPEGs (the corrupt one judged later) and the TIFF.
        assert len(split.annotations) == 4
        assert (split.annotations[3].height, split.annotations[3].width) == (40, 48)
        assert split.report.by_reason == {R.EMPTY: 1}
        (m,) = split.report.missed
        assert m.reason == R.EMPTY and len(m.annotation.boxes) == 1
        counter = SkipCounter(max_paths=None)
        ds = make_detection_dataset(split.annotations, DetectionPreprocessing(64, 64),
                                    training=False, batch_size=1, counter=counter,
                                    image_bytes=split.image_bytes())
        assert sum(1 for _ in ds) == 3  # 0.jpg, 2.jpg and the TIFF, in step
        assert counter.by_reason == {R.CORRUPT: 1} and counter.paths == [
            split.annotations[1].path]
        r = evaluate_detector(_detector(str(tmp_path / "det"), labels), "tfds:voc/2007")
    # The oracle sees the 4 kept; the empty image's object is missed.
    assert (r["images"], r["unreadable_at_load_images"], r["unreadable_objects"]) == (5, 1, 1)

"""coco:PATH and tfds:NAME detection sources, checked against the VOC reader
on the same real BCCD images."""

import io
import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import shared_data
from detection.data.coco import read_coco
from detection.data.pipeline import DetectionPreprocessing, make_detection_dataset
from detection.data.sources import open_detection_source
from detection.data.voc import read_voc


def _bccd(split=None, n=None):
    root = shared_data("bccd/BCCD")
    anns, names, _ = read_voc(str(root), split)
    return root, anns[:n] if n else anns, names


def _coco_dict(anns, names, crowd_every=0):
    """The same annotations written as COCO JSON (categories with gappy ids)."""
    cat_ids = [7 + 3 * k for k in range(len(names))]
    images, objs = [], []
    for i, a in enumerate(anns):
        images.append({"id": 100 + i, "file_name": os.path.basename(a.path),
                       "height": a.height, "width": a.width})
        for j, (b, c) in enumerate(zip(a.boxes, a.classes)):
            y0, x0, y1, x1 = (float(v) for v in b)
            objs.append({"id": len(objs) + 1, "image_id": 100 + i,
                         "category_id": cat_ids[c], "bbox": [x0, y0, x1 - x0, y1 - y0],
                         "area": (x1 - x0) * (y1 - y0),
                         "iscrowd": int(bool(crowd_every) and j % crowd_every == 0)})
    # Written in reverse id order: classes follow ids, not file order.
    cats = [{"id": i, "name": n} for i, n in reversed(list(zip(cat_ids, names)))]
    return {"images": images, "annotations": objs, "categories": cats}


def _coco_release(tmp_path, root, splits):
    """A COCO-release layout: annotations/instances_S.json + S/ (symlinked)."""
    (tmp_path / "annotations").mkdir(parents=True)
    for split, (anns, names) in splits.items():
        (tmp_path / split).symlink_to(root / "JPEGImages")
        (tmp_path / "annotations" / f"instances_{split}.json").write_text(
            json.dumps(_coco_dict(anns, names)))
    return tmp_path


def test_coco_json_of_bccd_equals_the_voc_reader(tmp_path):
    root, anns, names = _bccd(n=40)
    (tmp_path / "images").symlink_to(root / "JPEGImages")
    path = tmp_path / "bccd.json"
    path.write_text(json.dumps(_coco_dict(anns, names, crowd_every=5)))
    coco, coco_names, report = read_coco(str(path), str(tmp_path / "images"))
    assert coco_names == names and report.images == 40
    assert report.boxes == sum(len(a.boxes) for a in anns) and report.dropped_boxes == 0
    for a, c in zip(anns, coco):
        assert (c.height, c.width) == (a.height, a.width)
        assert os.path.samefile(c.path, a.path)
        np.testing.assert_allclose(c.boxes, a.boxes, atol=1e-4)
        assert c.classes.tolist() == a.classes.tolist()
        assert c.difficult.tolist() == [j % 5 == 0 for j in range(len(a.boxes))]
    # Through the spec, with the COCO release layout and default splits.
    _, test, _ = _bccd("test", n=6)
    _, train, _ = _bccd("trainval", n=10)
    base = _coco_release(tmp_path / "coco", root, {"train2017": (train, names),
                                                   "val2017": (test, names)})
    src = open_detection_source(f"coco:{base}")
    assert src.class_names == names
    tr, ev = src.split("train"), src.split("eval")
    assert (tr.name, len(tr.annotations), ev.name, len(ev.annotations)) == (
        "train2017", 10, "val2017", 6)
    only = open_detection_source(f"coco:{base}:val2017").split("train")
    assert only.name == "val2017"
    x, y = next(iter(make_detection_dataset(ev.annotations, DetectionPreprocessing(64, 96),
                                            training=False, batch_size=2)))
    # The aspect-ratio grouped canvas (the default): 64 x 85 rounded up to 16.
    assert x["images"].shape == (2, 64, 96, 3)
    np.testing.assert_allclose(y["boxes"].numpy()[0, :len(test[0].boxes)],
                               test[0].boxes * np.array([64 / 480, 85 / 640] * 2), rtol=1e-4)


def _write(tmp_path, data, name="a.json"):
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(p)


def test_coco_bad_annotations(tmp_path, caplog):
    from PIL import Image

    Image.new("RGB", (50, 40)).save(tmp_path / "x.jpg")
    good = {"images": [{"id": 1, "file_name": "x.jpg", "height": 40, "width": 50},
                       {"id": 2, "file_name": "x.jpg", "height": 40, "width": 50}],
            "categories": [{"id": 3, "name": "cell"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 5, 0, 8]},  # 0 area
                {"id": 2, "image_id": 1, "category_id": 3, "bbox": [40, 30, 20, 20]},  # clip
                {"id": 3, "image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4]}]}
    with caplog.at_level(logging.WARNING, logger="resnet_tf.data"):
        anns, names, report = read_coco(_write(tmp_path, good), str(tmp_path))
    assert names == ["cell"] and len(anns) == 2  # image 2 has no boxes: allowed
    np.testing.assert_allclose(anns[0].boxes, [[30, 40, 40, 50], [2, 1, 6, 4]])
    assert (report.dropped_boxes, report.clipped_boxes, report.images_without_boxes) == (
        1, 1, 1)
    assert "a.json" in caplog.text and "zero-area" in caplog.text

    def bad(change, match):
        data = json.loads(json.dumps(good))
        change(data)
        with pytest.raises(ValueError, match=match):
            read_coco(_write(tmp_path, data, "bad.json"), str(tmp_path))


    def skipped(change, match, reason):  # image 1 (and its boxes) skipped, image 2 kept
        data = json.loads(json.dumps(good))
        change(data)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="resnet_tf.data"):
            anns, _, report = read_coco(_write(tmp_path, data, "skip.json"), str(tmp_path))
        assert len(anns) == 1 and report.skipped_images == 1
        assert report.by_reason == {reason: 1}
        assert "skip.json: skipped: " in caplog.text and match in caplog.text

    skipped(lambda d: d["annotations"][0].update(category_id=9), "unknown category_id 9",
            "unknown_class")
    skipped(lambda d: d["images"][0].update(file_name="../x.jpg"), "points outside",
            "path_outside_root")
    skipped(lambda d: d["images"][0].update(file_name="missing.jpg"), "does not exist",
            "missing_image")
    bad(lambda d: d["annotations"][0].update(image_id=77), "not in 'images'")
    bad(lambda d: d["annotations"][0].pop("bbox"), "missing key 'bbox'")
    bad(lambda d: d["annotations"][0].update(bbox=[1, 2]), "x, y, width, height")
    with pytest.raises(ValueError, match="bad.json: malformed COCO JSON"):
        read_coco(_write(tmp_path, "{not json", "bad.json"), str(tmp_path))
    with pytest.raises(ValueError, match="unknown class name 'cell'"):
        read_coco(_write(tmp_path, good), str(tmp_path), class_names=["rbc"])
    (tmp_path / "annotations").mkdir()
    with pytest.raises(ValueError, match="no instances_train.*json for the train split"):
        open_detection_source(f"coco:{tmp_path}")
    _write(tmp_path / "annotations", good, "instances_val2017.json")
    (tmp_path / "val2017").mkdir()
    (tmp_path / "val2017" / "x.jpg").symlink_to(tmp_path / "x.jpg")
    assert len(open_detection_source(f"coco:{tmp_path}").split("eval").annotations) == 2
    with pytest.raises(ValueError, match="no instances_train"):
        open_detection_source(f"coco:{tmp_path}").split("train")


# --- TFDS ------------------------------------------------------------------------


def _tfds_examples(builder, anns, label_names):
    """Real BCCD images and boxes encoded through the builder's own TFDS
    features (Image, BBoxFeature, Sequence), as its prepared files hold them."""
    import tensorflow_datasets as tfds

    features = builder.info.features
    objects = features["objects"]
    out = []
    for i, a in enumerate(anns):
        n = len(a.boxes)
        # The real voc builder stores the XML's 1-based xmin / width as written.
        one_based = np.array([1, 1, 0, 0], np.float32) if builder.name == "voc" else 0
        rel = (a.boxes + one_based) / np.array([a.height, a.width, a.height, a.width],
                                               np.float32)
        obj = {"bbox": [tfds.features.BBox(*np.clip(b, 0, 1)) for b in rel],
               "label": [label_names[c] for c in a.classes]}
        for key, feat in objects.items():
            if key in obj:
                continue
            if key in ("is_difficult", "is_crowd"):
                obj[key] = [j % 4 == 0 for j in range(n)]
            elif key == "area":
                obj[key] = [int(v) for v in (a.boxes[:, 2] - a.boxes[:, 0]) *
                            (a.boxes[:, 3] - a.boxes[:, 1])]
            elif key == "pose":
                obj[key] = ["frontal"] * n
            else:
                obj[key] = np.zeros(n, feat.np_dtype) if hasattr(feat, "np_dtype") else \
                    [0] * n
        with open(a.path, "rb") as f:  # mock_data fakes tf.io.gfile, not open()
            ex = {"image": io.BytesIO(f.read()), "objects": obj}
        for key in features.keys():
            if key == "image/filename":
                ex[key] = os.path.basename(a.path)
            elif key == "image/id":
                ex[key] = i
            elif key in ("labels", "labels_no_difficult"):
                ex[key] = sorted({label_names[c] for c in a.classes})
        out.append(features.encode_example(ex))
    return out


def _mock_from(anns, label_names):
    import tensorflow_datasets as tfds

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        examples = _tfds_examples(self, anns, label_names)
        specs = self.info.features.get_serialized_info()
        ds = tf.data.Dataset.from_generator(
            lambda: iter(examples),
            output_signature=tf.nest.map_structure(
                lambda t: tf.TensorSpec(t.shape, t.dtype), specs))
        ds = ds.map(lambda ex: self.info.features.decode_example(ex, decoders=decoders))
        if read_config and read_config.add_tfds_id:
            ids = tf.data.Dataset.range(len(examples)).map(
                lambda i: tf.strings.join([f"{self.name}-{split}.tfrecord__",
                                           tf.strings.as_string(i)]))
            ds = tf.data.Dataset.zip(ds, ids).map(lambda e, i: {"tfds_id": i, **e})
        return ds

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


@pytest.mark.parametrize("name", ["voc/2007", "coco/2017"])
def test_tfds_detection_source_reads_what_the_features_encode(name):
    _, anns, _ = _bccd("test", n=5)
    import tensorflow_datasets as tfds

    label_names = tfds.builder(name).info.features["objects"]["label"].names
    with _mock_from(anns, label_names):
        src = open_detection_source(f"tfds:{name}")
        assert src.class_names == label_names
        split = src.split("eval")
        assert split.name == ("test" if name.startswith("voc") else "validation")
        assert len(split.annotations) == 5 and split.report.dropped_boxes == 0
        for a, t in zip(anns, split.annotations):
            assert (t.height, t.width) == (480, 640) and t.path.startswith(f"tfds:{name}")
            # TFDS stores relative float32 boxes: a fraction of a pixel.
            np.testing.assert_allclose(t.boxes, a.boxes, atol=0.02)
            assert t.classes.tolist() == a.classes.tolist()
            assert t.difficult.tolist() == [j % 4 == 0 for j in range(len(a.boxes))]
        ds = make_detection_dataset(split.annotations, DetectionPreprocessing(64, 96),
                                    training=True, batch_size=2,
                                    image_bytes=split.image_bytes())
        x, y = next(iter(ds))
        assert x["images"].shape == (2, 64, 96, 3)  # grouped canvas: 64 x 85, to 16
        assert float(tf.reduce_max(tf.abs(x["images"]))) > 10  # a real decoded photo
        assert float(tf.reduce_max(y["boxes"])) <= 96


def test_tfds_train_detector_end_to_end(tmp_path):
    from detection.evaluate import evaluate_detector
    from detection.train import train_detector

    _, anns, _ = _bccd("trainval", n=4)
    import tensorflow_datasets as tfds

    labels = tfds.builder("voc/2007").info.features["objects"]["label"].names
    tiny = dict(anchor_scales=(16, 32), roi_batch=8, rpn_batch=16, pooled_size=4,
                proposals=dict(pre_nms_train=100, post_nms_train=20, pre_nms_test=100,
                               post_nms_test=10))
    with _mock_from(anns, labels):
        r = train_detector("tfds:voc/2007", str(tmp_path / "d"), depth=18, iterations=2,
                           batch_size=2, shorter_side=64, max_side=96, model_kwargs=tiny,
                           verbose=0)
        assert r["results"]["iterations"] == 2 and np.isfinite(r["results"]["final_loss"])
        ev = evaluate_detector(str(tmp_path / "d"), "tfds:voc/2007")
    assert ev["images"] == 4 and 0 <= ev["voc_map50"] <= 1


def test_tfds_errors(tmp_path):
    with pytest.raises(ValueError, match="not a detection dataset"):
        open_detection_source("tfds:mnist")
    with pytest.raises(ValueError, match="is not prepared in .*Downloading is off"):
        open_detection_source("tfds:voc/2007", data_dir=str(tmp_path)).split("train")
    with pytest.raises(ValueError, match="Unknown detection data spec"):
        open_detection_source("kitti:/x")

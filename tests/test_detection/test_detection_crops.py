"""Object crops of detection sources as class folders
(``detection.data.crops.write_object_crops``), on the real BCCD set read in
place, ILSVRC images, and files that can't be cropped."""

import json
import logging
import os
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from conftest import shared_data
from detection.data.crops import MARKER, write_object_crops


def _xml_objects(root, split):
    """``[(image id, class, xmin, ymin, xmax, ymax)]`` of a BCCD split, read
    straight from the XML (not through the reader under test)."""
    ids = (root / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
    out = []
    for i in ids:
        for obj in ET.parse(root / "Annotations" / f"{i}.xml").getroot().iter("object"):
            box = obj.find("bndbox")
            out.append((i, obj.findtext("name").strip(),
                        *(float(box.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))))
    return out


def _files(folder):
    return {c: sorted(os.listdir(folder / c)) for c in sorted(os.listdir(folder))}


def test_bccd_crops_are_every_box_but_the_two_counted_degenerate_ones(tmp_path):
    root = shared_data("bccd/BCCD")
    out = tmp_path / "crops"
    r = write_object_crops(f"voc:{root}", out, size=24, verbose=False,
                           splits={"train": "train", "test": "eval"})
    assert r.class_names == ["Platelets", "RBC", "WBC"]
    degenerate = []
    for folder, split in (("train", "trainval"), ("test", "test")):
        objects = _xml_objects(root, split)
        bad = [o for o in objects if o[4] <= o[2] or o[5] <= o[3]]
        degenerate += [o[0] for o in bad]
        for c in r.class_names:
            expected = sum(o[1] == c for o in objects) - sum(o[1] == c for o in bad)
            assert r.counts[folder][c] == r.boxes[folder][c] == expected, (folder, c)
            assert r.not_selected[folder][c] == 0
        # What is on disk is what was counted, one folder per class.
        files = _files(out / folder)
        assert {c: len(f) for c, f in files.items()} == r.counts[folder]
    # BCCD's known quirk (data README): two zero-area boxes, both in trainval.
    assert sorted(degenerate) == ["BloodImage_00338", "BloodImage_00343"]
    assert r.total == 4888 - 2
    assert r.skipped_by_reason == {"degenerate_box": 2} and r.skips.total == 0
    dropped = r.annotation_reports["train"].dropped
    assert sorted(os.path.basename(w) for w, _, _ in dropped) == [
        "BloodImage_00338.xml", "BloodImage_00343.xml"]
    assert "train annotations 2 (2 degenerate_box)" in r.summary()
    some = out / "train" / "WBC" / sorted(os.listdir(out / "train" / "WBC"))[0]
    with Image.open(some) as im:
        assert im.size == (24, 24) and im.mode == "RGB" and im.format == "JPEG"
    marker = json.loads((out / MARKER).read_text())
    assert marker["complete"] and marker["counts"] == r.counts
    assert marker["skipped_by_reason"] == {"degenerate_box": 2}


def test_native_size_crop_is_the_boxed_pixels(tmp_path):
    root = shared_data("bccd/BCCD")
    r = write_object_crops(f"voc:{root}:test", tmp_path / "c", size=None, verbose=False,
                           splits={"test": "eval"})
    image_id = (root / "ImageSets" / "Main" / "test.txt").read_text().split()[0]
    objects = [o for o in _xml_objects(root, "test") if o[0] == image_id]
    photo = np.asarray(Image.open(root / "JPEGImages" / f"{image_id}.jpg").convert("RGB"),
                       np.float32)
    for k, (_, cls, x0, y0, x1, y1) in enumerate(objects):
        x0, y0 = max(x0, 1), max(y0, 1)  # VOC is 1-based; boxes past the edge clip
        x1, y1 = min(x1, photo.shape[1]), min(y1, photo.shape[0])
        with Image.open(tmp_path / "c" / "test" / cls / f"{image_id}_{k}.jpg") as im:
            crop = np.asarray(im, np.float32)
        # VOC's inclusive pixels: xmin..xmax is xmax - xmin + 1 columns.
        assert crop.shape == (y1 - y0 + 1, x1 - x0 + 1, 3), k
        region = photo[int(y0) - 1:int(y1), int(x0) - 1:int(x1)]
        assert np.abs(crop - region).mean() < 4, k  # JPEG re-encoding only
    assert sum(r.counts["test"].values()) == len(_xml_objects(root, "test"))


def test_max_per_class_is_a_seeded_sample_and_a_rerun_replaces_the_folder(tmp_path):
    root = shared_data("bccd/BCCD")
    out = tmp_path / "c"
    kw = dict(size=16, splits={"train": "train"}, verbose=False)
    a = write_object_crops(f"voc:{root}", out, max_per_class=5, seed=3, **kw)
    first = _files(out / "train")
    assert a.counts["train"] == {"Platelets": 5, "RBC": 5, "WBC": 5}
    assert all(a.not_selected["train"][c] == a.boxes["train"][c] - 5 for c in a.class_names)
    # The same seed into the same folder: the same crops, and nothing stale.
    write_object_crops(f"voc:{root}", out, max_per_class=5, seed=3, **kw)
    assert _files(out / "train") == first
    b = write_object_crops(f"voc:{root}", out, max_per_class=2, seed=4, **kw)
    assert {c: len(f) for c, f in _files(out / "train").items()} == b.counts["train"] == {
        "Platelets": 2, "RBC": 2, "WBC": 2}
    # folder:OUT reads it as a classification set with the source's classes.
    from resnet_tf.data.sources import open_source

    src = open_source(f"folder:{out}")
    assert src.class_names == b.class_names and src.split("train").num_examples == 6


def test_errors_name_the_problem(tmp_path):
    root = shared_data("bccd/BCCD")
    with pytest.raises(ValueError, match="Unknown detection data spec"):
        write_object_crops("pascal:nowhere", tmp_path / "a")
    with pytest.raises(ValueError, match="not a folder"):
        write_object_crops(f"voc:{tmp_path / 'none'}", tmp_path / "a")
    with pytest.raises(ValueError, match="data must be a detection data spec"):
        write_object_crops(42, tmp_path / "a")
    with pytest.raises(ValueError, match="use 'train' or 'eval'"):
        write_object_crops(f"voc:{root}", tmp_path / "a", splits={"train": "test"})
    with pytest.raises(ValueError, match="size must be"):
        write_object_crops(f"voc:{root}", tmp_path / "a", size=0)
    with pytest.raises(ValueError, match="max_per_class"):
        write_object_crops(f"voc:{root}", tmp_path / "a", max_per_class=0)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty and was not written"):
        write_object_crops(f"voc:{root}", mine)
    assert os.listdir(mine) == ["notes.txt"]
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        write_object_crops(f"voc:{root}", tmp_path / "file")
    # A folder it wrote, then something else added: refused, not deleted.
    ours = tmp_path / "ours"
    write_object_crops("synthetic", ours, size=8, synthetic_train=2, synthetic_eval=2,
                       verbose=False)
    (ours / "extra").mkdir()
    with pytest.raises(ValueError, match="did not write"):
        write_object_crops("synthetic", ours, synthetic_train=2, synthetic_eval=2)
    assert (ours / "train").is_dir() and (ours / "extra").is_dir()
    # A VOC folder without ImageSets: both splits are every image.
    flat = tmp_path / "flat"
    (flat / "Annotations").mkdir(parents=True)
    shutil.copy(root / "Annotations" / "BloodImage_00000.xml", flat / "Annotations")
    (flat / "JPEGImages").mkdir()
    shutil.copy(root / "JPEGImages" / "BloodImage_00000.jpg", flat / "JPEGImages")
    with pytest.raises(ValueError, match="in both the 'train' and the 'val' splits"):
        write_object_crops(f"voc:{flat}", tmp_path / "b")
    r = write_object_crops(f"voc:{flat}", tmp_path / "b", splits={"all": "train"},
                           verbose=False)
    assert r.total == len(_xml_objects_of(flat / "Annotations" / "BloodImage_00000.xml"))


def _xml_objects_of(path):
    return ET.parse(path).getroot().findall("object")


def test_boxes_that_cannot_be_cropped_are_warned_about_and_counted(tmp_path, caplog):
    root = shared_data("bccd/BCCD")
    voc = tmp_path / "voc"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "JPEGImages").mkdir()
    for name in ("BloodImage_00000", "BloodImage_00001", "BloodImage_00002"):
        shutil.copy(root / "Annotations" / f"{name}.xml", voc / "Annotations")
    shutil.copy(root / "JPEGImages" / "BloodImage_00000.jpg", voc / "JPEGImages")
    # The XML's <size> says 640x480: the reader can't read this header, so the
    # decoder finds it out; an image of another size is skipped by the reader
    # (size_mismatch) before any of its boxes could land off the pixels.
    (voc / "JPEGImages" / "BloodImage_00001.jpg").write_bytes(b"not a picture at all")
    Image.new("RGB", (64, 48), (200, 100, 100)).save(voc / "JPEGImages" /
                                                     "BloodImage_00002.jpg")
    n = {name: len(_xml_objects_of(voc / "Annotations" / f"{name}.xml"))
         for name in ("BloodImage_00000", "BloodImage_00001", "BloodImage_00002")}
    boxes02 = [[float(o.find("bndbox").findtext(t)) for t in ("xmin", "ymin")]
               for o in _xml_objects_of(voc / "Annotations" / "BloodImage_00002.xml")]
    assert boxes02
    with caplog.at_level(logging.WARNING, logger="resnet_tf.data"):
        r = write_object_crops(f"voc:{voc}", tmp_path / "c", size=16,
                               splits={"all": "train"}, verbose=False)
    assert r.skips.by_reason == {"not_an_image": n["BloodImage_00001"]}
    assert r.annotation_reports["all"].by_reason == {"size_mismatch": 1}
    assert r.total == n["BloodImage_00000"]
    assert "BloodImage_00001.jpg: box 0" in caplog.text and "not cropped" in caplog.text
    assert "BloodImage_00002.xml: skipped: states the image size 640x480" in caplog.text
    assert "crops " + str(r.skips.total) in r.summary()


def test_in_memory_and_tfds_sources(tmp_path):
    r = write_object_crops("synthetic", tmp_path / "s", size=12, synthetic_train=6,
                           synthetic_eval=3, verbose=False)
    assert r.counts["train"] == r.boxes["train"] and r.counts["val"] == r.boxes["val"]
    assert r.total == sum(sum(b.values()) for b in r.boxes.values()) > 6
    assert all(f.startswith("synthetic_") for fs in _files(tmp_path / "s" / "train")
               .values() for f in fs)

    import tensorflow_datasets as tfds
    from test_detection_sources import _bccd, _mock_from

    _, anns, _ = _bccd("test", n=3)
    labels = tfds.builder("voc/2007").info.features["objects"]["label"].names
    with _mock_from(anns, labels):
        t = write_object_crops("tfds:voc/2007", tmp_path / "t", size=12,
                               splits={"test": "eval"}, verbose=False)
    assert t.class_names == labels and t.skips.total == 0
    assert t.total == sum(len(a.boxes) for a in anns)
    assert len(os.listdir(tmp_path / "t" / "test")) == len(labels)


def test_ilsvrc_source_with_a_held_out_part(tmp_path):
    from localization.data.sources import open_localization_source

    root = shared_data("imagenet-val-loc")
    source = open_localization_source(f"ilsvrc-loc:{root}", val_fraction=0.25)
    train, held = source.split("train"), source.split("eval")
    assert len(train.annotations) == 75 and len(held.annotations) == 25
    assert not {a.path for a in train.annotations} & {a.path for a in held.annotations}
    r = write_object_crops(source, tmp_path / "c", size=16, splits={"train": "train"},
                           verbose=False)
    # Every one of the 1,000 classes has a folder: a classifier trained on it
    # has the localizer's class list.
    assert len(os.listdir(tmp_path / "c" / "train")) == len(r.class_names) == 1000
    assert r.total == sum(len(a.boxes) for a in train.annotations) and r.skips.total == 0
    image = os.path.splitext(os.path.basename(train.annotations[0].path))[0]
    wnid = r.class_names[int(train.annotations[0].classes[0])]
    assert os.path.isfile(tmp_path / "c" / "train" / wnid / f"{image}_0.jpg")
    # Without the hold-out, train and eval are the same 100 images.
    with pytest.raises(ValueError, match="in both"):
        write_object_crops(open_localization_source(f"ilsvrc-loc:{root}"),
                           tmp_path / "d")
    with pytest.raises(ValueError, match="apply to a data spec"):
        write_object_crops(source, tmp_path / "d", synthetic_train=3)

"""Bad data, nothing lost: one fault dataset, every loader over it.

The dataset (built in ``tmp_path``) puts real images from the shared data
(linked, read in place) beside files that are broken in each way the
README's "Bad data" table lists, and annotation files with each kind of
fault. Each loader is run over it, through the tf.data decode where images
are decoded, and the tests assert the exact number skipped per reason and
that every good sample comes out.
"""

import io
import json
import logging
import os
import struct
import zlib

import numpy as np
import PIL.Image
import pytest

from conftest import shared_data
from detection.data.coco import read_coco
from detection.data.pipeline import DetectionPreprocessing, make_detection_dataset
from detection.data.voc import read_voc
from localization.data.pipeline import test_examples as loc_examples
from localization.data.sources import open_localization_source
from resnet_tf.data import Preprocessing, make_dataset, open_source
from detection.data import reasons as R
from resnet_tf.data.decode import MAX_PIXELS, SkipCounter
from resnet_tf.data.pipeline import decoded_examples

BCCD_CLASSES = ["Platelets", "RBC", "WBC"]

# Image files the decoder must skip, and why; the other generated files
# (CMYK JPEG, 16-bit PNG, animated GIF) must decode.
BAD_IMAGES = {"truncated.jpg": R.TRUNCATED_JPEG, "empty.jpg": R.EMPTY,
              "text.jpg": R.NOT_AN_IMAGE, "huge.png": R.TOO_LARGE,
              "huge.jpg": R.TOO_LARGE}
ODD_GOOD_IMAGES = ("cmyk.jpg", "rgb16.png", "animated.gif")


def counts(names):
    out = {}
    for n in names:
        out[BAD_IMAGES[n]] = out.get(BAD_IMAGES[n], 0) + 1
    return out


# --- the broken and odd image files --------------------------------------------------


def _encode(image, fmt, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _png(width, height, bit_depth, rows):
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _jpeg_with_size(data, height, width):
    """``data`` (a JPEG) with its SOF0 frame header claiming another size."""
    data = bytearray(data)
    pos = 2
    while data[pos + 1] != 0xC0:
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
    data[pos + 5:pos + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def image_files(photo_path):
    """``({file name: bytes}, rgb)``: the odd-but-good and the bad files, made
    from one real photo, shrunk to ``rgb`` (uint8 [H, W, 3]) to keep them small."""
    photo = PIL.Image.open(photo_path).convert("RGB")
    photo.thumbnail((64, 64))
    rgb = np.asarray(photo)
    real = open(photo_path, "rb").read()
    frames = [PIL.Image.fromarray(np.roll(rgb, 9 * i, axis=1)).quantize(64) for i in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=50)
    rgb16 = rgb.astype(np.uint16) * 257  # high byte == low byte == rgb
    rows = b"".join(b"\x00" + r.astype(">u2").tobytes() for r in rgb16)
    return rgb, {
        "cmyk.jpg": _encode(photo.convert("CMYK"), "JPEG", quality=95),
        "rgb16.png": _png(rgb.shape[1], rgb.shape[0], 16, rows),
        "animated.gif": gif.getvalue(),
        "truncated.jpg": real[:len(real) // 2],
        "empty.jpg": b"",
        "text.jpg": b"this is a text file, not a JPEG\n" * 4,
        # Complete files whose headers claim 10^10 and 4.2 * 10^9 pixels.
        "huge.png": _png(100_000, 100_000, 8, b"\x00" * 64),
        "huge.jpg": _jpeg_with_size(_encode(photo, "JPEG"), 65_000, 65_000),
    }


@pytest.fixture(scope="module")
def photos():
    hym = shared_data("hymenoptera/hymenoptera_data") / "train"
    return {"ants": sorted((hym / "ants").glob("*.jpg"))[:2] + [hym / "ants/imageNotFound.gif"],
            "bees": sorted((hym / "bees").glob("*.jpg"))[:2]}


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def link(path, target):
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)
    return path


# --- classification: image folders ---------------------------------------------------


@pytest.fixture
def folder_set(tmp_path, photos):
    """folder:ROOT with 2 classes: 9 good files, 5 bad ones."""
    root = tmp_path / "cls"
    good = []
    for cls, paths in photos.items():
        good += [link(root / cls / p.name, p) for p in paths]
    # A file name that is not UTF-8 (written on another system) is a good file.
    odd_name = os.fsencode(root / "bees") + b"/caf\xe9.jpg"
    os.symlink(photos["bees"][0], odd_name)
    good.append(odd_name)
    rgb, files = image_files(photos["bees"][0])
    good += [write(root / "ants" / n, files[n]) for n in ODD_GOOD_IMAGES]
    bad = [write(root / "bees" / n, files[n]) for n in BAD_IMAGES]
    return root, {os.fsencode(p) for p in good}, bad, (rgb, files)


def test_folder_source_skips_exactly_the_bad_files_and_keeps_every_good_one(folder_set,
                                                                             caplog):
    root, good, bad, (rgb, files) = folder_set
    split = open_source(f"folder:{root}").split("train")
    assert split.num_examples == 14
    counter = SkipCounter()
    with caplog.at_level(logging.WARNING, logger="resnet_tf.data"):
        out = {e["path"]: e["image"] for e in decoded_examples(split, counter)
               .as_numpy_iterator()}
    assert set(out) == good
    assert counter.by_reason == counts(BAD_IMAGES) == {
        R.TRUNCATED_JPEG: 1, R.EMPTY: 1, R.NOT_AN_IMAGE: 1, R.TOO_LARGE: 2}
    for path in bad:
        assert f"Skipping {path}: " in caplog.text
    assert f"more than {MAX_PIXELS} pixels" in caplog.text
    # The odd files decode to the right pixels.
    ants = os.fsencode(root / "ants")
    cmyk = np.asarray(PIL.Image.open(io.BytesIO(files["cmyk.jpg"])).convert("RGB"))
    assert np.abs(out[ants + b"/cmyk.jpg"].astype(int) - cmyk).mean() < 1.5
    gif = np.asarray(PIL.Image.open(io.BytesIO(files["animated.gif"])).convert("RGB"))
    np.testing.assert_array_equal(out[ants + b"/animated.gif"], gif)  # the first frame
    np.testing.assert_array_equal(out[ants + b"/rgb16.png"], rgb)  # v >> 8


@pytest.mark.parametrize("style", ["cifar", "imagenet"])
def test_training_and_eval_pipelines_count_the_same_skips(folder_set, style, caplog):
    """Both preprocessing styles' training and evaluation views count the
    same skips (every file is decoded whole by the one rule first)."""
    root, good, _, _ = folder_set
    split = open_source(f"folder:{root}").split("train")
    prep = (Preprocessing.for_style("cifar") if style == "cifar" else
            Preprocessing.for_style("imagenet", crop_size=32, scale_range=(32, 48),
                                    eval_resize=36))
    for training in (True, False):
        counter = SkipCounter()
        with caplog.at_level(logging.ERROR, logger="resnet_tf.data"):
            ds = make_dataset(split, prep, training=training, batch_size=1, cache=False,
                              counter=counter)
            n = sum(1 for _ in ds)
        assert n == len(good), (style, training)
        assert counter.by_reason == counts(BAD_IMAGES)


def test_classifier_trains_one_epoch_on_the_faulty_folder_and_reports_skips(
        folder_set, tmp_path, caplog, capsys):
    from resnet_tf.train import train_classifier

    root, _, bad, _ = folder_set
    with caplog.at_level(logging.WARNING, logger="resnet_tf.data"):
        r = train_classifier(f"folder:{root}", str(tmp_path / "run"), model="resnet8",
                             recipe="cifar", epochs=1, batch_size=4, verbose=0)
    assert len(r.history["loss"]) == 1 and np.isfinite(r.history["loss"][0])
    # 14 files -> 3 steps of 4: the stream of 9 good images repeats, and the
    # 5 bad files are met at least once (in the mean-image pass as well).
    assert r.results["skipped_images"]["train"] >= 5
    printed = capsys.readouterr().out
    assert "Mean image: skipped 5 unreadable images" in printed
    assert "skipped unreadable images" in printed
    for path in bad:
        assert f"Skipping {path}" in caplog.text


# --- detection: VOC and COCO ---------------------------------------------------------


def _voc_xml(filename, size, objects, extra=b""):
    objs = b"".join(
        b"<object><name>%s</name><difficult>0</difficult><bndbox><xmin>%d</xmin>"
        b"<ymin>%d</ymin><xmax>%d</xmax><ymax>%d</ymax></bndbox></object>"
        % ((name.encode(),) + tuple(box)) for name, box in objects)
    return (b"<annotation><filename>%s</filename><size><width>%d</width><height>%d"
            b"</height><depth>3</depth></size>%s%s</annotation>"
            % (filename.encode(), size[0], size[1], extra, objs))


@pytest.fixture
def detection_set(tmp_path, photos):
    """A VOC folder and a COCO JSON over the same images: 3 real BCCD images,
    the 3 odd-but-good and 5 bad image files, and faulty annotations."""
    bccd = shared_data("bccd/BCCD")
    root = tmp_path / "voc"
    images, notes = root / "JPEGImages", root / "Annotations"
    real = [f"BloodImage_0000{i}" for i in range(3)]
    for name in real:
        link(images / f"{name}.jpg", bccd / "JPEGImages" / f"{name}.jpg")
        link(notes / f"{name}.xml", bccd / "Annotations" / f"{name}.xml")
    rgb, files = image_files(photos["bees"][0])
    for n, data in files.items():
        write(images / n, data)
        # The huge files' XML says the small size: the decoder must catch them
        # from the file's own header. The truncated photo's XML gives its real
        # size (a stated size the header contradicts is skipped as size_mismatch).
        size = (PIL.Image.open(photos["bees"][0]).size if n == "truncated.jpg"
                else (rgb.shape[1], rgb.shape[0]))
        write(notes / f"img_{n.replace('.', '_')}.xml",
              _voc_xml(n, size, [("RBC", (2, 2, 30, 30))]))
    write(tmp_path / "outside.jpg", _encode(PIL.Image.new("RGB", (8, 8)), "JPEG"))
    good_box = ("WBC", (10, 10, 200, 200))
    faults = {
        "malformed.xml": (b"<annotation><filename>BloodImage_00000.jpg</filename><size>",
                          R.MALFORMED),
        "unknown_class.xml": (_voc_xml("BloodImage_00001.jpg", (640, 480),
                                       [good_box, ("Neutrophil", (5, 5, 50, 50))]),
                              R.UNKNOWN_CLASS),
        "escape.xml": (_voc_xml("../../outside.jpg", (8, 8), [good_box]), R.OUTSIDE_ROOT),
        "not_utf8.xml": (_voc_xml("BloodImage_00002.jpg", (640, 480), [good_box],
                                  extra=b"<pose>caf\xe9</pose>"), R.NOT_UTF8),
        "missing.xml": (_voc_xml("BloodImage_09999.jpg", (640, 480), [good_box]),
                        R.MISSING_IMAGE),
        # Kept, each with its good box: one box entirely outside the 640x480
        # image, one with a negative width.
        "box_outside.xml": (_voc_xml("BloodImage_00000.jpg", (640, 480),
                                     [good_box, ("RBC", (700, 500, 800, 600))]), None),
        "negative_width.xml": (_voc_xml("BloodImage_00001.jpg", (640, 480),
                                        [good_box, ("RBC", (300, 10, 250, 60))]), None),
    }
    for name, (data, _) in faults.items():
        write(notes / name, data)
    return root, files


VOC_SKIPS = {R.MALFORMED: 1, R.UNKNOWN_CLASS: 1, R.OUTSIDE_ROOT: 1, R.NOT_UTF8: 1,
             R.MISSING_IMAGE: 1, R.BOX_OUTSIDE: 1, R.DEGENERATE_BOX: 1}
# 3 real + 2 kept with a box dropped + 8 generated image files.
ANNOTATED = 13


def _decode_detection(anns):
    counter = SkipCounter()
    prep = DetectionPreprocessing(shorter_side=32, max_side=48, max_boxes=8)
    ds = make_detection_dataset(anns, prep, training=False, batch_size=1, counter=counter)
    return sum(1 for _ in ds), counter


def test_voc_skips_bad_files_by_reason_and_decodes_every_good_image(detection_set,
                                                                   caplog):
    root, _ = detection_set
    with caplog.at_level(logging.WARNING, logger="resnet_tf.data"):
        anns, names, report = read_voc(str(root), class_names=BCCD_CLASSES)
    assert report.by_reason == VOC_SKIPS
    assert len(anns) == ANNOTATED and report.skipped_images == 5
    assert report.dropped_boxes == 2
    for name in ("malformed", "unknown_class", "escape", "not_utf8", "missing"):
        assert f"{root / 'Annotations' / name}.xml: skipped: " in caplog.text
    assert "box 1 dropped" in caplog.text and "lies outside" in caplog.text
    n, counter = _decode_detection(anns)
    assert n == ANNOTATED - len(BAD_IMAGES)
    assert counter.by_reason == counts(BAD_IMAGES)


def test_voc_with_no_usable_file_is_a_clear_error(tmp_path):
    write(tmp_path / "x.xml", b"<annotation><filename>")
    with pytest.raises(ValueError, match="no usable annotation file.*1 malformed_annotation"):
        read_voc(str(tmp_path))


def test_coco_skips_bad_images_by_reason_and_errors_on_a_bad_file(detection_set,
                                                                  tmp_path):
    root, files = detection_set
    coco = tmp_path / "coco"
    link(coco / "images", root / "JPEGImages")
    images, annotations = [], []

    def add(file_name, size, boxes, category=1):
        images.append({"id": len(images) + 1, "file_name": file_name,
                       "width": size[0], "height": size[1]})
        for b in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": len(images),
                                "category_id": category, "bbox": b, "iscrowd": 0})

    for i in range(3):
        add(f"BloodImage_0000{i}.jpg", (640, 480), [[10, 10, 100, 80]])
    def own_size(n):  # the size its header gives (size_mismatch otherwise)
        try:
            with PIL.Image.open(root / "JPEGImages" / n) as im:
                return im.size
        except (OSError, PIL.Image.DecompressionBombError):
            return (64, 48)  # unreadable: left to the decoder, whatever the size

    for n in files:
        add(n, own_size(n), [[2, 2, 20, 20]])
    add("BloodImage_00000.jpg", (640, 480), [[10, 10, 100, 80], [700, 500, 50, 50]])
    add("BloodImage_00001.jpg", (640, 480), [[10, 10, 100, 80], [300, 10, -50, 40]])
    add("../../outside.jpg", (8, 8), [[1, 1, 4, 4]])
    add("BloodImage_09999.jpg", (640, 480), [[10, 10, 100, 80]])
    add("BloodImage_00002.jpg", (640, 480), [[10, 10, 100, 80]], category=7)
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(BCCD_CLASSES)]}
    path = write(coco / "instances.json", json.dumps(data).encode())
    anns, _, report = read_coco(str(path), str(coco / "images"))
    assert report.by_reason == {R.OUTSIDE_ROOT: 1, R.MISSING_IMAGE: 1, R.UNKNOWN_CLASS: 1,
                                R.BOX_OUTSIDE: 1, R.DEGENERATE_BOX: 1}
    assert len(anns) == ANNOTATED and report.skipped_images == 3
    n, counter = _decode_detection(anns)
    assert n == ANNOTATED - len(BAD_IMAGES)
    assert counter.by_reason == counts(BAD_IMAGES)
    # A fault in the file as a whole is an error naming it.
    bad = write(coco / "bad.json", json.dumps(data).encode()[:-40])
    with pytest.raises(ValueError, match="bad.json: malformed COCO JSON"):
        read_coco(str(bad), str(coco / "images"))
    latin1 = json.dumps(data).replace("BloodImage_00002", "caf\u00e9").encode("latin-1")
    bad = write(coco / "latin1.json", latin1)
    with pytest.raises(ValueError, match="latin1.json: not UTF-8.*re-save it as UTF-8"):
        read_coco(str(bad), str(coco / "images"))
    with pytest.raises(ValueError, match="instances.json: unknown class name 'Platelets'"):
        read_coco(str(path), str(coco / "images"), class_names=["RBC", "WBC"])


# --- localization: ILSVRC LOC CSV ----------------------------------------------------


def test_ilsvrc_loc_skips_bad_rows_and_images_by_reason(tmp_path, photos, caplog):
    loc = shared_data("imagenet-val-loc")
    root = tmp_path / "loc"
    link(root / "LOC_synset_mapping.txt", loc / "LOC_synset_mapping.txt")
    rows = {r.split(",")[0]: r for r in
            (loc / "LOC_val_solution_subset.csv").read_text().splitlines()[1:]}
    ids = [f"ILSVRC2012_val_{i:08d}" for i in (1, 2, 3, 34, 5, 6, 7)]  # 34: grayscale
    for i in ids:
        link(root / "images" / f"{i}.JPEG", loc / "images" / f"{i}.JPEG")
    lines = [rows[i] for i in ids[:4]]
    boxes = {i: rows[i].split(",")[1] for i in ids}
    wnid = {i: boxes[i].split()[0] for i in ids}
    lines += [
        f"{ids[4]},{boxes[ids[4]]} {wnid[ids[4]]} 5000 5000 5100 5100",  # box outside
        f"{ids[5]},{boxes[ids[5]]} {wnid[ids[5]]} 300 10 250 60",  # negative width
        f"{ids[6]},n99999999 10 10 50 50",  # unknown class
        "ILSVRC2012_val_00000008,n01751748 1 1 20",  # malformed: 4 coordinates
        "../../outside,n01751748 1 1 5 5",  # escapes the image folder
    ]
    # The decoder sniffs content, not extensions: every file is an .JPEG here.
    _, files = image_files(photos["bees"][0])
    for k, (n, data) in enumerate(files.items()):
        write(root / "images" / f"bad_{k}.JPEG", data)
        lines.append(f"bad_{k},{wnid[ids[0]]} 1 1 20 20")
    write(tmp_path / "outside.JPEG", _encode(PIL.Image.new("RGB", (8, 8)), "JPEG"))
    data = ("ImageId,PredictionString\n" + "\n".join(lines) + "\n").encode()
    data += b"ILSVRC2012_val_00000009,n01751748 1 1 20 20 caf\xe9\n"  # not UTF-8
    write(root / "LOC_val_solution.csv", data)
    with caplog.at_level(logging.WARNING, logger="resnet_tf.data"):
        split = open_localization_source(f"ilsvrc-loc:{root}").split("eval")
    r = split.report
    # Headers are read at load time: the empty, text and huge files go there.
    assert r.by_reason == {R.BOX_OUTSIDE: 1, R.DEGENERATE_BOX: 1, R.UNKNOWN_CLASS: 1,
                           R.MALFORMED: 1, R.OUTSIDE_ROOT: 1, R.NOT_UTF8: 1, R.EMPTY: 1,
                           R.NOT_AN_IMAGE: 1, R.TOO_LARGE: 2}
    assert r.rows == len(lines) + 1 and r.skipped_rows == 8
    kept = 6 + len(ODD_GOOD_IMAGES) + 1  # + the truncated JPEG, whose header is fine
    assert len(split.annotations) == kept
    assert "skipped: the row is not valid UTF-8" in caplog.text
    counter = SkipCounter()
    n = sum(1 for _ in loc_examples(split.annotations, counter=counter))
    assert n == kept - 1 and counter.by_reason == {R.TRUNCATED_JPEG: 1}


def test_ilsvrc_xml_not_utf8_and_malformed_are_skipped_by_reason(tmp_path):
    xml_dir = tmp_path / "Annotations" / "CLS-LOC" / "val"
    write(tmp_path / "LOC_synset_mapping.txt", b"n01440764 tench\n")
    write(tmp_path / "Data" / "CLS-LOC" / "val" / "v0.JPEG",
          _encode(PIL.Image.new("RGB", (40, 30)), "JPEG"))
    obj = (b"<object><name>n01440764</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
           b"<xmax>20</xmax><ymax>20</ymax></bndbox></object>")
    write(xml_dir / "v0.xml", b"<annotation><filename>v0</filename>" + obj + b"</annotation>")
    write(xml_dir / "v1.xml", b"<annotation><filename>v\xe91</filename>" + obj
          + b"</annotation>")
    write(xml_dir / "v2.xml", b"<annotation><filename>v2</filename>")
    split = open_localization_source(f"ilsvrc-loc:{tmp_path}").split("eval")
    assert split.report.by_reason == {R.NOT_UTF8: 1, R.MALFORMED: 1}
    assert len(split.annotations) == 1


def test_tfds_detection_skips_bad_images_and_keeps_images_and_boxes_in_step(detection_set):
    """TFDS images are checked in the annotation pass; the image stream
    leaves out the same examples, so boxes stay with their images."""
    import tensorflow_datasets as tfds
    from test_detection_sources import _mock_from

    from detection.data.sources import open_detection_source
    from resnet_tf.data.decode import decode_image

    root, _ = detection_set
    anns, _, _ = read_voc(str(root), class_names=BCCD_CLASSES)
    label_names = tfds.builder("voc/2007").info.features["objects"]["label"].names
    with _mock_from(anns, label_names):
        split = open_detection_source("tfds:voc/2007").split("eval")
        assert split.report.by_reason == counts(BAD_IMAGES)
        assert len(split.annotations) == ANNOTATED - len(BAD_IMAGES)
        sizes = [tuple(decode_image(b, "")[0].shape[:2])
                 for b in split.image_bytes().as_numpy_iterator()]
    assert sizes == [(a.height, a.width) for a in split.annotations]
    good = [a for a in anns if os.path.basename(a.path) not in BAD_IMAGES]
    assert [(a.height, a.width) for a in good] == sizes

"""Fault kinds from a user's report: annotations in another frame than the
decoded pixels (EXIF orientation, stated sizes), file names resolved as
each format's tools do with empty splits as clear errors, and split folder
names in common use (``valid/``) with training-set numbers never passed off
as validation.

Each kind is tested beyond the user's case (``../shared/cases``): every
EXIF orientation against PIL's ``ImageOps.exif_transpose``, VOC, COCO and
ILSVRC alike, and the serving signature against ``predict``.
"""

import io
import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from conftest import shared_data, shared_case
from detection.data import annotations as A
from detection.data.coco import find_coco_json, read_coco
from detection.data.pipeline import DetectionPreprocessing, make_detection_dataset
from detection.data.sources import open_detection_source
from detection.data.voc import read_voc
from localization.data import ilsvrc
from resnet_tf.data import decode
from detection.data import reasons as R
from resnet_tf.data.pipeline import decoded_examples
from resnet_tf.data.sources import open_source

BACKGROUND = 200  # the cases' grey background



@pytest.fixture(scope="module")
def photo():
    """A real photo, small and not square: uint8 [24, 40, 3]."""
    path = shared_data("hymenoptera/hymenoptera_data") / "train" / "ants" / "0013035.jpg"
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((40, 24)))


def encode(array, fmt="JPEG", orientation=None, big_endian=False, quality=95):
    """``array`` as JPEG/PNG bytes with an EXIF Orientation tag (PIL writes it)."""
    im = Image.fromarray(array)
    buf = io.BytesIO()
    kwargs = {"quality": quality} if fmt == "JPEG" else {}
    if orientation is not None:
        exif = Image.Exif()
        if big_endian:
            exif.endian = ">"
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def pil_displayed(data):
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


@tf.function(input_signature=[tf.TensorSpec([], tf.string)])
def _decode(contents):
    """The decoder, traced once: (image, ok, EXIF orientation, display size)."""
    image, ok = decode.decode_image(contents, tf.constant("x"))
    fmt, _ = decode.check_image_bytes(contents)
    return image, ok, decode.exif_orientation(contents, fmt), decode.display_size(contents, fmt)


def tf_decode(data):
    image, ok, _, _ = _decode(tf.constant(data))
    assert bool(ok)
    return image.numpy()


def object_box(image, threshold=90):
    """(ymin, xmin, ymax, xmax) continuous pixels of everything that is not
    the grey background, and its mask."""
    mask = np.abs(image.astype(int) - BACKGROUND).sum(-1) > threshold
    ys, xs = np.nonzero(mask)
    return np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], np.float32), mask


def covered(box, mask):
    """The fraction of ``mask``'s pixels inside ``box`` (continuous pixels)."""
    y0, x0, y1, x1 = (int(round(float(v))) for v in box)
    inside = np.zeros_like(mask)
    inside[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    return (mask & inside).sum() / mask.sum()


# --- 1. EXIF orientation in every decode --------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_decode_turns_every_exif_orientation_like_pil(photo, fmt):
    for orientation in [None, *range(1, 9)]:
        data = encode(photo, fmt, orientation)
        expected = pil_displayed(data)
        got = tf_decode(data)
        assert got.shape == expected.shape, (fmt, orientation)
        # Same libjpeg (ISLOW) and libpng: identical pixels.
        np.testing.assert_array_equal(got, expected, err_msg=f"{fmt} {orientation}")
        _, _, found, size = _decode(tf.constant(data))
        assert int(found) == (orientation or 1)
        assert size.numpy().tolist() == list(expected.shape[:2])


def test_exif_variants_big_endian_after_other_segments_and_malformed(photo):
    # Big-endian ("MM") TIFF, as many cameras write it.
    data = encode(photo, "JPEG", 6, big_endian=True)
    assert data[data.index(b"Exif\0\0") + 6:][:2] == b"MM"
    np.testing.assert_array_equal(tf_decode(data), pil_displayed(data))
    assert tf_decode(data).shape == (40, 24, 3)
    # An XMP APP1 and a COM segment before the Exif APP1: still found.
    xmp = b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta/>"
    extra = (b"\xff\xe1" + (len(xmp) + 2).to_bytes(2, "big") + xmp
             + b"\xff\xfe\x00\x07hello")
    data = encode(photo, "JPEG", 8)
    moved = data[:2] + extra + data[2:]
    assert tf_decode(moved).shape == (40, 24, 3)
    np.testing.assert_array_equal(tf_decode(moved), pil_displayed(moved))
    # An Exif block cut short (IFD past its end) or with an out-of-range
    # value: decoded as stored, like PIL, never an error.
    data = encode(photo, "JPEG", 6)
    start = data.index(b"Exif\0\0") + 6
    broken = bytearray(data)
    broken[start + 4:start + 8] = (60000).to_bytes(4, "little")  # IFD offset far away
    assert tf_decode(bytes(broken)).shape == (24, 40, 3)
    with pytest.warns(UserWarning, match="Corrupt EXIF"):
        assert pil_displayed(bytes(broken)).shape == (24, 40, 3)
    assert tf_decode(encode(photo, "JPEG", 9)).shape == (24, 40, 3)
    # Header reads for annotations agree with the decoder.
    for o in range(1, 9):
        path_data = encode(photo, "PNG" if o % 2 else "JPEG", o)
        assert pil_displayed(path_data).shape[:2] == tf_decode(path_data).shape[:2]


def test_case_image_decodes_turned_in_every_path():
    case = shared_case("exif-rotated-voc")
    path = str(case / "images" / "phone.jpg")
    data = open(path, "rb").read()
    expected = pil_displayed(data)
    assert expected.shape == (96, 64, 3)
    image, error = decode.read_image_file(path)  # predict
    assert error is None
    np.testing.assert_array_equal(image.numpy(), expected)
    ds = tf.data.Dataset.from_tensors({"image_bytes": tf.constant(data),
                                       "path": tf.constant(path)})
    (element,) = list(decode.decode_and_filter(ds, decode.SkipCounter()))  # tf.data
    np.testing.assert_array_equal(element["image"].numpy(), expected)


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    """A width-8 ResNet-18 classifier directory for classes cat, dog:
    ImageNet evaluation view (shorter side 36, centre 32), a mean image, BN
    statistics calibrated so the outputs follow the input."""
    import keras

    import resnet_tf
    from resnet_tf import model_dir
    from resnet_tf.data.preprocessing import Preprocessing

    keras.utils.set_random_seed(0)
    model = resnet_tf.ResNet(18, width=8, classes=2, input_shape=(None, None, 3))
    rng = np.random.default_rng(0)
    x = rng.normal(0, 60, (8, 32, 32, 3)).astype("float32")
    for _ in range(12):
        model(x, training=True)
    prep = Preprocessing.for_style("imagenet", crop_size=32, eval_resize=36,
                                   scale_range=(36, 48))
    mean = rng.uniform(90, 140, (32, 32, 3)).astype("float32")
    directory = tmp_path_factory.mktemp("clf") / "clf"
    model_dir.save_classifier(str(directory), model, ["cat", "dog"], mean, prep)
    return str(directory)


def test_serving_equals_predict_on_the_turned_case_image(tiny_classifier, tmp_path):
    from resnet_tf import export
    from resnet_tf.evaluate import predict_files

    path = str(shared_case("exif-rotated-voc") / "images" / "phone.jpg")
    row = predict_files(tiny_classifier, [path], top=2)[0]
    predicted = np.zeros(2, np.float32)
    for p in row["predictions"]:
        predicted[p["class"]] = p["probability"]
    saved = tf.saved_model.load(export.export_classifier(tiny_classifier, str(tmp_path / "s")))
    served = saved.signatures["serving_default"](
        image_bytes=tf.constant([open(path, "rb").read()]))["probabilities"].numpy()[0]
    np.testing.assert_allclose(served, predicted, atol=2e-4)
    # The comparison can fail: the same pixels unturned give other numbers.
    with Image.open(path) as im:
        stored = np.asarray(im.convert("RGB"))
    unturned = saved.signatures["serve_image_tensor"](
        images=tf.constant(stored[None]))["probabilities"].numpy()[0]
    assert np.abs(unturned - predicted).max() > 10 * 2e-4


# --- 1. annotation frames: VOC, COCO, ILSVRC -----------------------------------------


def test_case_box_lands_on_the_object_in_training():
    case = shared_case("exif-rotated-voc")
    anns, names, report = read_voc(str(case))
    (ann,) = anns
    assert names == ["square"] and (ann.height, ann.width) == (96, 64)
    image = tf_decode(open(ann.path, "rb").read())
    assert image.shape[:2] == (ann.height, ann.width)
    truth, mask = object_box(image)
    assert covered(ann.boxes[0], mask) > 0.95
    np.testing.assert_allclose(ann.boxes[0], truth, atol=2)
    # What the detector trains on: the pipeline's image and box agree too.
    prep = DetectionPreprocessing(shorter_side=64, max_side=96, flip=False, max_boxes=4,
                                  mean_rgb=(0.0, 0.0, 0.0))
    x, y = next(iter(make_detection_dataset(anns, prep, training=False, batch_size=1)))
    h, w = (int(v) for v in x["image_sizes"][0])
    resized = x["images"][0, :h, :w].numpy().round().clip(0, 255).astype(np.uint8)
    _, resized_mask = object_box(resized)
    assert covered(y["boxes"][0, 0].numpy(), resized_mask) > 0.9


def _stored_scene(height=36, width=60, box=(6, 30, 20, 52)):
    """A grey stored image with one red rectangle: (uint8 image, box yxyx)."""
    image = np.full((height, width, 3), BACKGROUND, np.uint8)
    y0, x0, y1, x1 = box
    image[y0:y1, x0:x1] = (220, 20, 20)
    return image, np.array(box, np.float32)


def _voc_xml(filename, size_wh, box_yxyx, name="thing"):
    y0, x0, y1, x1 = box_yxyx
    return (f"<annotation><filename>{filename}</filename><size><width>{size_wh[0]}</width>"
            f"<height>{size_wh[1]}</height><depth>3</depth></size><object><name>{name}</name>"
            f"<bndbox><xmin>{x0 + 1:g}</xmin><ymin>{y0 + 1:g}</ymin><xmax>{x1:g}</xmax>"
            f"<ymax>{y1:g}</ymax></bndbox></object></annotation>")


def test_orient_boxes_matches_pil_for_every_orientation():
    stored, box = _stored_scene()
    for o in range(1, 9):
        turned = pil_displayed(encode(stored, "PNG", o))
        expected, _ = object_box(turned)
        got = A.orient_boxes(box[None], stored.shape[:2], o)[0]
        np.testing.assert_array_equal(got, expected, err_msg=f"orientation {o}")
    inverted = A.orient_boxes([[5, 9, 2, 3]], (36, 60), 6)[0]
    assert inverted[2] <= inverted[0] and inverted[3] <= inverted[1]  # still dropped


def test_voc_frames_by_stated_size_for_every_orientation(tmp_path, caplog):
    stored, box = _stored_scene()
    sh, sw = stored.shape[:2]
    for o in range(1, 9):
        root = tmp_path / f"o{o}"
        (root / "images").mkdir(parents=True)
        (root / "annotations").mkdir()
        (root / "images" / "a.jpg").write_bytes(encode(stored, "JPEG", o))
        displayed = pil_displayed((root / "images" / "a.jpg").read_bytes())
        truth, mask = object_box(displayed)
        dh, dw = displayed.shape[:2]
        # Written as labelImg/CVAT do: displayed size, displayed box. Kept.
        (root / "annotations" / "a.xml").write_text(_voc_xml("a.jpg", (dw, dh), truth))
        # Written on the unturned pixels: stored size, stored box.
        (root / "images" / "b.jpg").write_bytes(encode(stored, "JPEG", o))
        (root / "annotations" / "b.xml").write_text(_voc_xml("b.jpg", (sw, sh), box))
        # A size that is neither: skipped, named.
        (root / "images" / "c.jpg").write_bytes(encode(stored, "JPEG", o))
        (root / "annotations" / "c.xml").write_text(_voc_xml("c.jpg", (sw * 2, sh), box))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="resnet_tf.data"):
            anns, _, report = read_voc(str(root))
        assert report.by_reason == {R.SIZE_MISMATCH: 1}, o
        assert "c.xml" in caplog.text and f"{sw * 2}x{sh}" in caplog.text
        a, b = anns
        assert (a.height, a.width) == (b.height, b.width) == (dh, dw)
        assert covered(a.boxes[0], mask) > 0.95
        if o in A.SWAPS_SIDES:
            # The stated size proves the stored frame: turned with the image.
            assert covered(b.boxes[0], mask) > 0.95, o
            np.testing.assert_allclose(b.boxes[0], truth, atol=1)
            assert report.reoriented_images == 1
        else:
            # Sizes can't tell: the displayed frame, as the tools write it.
            np.testing.assert_allclose(b.boxes[0], box, atol=0)
            assert report.reoriented_images == 0


def test_coco_checks_sizes_and_turns_stored_frame_boxes(tmp_path):
    stored, box = _stored_scene()
    sh, sw = stored.shape[:2]
    (tmp_path / "images").mkdir()
    for name in ("a", "b", "c", "d"):
        (tmp_path / "images" / f"{name}.jpg").write_bytes(encode(stored, "JPEG", 6))
    (tmp_path / "images" / "e.jpg").write_bytes(b"")  # unreadable: left to the decoder
    truth, mask = object_box(pil_displayed(encode(stored, "JPEG", 6)))
    xywh = lambda b: [float(b[1]), float(b[0]), float(b[3] - b[1]), float(b[2] - b[0])]  # noqa
    # (name, stated height, stated width, bbox): displayed size and box (kept),
    # stored size and box (turned), neither (skipped), 0 (the image's size).
    entries = [("a", sw, sh, xywh(truth)), ("b", sh, sw, xywh(box)),
               ("c", 10, 10, xywh(box)), ("d", 0, 0, xywh(truth)), ("e", sw, sh, xywh(box))]
    data = {"categories": [{"id": 1, "name": "thing"}], "images": [], "annotations": []}
    for i, (name, h, w, b) in enumerate(entries):
        data["images"].append({"id": i, "file_name": f"{name}.jpg", "height": h, "width": w})
        data["annotations"].append({"id": i, "image_id": i, "category_id": 1, "bbox": b})
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    anns, _, report = read_coco(str(path), str(tmp_path / "images"))
    assert [os.path.basename(a.path) for a in anns] == ["a.jpg", "b.jpg", "d.jpg", "e.jpg"]
    assert report.by_reason == {R.SIZE_MISMATCH: 1} and report.reoriented_images == 1
    for a in anns[:3]:
        assert (a.height, a.width) == (sw, sh)
        assert covered(a.boxes[0], mask) > 0.95, a.path
    assert (anns[3].height, anns[3].width) == (sw, sh)  # stated; the decoder skips it


def test_ilsvrc_boxes_are_stored_frame_and_xml_sizes_are_checked(tmp_path):
    stored, box = _stored_scene()
    sh, sw = stored.shape[:2]
    wnid = "n01440764"
    (tmp_path / ilsvrc.SYNSETS).write_text(f"{wnid} tench\n")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        (images / f"ILSVRC2012_val_0000000{i}.JPEG").write_bytes(encode(stored, "JPEG", 6))
    truth, mask = object_box(pil_displayed(encode(stored, "JPEG", 6)))
    y0, x0, y1, x1 = box
    rows = "".join(f"ILSVRC2012_val_0000000{i},{wnid} {x0:g} {y0:g} {x1 - 1:g} {y1 - 1:g}\n"
                   for i in range(3))
    csv_path = tmp_path / "LOC_val_solution.csv"
    csv_path.write_text("ImageId,PredictionString\n" + rows)
    rows, report = ilsvrc.read_loc_csv(str(csv_path), [wnid])
    anns = ilsvrc.attach_images(rows, [str(images)], report)
    assert len(anns) == 3 and report.reoriented_images == 3
    for a in anns:
        assert (a.height, a.width) == (sw, sh) and covered(a.boxes[0], mask) > 0.95
    # XML sizes: stored (turned), displayed (kept as written), neither (skipped).
    report = ilsvrc.LocReport()
    stated = {"ILSVRC2012_val_00000000": (sh, sw), "ILSVRC2012_val_00000001": (sw, sh),
              "ILSVRC2012_val_00000002": (50, 50)}
    anns = ilsvrc.attach_images(rows, [str(images)], report, sizes=stated)
    assert len(anns) == 2 and report.by_reason == {R.SIZE_MISMATCH: 1}
    assert covered(anns[0].boxes[0], mask) > 0.95 and report.reoriented_images == 1
    # Kept as written (then clipped to the 36-wide displayed image), not turned.
    np.testing.assert_allclose(anns[1].boxes[0], np.minimum(box, [sw, sh, sw, sh]))


# --- 2. file names and empty splits --------------------------------------------------


def test_case_coco_file_name_with_folder_resolves_and_trains():
    case = shared_case("coco-filename-with-folder")
    src = open_detection_source(f"coco:{case / 'result.json'}")
    split = src.split("train")
    assert [os.path.relpath(a.path, case) for a in split.annotations] == [
        os.path.join("images", f"{i}.jpg") for i in range(3)]
    assert split.report.skipped_images == 0
    np.testing.assert_allclose(split.annotations[0].boxes, [[10, 20, 50, 60]])
    prep = DetectionPreprocessing(shorter_side=64, max_side=96, flip=False, max_boxes=4)
    ds = make_detection_dataset(split.annotations, prep, training=False, batch_size=3)
    x, _ = next(iter(ds))
    assert x["images"].shape[0] == 3


def _coco_file(folder, file_names, name="result.json", size=(16, 24)):
    data = {"categories": [{"id": 0, "name": "thing"}],
            "images": [{"id": i, "file_name": n, "height": size[0], "width": size[1]}
                       for i, n in enumerate(file_names)],
            "annotations": [{"id": i, "image_id": i, "category_id": 0, "bbox": [2, 2, 8, 8]}
                            for i in range(len(file_names))]}
    os.makedirs(folder, exist_ok=True)
    (folder / name).write_text(json.dumps(data))
    return folder / name


def test_coco_file_names_as_each_exporter_writes_them(tmp_path):
    gray = np.full((16, 24, 3), 128, np.uint8)
    (tmp_path / "images" / "sub").mkdir(parents=True)
    for n in ("0.jpg", "1.jpg", "sub/2.jpg"):
        (tmp_path / "images" / n).write_bytes(encode(gray))
    (tmp_path / "3.jpg").write_bytes(encode(gray))
    # CVAT/Roboflow bare names, Label Studio's images/..., a sub-folder, a
    # Windows separator, an image beside the JSON.
    names = ["0.jpg", "images/1.jpg", "sub/2.jpg", "images\\sub\\2.jpg", "3.jpg"]
    path = _coco_file(tmp_path, names)
    anns, _, report = read_coco(*find_coco_json(str(path)))
    assert report.skipped_images == 0
    assert [os.path.relpath(a.path, tmp_path) for a in anns] == [
        "images/0.jpg", "images/1.jpg", "images/sub/2.jpg", "images/sub/2.jpg", "3.jpg"]
    # A folder holding one JSON file is that file.
    assert len(open_detection_source(f"coco:{tmp_path}").split("train").annotations) == 5


def test_no_usable_image_is_a_value_error_with_counts(tmp_path):
    path = _coco_file(tmp_path, ["a.jpg", "b.jpg", "../c.jpg"])
    with pytest.raises(ValueError) as e:
        open_detection_source(f"coco:{path}")
    message = str(e.value)
    assert "result.json" in message and "no usable image of 3 listed" in message
    assert "2 missing_image" in message and "1 path_outside_root" in message
    empty = _coco_file(tmp_path / "e", [])
    with pytest.raises(ValueError, match="lists no image"):
        read_coco(str(empty), str(tmp_path / "e"))
    with pytest.raises(ValueError, match="no images to read"):
        make_detection_dataset([], DetectionPreprocessing(), training=True, batch_size=1)
    # A hold-out that leaves a split empty names the counts.
    for c in ("a", "b"):
        (tmp_path / "cls" / c).mkdir(parents=True)
        (tmp_path / "cls" / c / "0.jpg").write_bytes(encode(np.zeros((8, 8, 3), np.uint8)))
    with pytest.raises(ValueError, match="holds out 0 and leaves 2"):
        open_source(f"folder:{tmp_path / 'cls'}", val_fraction=0.2).split("eval")


def test_voc_file_names_as_voc_tools_write_them(tmp_path):
    stored, box = _stored_scene()
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "Annotations").mkdir()
    size = (stored.shape[1], stored.shape[0])
    (tmp_path / "JPEGImages" / "000001.jpg").write_bytes(encode(stored))
    (tmp_path / "JPEGImages" / "000002.jpg").write_bytes(encode(stored))
    (tmp_path / "Annotations" / "000003.png").write_bytes(encode(stored, "PNG"))
    xml = {"000001": "000001",  # no extension
           "000002": "renamed.jpg",  # stale <filename>: the devkit's <id>.jpg
           "000003": "000003.png"}  # beside the XML
    for stem, filename in xml.items():
        (tmp_path / "Annotations" / f"{stem}.xml").write_text(_voc_xml(filename, size, box))
    anns, _, report = read_voc(str(tmp_path))
    assert report.skipped_images == 0
    assert [os.path.relpath(a.path, tmp_path) for a in anns] == [
        "JPEGImages/000001.jpg", "JPEGImages/000002.jpg", "Annotations/000003.png"]
    (tmp_path / "Annotations" / "000004.xml").write_text(_voc_xml("gone.jpg", size, box))
    (tmp_path / "Annotations" / "000005.xml").write_text(_voc_xml("../../x.jpg", size, box))
    _, _, report = read_voc(str(tmp_path))
    assert report.by_reason == {R.MISSING_IMAGE: 1, R.OUTSIDE_ROOT: 1}


# --- 5. split folder names --------------------------------------------------------------


def test_case_valid_folder_is_the_validation_split(tiny_classifier):
    from resnet_tf.evaluate import evaluate_classifier

    case = shared_case("valid-folder")
    src = open_source(f"folder:{case}")
    train, val = src.split("train"), src.split("eval")
    assert (train.name, train.num_examples) == ("train", 8)
    assert (val.name, val.num_examples, val.training_images) == ("valid", 4, False)
    assert all(b"/valid/" in ex["path"].numpy() for ex in decoded_examples(val))
    result = evaluate_classifier(tiny_classifier, f"folder:{case}")
    assert (result["split"], result["images"]) == ("valid", 4)


def _classes(root, n=2):
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            (root / c / f"{i}.png").write_bytes(encode(np.zeros((8, 8, 3), np.uint8), "PNG"))


@pytest.mark.parametrize("train_name,eval_name", [
    ("train", "val"), ("train", "valid"), ("train", "validation"), ("train", "dev"),
    ("train", "test"), ("Train", "Valid"), ("training", "VALIDATION")])
def test_split_folder_names_in_common_use(tmp_path, train_name, eval_name):
    _classes(tmp_path / train_name, 3)
    _classes(tmp_path / eval_name, 1)
    src = open_source(f"folder:{tmp_path}")
    assert src.class_names == ["cat", "dog"]
    assert src.split("train").num_examples == 6
    val = src.split("eval")
    assert (val.name, val.num_examples, val.training_images) == (eval_name, 2, False)


def test_unknown_sibling_warns_and_validation_wins_over_test(tmp_path, caplog):
    for name in ("train", "test", "valid", "extra"):
        _classes(tmp_path / name)
    with caplog.at_level(logging.WARNING, logger="resnet_tf.data"):
        src = open_source(f"folder:{tmp_path}")
    assert src.split("eval").name == "valid"
    assert "ignoring extra/" in caplog.text and "test/ not used" in caplog.text


def test_training_images_are_never_reported_as_validation(tmp_path, caplog):
    from resnet_tf.train import _eval_split_or_none

    _classes(tmp_path / "only" / "train")
    src = open_source(f"folder:{tmp_path / 'only'}")
    with caplog.at_level(logging.WARNING, logger="resnet_tf.data"):
        val = src.split("eval")
    assert val.training_images and val.name == "train (no validation folder)"
    assert "training-set numbers" in caplog.text
    assert _eval_split_or_none(src, src, None) is None  # training: no val_top1
    _classes(tmp_path / "flat")
    flat = open_source(f"folder:{tmp_path / 'flat'}").split("eval")
    assert flat.training_images and flat.name == "all"
    # Evaluation folders only: evaluate on them, don't train.
    _classes(tmp_path / "evalonly" / "val")
    _classes(tmp_path / "evalonly" / "test")
    src = open_source(f"folder:{tmp_path / 'evalonly'}")
    assert src.split("eval").name == "val"
    with pytest.raises(ValueError, match="no training folder"):
        src.split("train")


def test_detection_split_folders_and_training_images(tmp_path, caplog):
    stored, box = _stored_scene()
    size = (stored.shape[1], stored.shape[0])
    for split, n in (("train", 3), ("valid", 2)):
        folder = tmp_path / "voc" / split
        folder.mkdir(parents=True)
        for i in range(n):
            (folder / f"{i}.jpg").write_bytes(encode(stored))
            (folder / f"{i}.xml").write_text(_voc_xml(f"{i}.jpg", size, box))
        coco = tmp_path / "coco" / split
        coco.mkdir(parents=True)
        for i in range(n):
            (coco / f"{i}.jpg").write_bytes(encode(stored))
        _coco_file(coco, [f"{i}.jpg" for i in range(n)], "_annotations.coco.json",
                   size=stored.shape[:2])
    for kind in ("voc", "coco"):
        src = open_detection_source(f"{kind}:{tmp_path / kind}")
        train, val = src.split("train"), src.split("eval")
        assert (len(train.annotations), len(val.annotations)) == (3, 2), kind
        assert val.name == "valid" and not val.training_images
        assert all("/valid/" in a.path for a in val.annotations)
    # One pool of XML files, or a training folder alone: evaluation is the
    # training images, and says so.
    os.rename(tmp_path / "coco" / "valid", tmp_path / "valid")
    for spec in (f"voc:{tmp_path / 'voc' / 'train'}", f"coco:{tmp_path / 'coco'}"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="resnet_tf.data"):
            val = open_detection_source(spec).split("eval")
        assert val.training_images and "training images" in val.name, spec
        assert len(val.annotations) == 3 and "training-set numbers" in caplog.text

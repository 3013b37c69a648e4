"""ILSVRC localization annotations (real Kaggle CSVs and XML), bad input,
the synthetic set and the training crops."""

import csv
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import shared_data
from localization.data import ilsvrc
from localization.data.pipeline import make_training_dataset, train_view
from localization.data.sources import open_localization_source
from localization.data.synthetic import make_localization
from resnet_tf.data.preprocessing import Preprocessing


def _csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))[1:]


def test_loader_reads_all_100_real_images_and_agrees_with_the_csv():
    root = shared_data("imagenet-val-loc")
    split = open_localization_source(f"ilsvrc-loc:{root}").split("eval")
    wnids = [line.split()[0] for line in open(root / "LOC_synset_mapping.txt")]
    rows = {r[0]: r[1].split() for r in _csv_rows(root / "LOC_val_solution_subset.csv")}
    assert len(split.annotations) == len(rows) == 100
    assert split.report.skipped_rows == 0 and split.report.dropped_boxes == 0
    modes = set()
    for a in split.annotations:
        image_id = os.path.splitext(os.path.basename(a.path))[0]
        fields = rows[image_id]
        with Image.open(a.path) as im:
            assert (a.width, a.height) == im.size
            modes.add(im.mode)
        expect = np.array([[float(v) for v in fields[i + 1:i + 5]]
                           for i in range(0, len(fields), 5)])  # xmin ymin xmax ymax
        # 0-based inclusive pixels -> continuous (ymin, xmin, ymax + 1, xmax + 1).
        np.testing.assert_array_equal(a.boxes, expect[:, [1, 0, 3, 2]] + [0, 0, 1, 1])
        assert set(a.classes) == {wnids.index(fields[0])}
    assert "L" in modes  # a grayscale image is among them
    assert split.report.boxes == sum(len(f) // 5 for f in rows.values())


def test_tolerant_decoder_reads_every_real_image_including_grayscale():
    from localization.data.pipeline import test_examples

    root = shared_data("imagenet-val-loc")
    anns = open_localization_source(f"ilsvrc-loc:{root}").split("eval").annotations
    shapes = [(e["image"].shape, e["path"].numpy().decode())
              for e in test_examples(anns)]
    assert len(shapes) == 100
    for (shape, path), a in zip(shapes, anns):
        assert path == a.path and tuple(shape) == (a.height, a.width, 3)


def test_full_50000_row_csv_parses_with_per_class_counts_that_sum():
    meta = shared_data("imagenet-meta")
    wnids, names = ilsvrc.read_synsets(str(meta / "LOC_synset_mapping.txt"))
    assert len(wnids) == 1000 and names[134] == names[517] == "crane"
    rows, report = ilsvrc.read_loc_csv(str(meta / "LOC_val_solution.csv"), wnids)
    raw = _csv_rows(meta / "LOC_val_solution.csv")
    total_boxes = sum(len(r[1].split()) // 5 for r in raw)
    assert len(rows) == report.rows == len(raw) == 50_000
    assert report.skipped_rows == 0 and report.dropped_boxes == 0
    assert sum(report.images_per_class.values()) == 50_000
    assert sum(report.boxes_per_class.values()) == total_boxes == sum(len(r.boxes)
                                                                      for r in rows)
    # ILSVRC-2012 validation: 50 images of each of the 1,000 classes.
    assert len(report.images_per_class) == 1000
    assert set(report.images_per_class.values()) == {50}
    first = next(r for r in rows if r.image_id == "ILSVRC2012_val_00000001")
    assert first.label == wnids.index("n01751748") and first.boxes.tolist() == [
        [108, 111, 194, 442]]


def _write_set(tmp_path, lines, synsets=("n01440764 tench", "n01443537 goldfish")):
    (tmp_path / "images").mkdir()
    for i in range(3):
        Image.new("RGB", (100, 80), (i * 40, 90, 10)).save(tmp_path / "images" / f"im{i}.JPEG")
    (tmp_path / "LOC_synset_mapping.txt").write_text("\n".join(synsets) + "\n")
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n" + "\n".join(lines) + "\n")
    return f"ilsvrc-loc:{tmp_path}"


def test_bad_rows_are_warned_about_by_row_counted_and_skipped(tmp_path, caplog):
    spec = _write_set(tmp_path, [
        "im0,n01440764 10 10 50 40 n01440764 -30 -30 -5 -5",  # 2nd box outside
        "im1,n09999999 1 1 20 20",  # wnid not in the synset list
        "im2,n01443537 1 1 20",  # malformed: 4 coordinates
        "im2,n01443537 1 one 20 20",  # malformed: not a number
        "im2,n01443537 90 2 140 60",  # reaches past the right edge: clipped
        "im9,n01443537 1 1 20 20",  # no such image
    ])
    with caplog.at_level(logging.WARNING, logger="resnet_tf.data"):
        split = open_localization_source(spec).split("eval")
    r = split.report
    assert r.rows == 6 and r.skipped_rows == 4 and r.dropped_boxes == 1
    assert r.clipped_boxes == 2 and len(split.annotations) == 2
    text = caplog.text
    csv_path = str(tmp_path / "LOC_val_solution.csv")
    assert f"{csv_path}:3: skipped: wnid n09999999 is not in the synset list" in text
    assert f"{csv_path}:4: skipped: malformed row for im2" in text
    assert "not a multiple of 5" in text and "not a number" in text
    assert f"{csv_path}:2: box 1 dropped" in text and "outside" in text
    assert f"{csv_path}:7: skipped: image im9 not found" in text
    im0, im2 = split.annotations
    np.testing.assert_array_equal(im0.boxes, [[10, 10, 41, 51]])
    np.testing.assert_array_equal(im2.boxes, [[2, 90, 61, 100]])  # clipped at x = 100


def test_structural_errors_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        open_localization_source(f"ilsvrc-loc:{tmp_path / 'none'}")
    with pytest.raises(ValueError, match="Unknown localization data spec"):
        open_localization_source("voc:/x")
    spec = _write_set(tmp_path, ["im9,n01440764 1 1 5 5"])
    with pytest.raises(ValueError, match="no usable image"):
        open_localization_source(spec).split("eval")
    (tmp_path / "LOC_val_solution.csv").write_text("id,boxes\nim0,n01440764 1 1 5 5\n")
    with pytest.raises(ValueError, match="expected the header 'ImageId,PredictionString'"):
        open_localization_source(spec).split("eval")
    with pytest.raises(ValueError, match="synset list not found"):
        ilsvrc.read_synsets(str(tmp_path / "missing.txt"))


def test_val_fraction_holds_out_the_same_images_whatever_the_row_order(tmp_path):
    rows = ["im0,n01440764 1 1 50 40", "im1,n01443537 2 2 60 50", "im2,n01440764 3 3 70 60"]
    spec = _write_set(tmp_path, rows)
    source = open_localization_source(spec, val_fraction=0.34)
    train, held = source.split("train"), source.split("eval")
    assert len(train.annotations) == 2 and len(held.annotations) == 1
    assert held.name == "held-out 34% of train: 1 of 3 images"
    assert train.name == "train less the held-out 34%: 2 of 3 images"
    assert not {a.path for a in train.annotations} & {a.path for a in held.annotations}
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n" + "\n".join(reversed(rows)) + "\n")
    again = open_localization_source(spec, val_fraction=0.34, seed=7).split("eval")
    assert [a.path for a in again.annotations] == [a.path for a in held.annotations]
    # Without val_fraction both splits read the one CSV: all three images.
    assert len(open_localization_source(spec).split("train").annotations) == 3
    with pytest.raises(ValueError, match="both parts need at least one image"):
        open_localization_source(spec, val_fraction=0.1).split("eval")
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\)"):
        open_localization_source(spec, val_fraction=1.5)
    with pytest.raises(ValueError, match="synthetic set has its own evaluation split"):
        open_localization_source("synthetic", val_fraction=0.2)


def test_ilsvrc_xml_annotations(tmp_path, caplog):
    xml_dir = tmp_path / "Annotations" / "CLS-LOC" / "val"
    img_dir = tmp_path / "Data" / "CLS-LOC" / "val"
    xml_dir.mkdir(parents=True)
    img_dir.mkdir(parents=True)
    (tmp_path / "LOC_synset_mapping.txt").write_text("n01440764 tench\nn01443537 goldfish\n")
    obj = "<object><name>{}</name><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax>" \
          "<ymax>{}</ymax></bndbox></object>"
    for i, objs in enumerate([[("n01443537", 5, 6, 30, 40), ("n01443537", 50, 10, 70, 20)],
                              [("n01440764", 0, 0, 99, 79)], [("n01111111", 1, 1, 9, 9)]]):
        Image.new("RGB", (100, 80)).save(img_dir / f"v{i}.JPEG")
        (xml_dir / f"v{i}.xml").write_text(
            f"<annotation><filename>v{i}</filename><size><width>100</width>"
            f"<height>80</height></size>{''.join(obj.format(*o) for o in objs)}</annotation>")
    (xml_dir / "broken.xml").write_text("<annotation><filename>")
    with caplog.at_level(logging.WARNING, logger="resnet_tf.data"):
        split = open_localization_source(f"ilsvrc-loc:{tmp_path}").split("eval")
    assert [a.classes.tolist() for a in split.annotations] == [[1, 1], [0]]
    np.testing.assert_array_equal(split.annotations[0].boxes,
                                  [[6, 5, 41, 31], [10, 50, 21, 71]])
    np.testing.assert_array_equal(split.annotations[1].boxes, [[0, 0, 80, 100]])
    assert split.report.skipped_rows == 2  # the unknown wnid and the broken file
    assert "broken.xml: skipped: malformed XML" in caplog.text
    assert "wnid n01111111 is not in the synset list" in caplog.text


def test_synthetic_set_has_one_class_and_tight_boxes_per_image():
    images, labels, boxes = make_localization(60, size=32, seed=3, multi_fraction=0.5)
    assert images.shape == (60, 32, 32, 3) and np.bincount(labels).min() == 10
    assert max(len(b) for b in boxes) == 2 and min(len(b) for b in boxes) == 1
    for img, b in zip(images, boxes):
        assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()
        assert b.min() >= 0 and b.max() <= 32
    again = make_localization(60, size=32, seed=3, multi_fraction=0.5)
    np.testing.assert_array_equal(images, again[0])


@pytest.mark.parametrize("style", ["imagenet", "cifar"])
def test_training_crops_move_the_boxes_with_the_pixels(style):
    # A white square on black: after any crop, scale and flip, the box must
    # still frame the white pixels.
    size = 32 if style == "cifar" else 64
    image = np.zeros((48, 40, 3), np.uint8) if style == "imagenet" else \
        np.zeros((32, 32, 3), np.uint8)
    y0, x0, y1, x1 = (12, 10, 30, 26) if style == "imagenet" else (8, 6, 20, 22)
    image[y0:y1, x0:x1] = 255
    boxes = tf.constant([[y0, x0, y1, x1], [-1, -1, -1, -1]], tf.float32)
    prep = Preprocessing.for_style(style, crop_size=size, pca_std=0.0,
                                   **({"scale_range": (64, 96), "eval_resize": 64}
                                      if style == "imagenet" else {}))
    kept = 0
    for s in range(12):
        x, b = train_view(tf.constant(image), boxes, tf.constant([s, 7]), prep, None)
        x, b = x.numpy(), b.numpy()
        assert (b[1] == -1).all()
        if (b[0] == -1).all():
            continue  # the object's centre fell outside the crop
        yy, xx = np.nonzero(x[..., 0] > 127)
        tight = [yy.min(), xx.min(), yy.max() + 1, xx.max() + 1]
        np.testing.assert_allclose(b[0], tight, atol=1.5)
        kept += 1
    assert kept >= 6  # most crops keep the object


def test_training_dataset_shapes():
    split = open_localization_source("synthetic", synthetic_train=12,
                                     synthetic_eval=4).split("train")
    prep = Preprocessing.for_style("cifar")
    ds = make_training_dataset(split.annotations, prep, np.zeros((32, 32, 3), np.float32),
                               batch_size=4, images=split.images)
    x, y = next(iter(ds))
    assert x.shape == (4, 32, 32, 3) and y["labels"].shape == (4,)
    assert y["boxes"].shape[0] == 4 and y["boxes"].shape[2] == 4

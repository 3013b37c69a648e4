"""What the decoders can read (the ``jpeg-corrupt-inside`` case and its kind).

resnet-tf's accept/reject rule is "TensorFlow or PIL decodes the file
fully". It is tested against the decoders themselves on a corpus of odd but
valid files and of broken ones built here with PIL, through each way in:
the eager rule (``decode_bytes``), ``predict``'s ``read_image_file``, the
tf.data decode of every pipeline (``decode_and_filter``) and the training
views built on it. Then the user's case: a JPEG
whose middle is corrupt while its header and end marker are intact, in a
class folder and a VOC folder, through ``evaluate`` of the classifier, the
detector and the localizer (named, counted, scored as missed; ``--strict``
refuses), ``predict``, ``train`` and a served export's request.
"""

import io
import logging
import os
import shutil
import struct
import zlib

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

import conftest
from conftest import shared_data, shared_case
from resnet_tf.data import decode
from resnet_tf.data import report as R
from resnet_tf.data.decode import SkipCounter, decode_and_filter, decode_bytes, read_image_file

H, W = 40, 56



# --- the corpus: odd but valid files, and broken ones ---------------------------------


def photo(height=H, width=W, seed=0):
    """A smooth image with some texture, uint8 [H, W, 3]."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    base = np.stack([x * 255 // (width - 1), y * 255 // (height - 1),
                     (x + y) * 255 // (height + width - 2)], -1)
    return np.clip(base + rng.integers(-12, 13, base.shape), 0, 255).astype(np.uint8)


def encode(image, fmt, **kwargs):
    if isinstance(image, np.ndarray):
        image = PIL.Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def png_chunks(*chunks):
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunk(k, d) for k, d in chunks)


def png16(array):
    """A 16-bit RGB PNG from uint16 [H, W, 3] (PIL can't write one)."""
    height, width, _ = array.shape
    rows = b"".join(b"\x00" + array[r].astype(">u2").tobytes() for r in range(height))
    return png_chunks((b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)),
                      (b"IDAT", zlib.compress(rows)), (b"IEND", b""))


def segment_offset(jpeg, marker):
    """Offset of the first marker segment ``FF marker`` before the scan."""
    pos = 2
    while jpeg[pos + 1] != marker:
        pos += 2 + struct.unpack(">H", jpeg[pos + 2:pos + 4])[0]
    return pos


def corrupt_huffman_table(jpeg):
    """The user's case: the DHT segment's code counts overwritten (libjpeg:
    "Bogus Huffman table definition"); SOI, the frame header and EOI intact."""
    data = bytearray(jpeg)
    pos = segment_offset(data, 0xC4)
    data[pos + 5:pos + 21] = b"\xff" * 16
    return bytes(data)


def animated_gif():
    frames = [PIL.Image.fromarray(np.roll(photo(), 9 * i, axis=1)).quantize(64)
              for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=40)
    return buffer.getvalue()


def corpus():
    """name -> (file name, bytes). Which of them "TF or PIL decodes fully" is
    left to the decoders (``tf_decodes``, ``pil_decodes``), not written here."""
    rgb = PIL.Image.fromarray(photo())
    jpeg = encode(rgb, "JPEG", quality=90)
    png = encode(rgb, "PNG")
    gif = encode(rgb.quantize(64), "GIF")
    bmp = encode(rgb, "BMP")
    webp = encode(rgb, "WEBP", lossless=True)
    tiff = encode(rgb, "TIFF")
    progressive = encode(rgb, "JPEG", progressive=True)
    files = {
        # Odd but valid.
        "jpeg": ("plain.jpg", jpeg),
        "progressive_jpeg": ("progressive.jpg", progressive),
        "cmyk_jpeg": ("cmyk.jpg", encode(rgb.convert("CMYK"), "JPEG")),
        "gray_jpeg": ("gray.jpg", encode(rgb.convert("L"), "JPEG")),
        "jpeg_444_restart_markers": ("restart.jpg", encode(rgb, "JPEG", subsampling=0,
                                                           restart_marker_blocks=1)),
        "jpeg_short_trailer": ("trailer.jpg", jpeg + b"\0" * 100),
        # More garbage after EOI than the end-marker check looks at.
        "jpeg_long_trailer": ("long_trailer.jpg", jpeg + b"maker notes " * 200),
        "png_gray16": ("gray16.png", encode(PIL.Image.fromarray(
            (np.mgrid[0:H, 0:W][1] * 1100 + 9).astype(np.uint16)), "PNG")),
        "png_rgb16": ("rgb16.png", png16(photo().astype(np.uint16) * 257)),
        "png_palette_transparent": ("palette_t.png", encode(rgb.quantize(16), "PNG",
                                                            transparency=2)),
        "png_gray_alpha": ("la.png", encode(rgb.convert("LA"), "PNG")),
        "png_long_trailer": ("png_trailer.png", png + b"\0" * 2000),
        "gif_animated": ("animated.gif", animated_gif()),
        "gif_without_trailer_byte": ("no_trailer.gif", gif[:-1]),
        "bmp_24": ("rgb.bmp", bmp),
        "bmp_8_palette": ("palette.bmp", encode(rgb.quantize(16), "BMP")),
        "bmp_1bit": ("mono.bmp", encode(rgb.convert("1"), "BMP")),
        "webp_lossless": ("lossless.webp", webp),
        "tiff": ("plain.tiff", tiff),
        "png_named_jpg": ("really_a_png.jpg", png),
        "jpeg_named_png": ("really_a_jpeg.png", jpeg),
        # Broken.
        "zero_bytes": ("empty.jpg", b""),
        "text_named_jpg": ("notes.jpg", b"not an image at all\n" * 30),
        "random_bytes": ("noise.png", np.random.default_rng(1).bytes(3000)),
        "jpeg_header_only": ("header_only.jpg", jpeg[:segment_offset(jpeg, 0xDA)]),
        "jpeg_cut_10pct": ("cut10.jpg", jpeg[:len(jpeg) // 10]),
        "jpeg_cut_50pct": ("cut50.jpg", jpeg[:len(jpeg) // 2]),
        "jpeg_cut_90pct": ("cut90.jpg", jpeg[:len(jpeg) * 9 // 10]),
        "jpeg_cut_90pct_eoi_appended": ("cut90_eoi.jpg", jpeg[:len(jpeg) * 9 // 10]
                                        + b"\xff\xd9"),
        "progressive_cut_60pct_eoi_appended": ("prog_cut_eoi.jpg",
                                               progressive[:len(progressive) * 6 // 10]
                                               + b"\xff\xd9"),
        "jpeg_corrupt_huffman_table": ("bad_dht.jpg", corrupt_huffman_table(jpeg)),
        "jpeg_scan_overwritten": ("bad_scan.jpg", jpeg[:len(jpeg) // 3]
                                  + b"\xff\x00" * 50 + jpeg[len(jpeg) // 3 + 100:]),
        "png_cut_50pct": ("cut50.png", png[:len(png) // 2]),
        "png_cut_50pct_iend_appended": ("cut50_iend.png", png[:len(png) // 2]
                                        + png[-12:]),
        "png_idat_byte_flipped": ("bad_crc.png", png[:60] + bytes([png[60] ^ 0xFF])
                                  + png[61:]),
        "gif_cut_50pct": ("cut50.gif", gif[:len(gif) // 2]),
        "bmp_cut_50pct": ("cut50.bmp", bmp[:len(bmp) // 2]),
        "webp_cut_50pct": ("cut50.webp", webp[:len(webp) // 2]),
        "tiff_cut_50pct": ("cut50.tiff", tiff[:len(tiff) // 2]),
    }
    return files


def tf_decodes(data):
    """Whether TensorFlow's own decoder reads ``data`` fully."""
    try:
        tf.io.decode_image(data, channels=3, expand_animations=False)
        return True
    except tf.errors.OpError:
        return False


def pil_decodes(data):
    """Whether PIL reads ``data`` fully (its first frame)."""
    try:
        with PIL.Image.open(io.BytesIO(data)) as im:
            im.load()
        return True
    except Exception:  # noqa: BLE001 (PIL raises many kinds)
        return False


CORPUS = corpus()
VERDICTS = {name: tf_decodes(data) or pil_decodes(data) for name, (_, data) in CORPUS.items()}


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for filename, data in CORPUS.values():
        (root / filename).write_bytes(data)
    return root


def test_the_corpus_has_both_kinds_and_the_old_checks_misjudge_some():
    """The corpus is worth testing on: both verdicts occur, and the header
    and end-marker checks alone call some readable files bad and some
    unreadable files good (which the rule must overrule)."""
    readable = {n for n, ok in VERDICTS.items() if ok}
    assert 15 <= len(readable) <= len(CORPUS) - 10
    checks = {n: int(decode.check_image_bytes(data)[1]) == decode.OK
              for n, (_, data) in CORPUS.items()}
    assert {"bmp_1bit", "webp_lossless", "tiff", "jpeg_long_trailer",
            "gif_without_trailer_byte"} <= {n for n in readable if not checks[n]}
    assert {"jpeg_corrupt_huffman_table", "progressive_cut_60pct_eoi_appended",
            "png_idat_byte_flipped", "png_cut_50pct_iend_appended"} <= {
        n for n in CORPUS if checks[n] and not VERDICTS[n]}


def test_rule_equals_tf_or_pil_decodes_it(corpus_dir):
    """Each file, through the eager rule and predict's file reader (one
    test, so the rule's graph is traced once)."""
    wrong = []
    for name, (filename, data) in sorted(CORPUS.items()):
        image, key, message = decode_bytes(data)
        from_file, error = read_image_file(str(corpus_dir / filename))
        if (image is not None) != VERDICTS[name] or (from_file is not None) != VERDICTS[name]:
            wrong.append((name, VERDICTS[name], key, message, error))
            continue
        if image is None:
            assert key in (R.EMPTY, R.NOT_AN_IMAGE, R.TRUNCATED_JPEG, R.TRUNCATED_PNG,
                           R.TRUNCATED_GIF, R.TRUNCATED_BMP, R.UNSUPPORTED_BMP,
                           R.CORRUPT), name
            assert error == f"not a readable image: {message}", name
            continue
        assert image.dtype == np.uint8 and image.shape[2] == 3, name
        np.testing.assert_array_equal(from_file.numpy(), image)
        if pil_decodes(data):
            with PIL.Image.open(io.BytesIO(data)) as im:
                assert image.shape[:2] == (im.height, im.width), name
    assert not wrong, wrong


def test_every_pipeline_keeps_exactly_the_readable_files_and_names_the_rest(corpus_dir,
                                                                            caplog):
    names = sorted(CORPUS)
    paths = [str(corpus_dir / CORPUS[n][0]) for n in names]
    ds = tf.data.Dataset.from_tensor_slices({"path": paths}).map(
        lambda e: {**e, "image_bytes": tf.io.read_file(e["path"])})
    counter = SkipCounter(max_paths=None)
    with caplog.at_level(logging.WARNING, logger="resnet_tf.data"):
        out = [e["path"].decode() for e in decode_and_filter(ds, counter).as_numpy_iterator()]
    good = [p for n, p in zip(names, paths) if VERDICTS[n]]
    bad = [p for n, p in zip(names, paths) if not VERDICTS[n]]
    assert out == good  # in order
    assert sorted(counter.paths) == sorted(bad) and counter.count == len(bad)
    for path in bad:
        assert f"Skipping {path}: " in caplog.text
    assert counter.by_reason[R.CORRUPT] == sum(
        int(decode.check_image_bytes(CORPUS[n][1])[1]) == decode.OK
        for n in names if not VERDICTS[n])


def test_formats_tf_is_not_given_decode_to_pils_pixels():
    for name in ("bmp_1bit", "webp_lossless", "tiff"):
        data = CORPUS[name][1]
        assert int(decode.check_image_bytes(data)[1]) != decode.OK
        image, _, _ = decode_bytes(data)
        np.testing.assert_array_equal(
            image, np.asarray(PIL.Image.open(io.BytesIO(data)).convert("RGB")))


def test_files_the_end_checks_doubt_but_tf_reads_decode_like_their_clean_twin():
    for name, twin in (("jpeg_long_trailer", "jpeg"), ("png_long_trailer", None),
                       ("gif_without_trailer_byte", None)):
        data = CORPUS[name][1]
        assert int(decode.check_image_bytes(data)[1]) != decode.OK and tf_decodes(data)
        image, _, _ = decode_bytes(data)
        reference = (tf.io.decode_image(CORPUS[twin][1] if twin else data, channels=3,
                                        expand_animations=False).numpy())
        if name == "jpeg_long_trailer":
            reference = decode_bytes(CORPUS["jpeg"][1])[0]
        np.testing.assert_array_equal(image, reference)


def test_the_corrupt_message_names_both_decoders():
    image, key, message = decode_bytes(CORPUS["jpeg_corrupt_huffman_table"][1])
    assert image is None and key == R.CORRUPT
    assert message.startswith("corrupt image data")
    assert "TensorFlow: " in message and "PIL: " in message


def test_in_graph_attempt_catches_a_decoder_error_and_skips_when_told():
    bad = CORPUS["jpeg_corrupt_huffman_table"][1]
    good = CORPUS["jpeg"][1]

    @tf.function(input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.bool)])
    def run(contents, when):
        return decode.attempt(decode.decode_checked, (contents, tf.constant(decode.JPEG)),
                              when=when)

    image, ok = run(good, True)
    assert bool(ok) and image.shape == (H, W, 3)
    image, ok = run(bad, True)
    assert not bool(ok) and image.shape == (0, 0, 3)
    image, ok = run(good, False)
    assert not bool(ok)


# --- the user's case ------------------------------------------------------------------


CLASS_NAMES = ["circle", "square"]


def corrupt_case():
    root = shared_case("jpeg-corrupt-inside")
    return root, str(root / "cls" / "circle" / "1.jpg"), str(root / "voc" / "images" / "1.jpg")


def test_case_files_are_what_the_issue_says():
    root, cls_bad, voc_bad = corrupt_case()
    for path in (cls_bad, voc_bad):
        data = open(path, "rb").read()
        assert int(decode.check_image_bytes(data)[1]) == decode.OK  # looks intact
        assert not tf_decodes(data) and not pil_decodes(data)
    others = [p for p in root.glob("*/*/*.jpg") if str(p) not in (cls_bad, voc_bad)]
    assert len(others) == 7 and all(tf_decodes(p.read_bytes()) for p in others)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """A tiny classifier directory for the case's two classes."""
    import keras

    import resnet_tf
    from resnet_tf import model_dir
    from resnet_tf.data.preprocessing import Preprocessing

    keras.utils.set_random_seed(0)
    model = resnet_tf.ResNet(18, classes=len(CLASS_NAMES), width=8,
                             input_shape=(None, None, 3))
    prep = Preprocessing.for_style("imagenet", crop_size=32, eval_resize=36,
                                   scale_range=(36, 48))
    directory = str(tmp_path_factory.mktemp("clf") / "model")
    model_dir.save_classifier(directory, model, CLASS_NAMES, None, prep)
    return directory


def test_case_classifier_evaluation_names_counts_and_scores_the_file_as_wrong(
        classifier_dir, caplog):
    from resnet_tf.evaluate import evaluate_classifier

    root, bad, _ = corrupt_case()
    with caplog.at_level(logging.WARNING, logger="resnet_tf.data"):
        r = evaluate_classifier(classifier_dir, f"folder:{root / 'cls'}")
    assert (r["images"], r["readable_images"], r["unreadable_images"]) == (6, 5, 1)
    assert r["unreadable_paths"] == [bad] and r["skipped_by_reason"] == {R.CORRUPT: 1}
    assert f"Skipping {bad}: corrupt image data" in caplog.text
    # Wrong at every k: the errors over 6 are the readable ones' over 5, plus 1.
    for k in (1, 5):
        assert r[f"top{k}_error"] * 6 == pytest.approx(r[f"top{k}_error_readable"] * 5 + 1)
    assert r["top5_error"] == pytest.approx(1 / 6)  # 2 classes: top-5 is always right
    with pytest.raises(ValueError, match=r"1 of the 6 images .*circle/1\.jpg.*--strict"):
        evaluate_classifier(classifier_dir, f"folder:{root / 'cls'}", strict=True)
    # The other views count it the same way.
    r10 = evaluate_classifier(classifier_dir, f"folder:{root / 'cls'}", crops="10")
    assert (r10["images"], r10["unreadable_paths"]) == (6, [bad])
    # max_images counts what it cut off before decoding: circle/0 and the bad circle/1.
    r2 = evaluate_classifier(classifier_dir, f"folder:{root / 'cls'}", max_images=2)
    assert (r2["images"], r2["readable_images"], r2["unreadable_paths"]) == (2, 1, [bad])


def test_case_classifier_cli_evaluate_and_predict(classifier_dir, capsys):
    from apps import cli

    root, bad, _ = corrupt_case()
    data = f"folder:{root / 'cls'}"
    assert cli.main(["evaluate", "classifier", "--model", classifier_dir, "--data", data]) == 0
    out = capsys.readouterr().out
    assert "6 images" in out and "1 unreadable images" in out and bad in out
    assert cli.main(["evaluate", "classifier", "--model", classifier_dir, "--data", data,
                     "--strict"]) == 2
    err = capsys.readouterr().err
    assert "circle/1.jpg" in err and "--strict" in err
    good = str(root / "cls" / "circle" / "0.jpg")
    assert cli.main(["predict", "classifier", "--model", classifier_dir, good, bad]) == 1
    out = capsys.readouterr().out
    assert f"{bad}\n  error: not a readable image: corrupt image data" in out
    assert out.count("%") == 2  # the good file's two classes


def test_case_training_counts_the_file(tmp_path, caplog):
    from resnet_tf.train import train_classifier

    root, bad, _ = corrupt_case()
    with caplog.at_level(logging.WARNING, logger="resnet_tf.data"):
        r = train_classifier(f"folder:{root / 'cls'}", str(tmp_path / "run"), model="resnet8",
                             recipe="cifar", epochs=1, batch_size=5, verbose=0)
    assert r.results["skipped_by_reason"]["train"] == {R.CORRUPT: 1}
    assert r.results["skipped_by_reason"]["mean"] == {R.CORRUPT: 1}
    assert f"Skipping {bad}" in caplog.text


@pytest.mark.parametrize("style", ["cifar", "imagenet"])
def test_case_training_views_keep_the_readable_files(style, tmp_path):
    """Both training views (CIFAR; ImageNet scale augmentation), with a
    file only PIL reads beside the corrupt one."""
    from resnet_tf.data import Preprocessing, make_dataset, open_source

    root, bad, _ = corrupt_case()
    folder = tmp_path / "cls"
    shutil.copytree(root / "cls", folder)
    (folder / "square" / "3.tiff").write_bytes(CORPUS["tiff"][1])
    prep = (Preprocessing.for_style("cifar") if style == "cifar" else
            Preprocessing.for_style("imagenet", crop_size=32, scale_range=(36, 48),
                                    eval_resize=36))
    split = open_source(f"folder:{folder}").split("train")
    counter = SkipCounter()
    ds = make_dataset(split, prep, training=True, batch_size=1, cache=False, counter=counter)
    assert sum(1 for _ in ds) == 6
    assert counter.by_reason == {R.CORRUPT: 1}
    assert counter.paths == [str(folder / "circle" / "1.jpg")]


# --- detection: the case's VOC folder ---------------------------------------------------


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory):
    """A tiny random detector directory for the case's classes."""
    import keras

    from detection.data.pipeline import DetectionPreprocessing
    from detection.model import FasterRCNN
    from detection.model_dir import save_detector

    keras.utils.set_random_seed(0)
    model = FasterRCNN(len(CLASS_NAMES), depth=18, width=8, class_names=CLASS_NAMES,
                       frozen_bn=False, freeze_at=0, anchor_scales=(16, 32, 64),
                       roi_batch=16, rpn_batch=32, pooled_size=4, score_threshold=0.0,
                       proposals=dict(pre_nms_train=100, post_nms_train=20,
                                      pre_nms_test=100, post_nms_test=20))
    model.ensure_built()
    directory = str(tmp_path_factory.mktemp("det") / "model")
    save_detector(directory, model, DetectionPreprocessing(shorter_side=64, max_side=64))
    return directory


def test_case_detector_evaluation_completes_and_counts_the_objects_as_missed(
        detector_dir, capsys):
    from detection.evaluate import evaluate_detector
    from apps import cli

    root, _, bad = corrupt_case()
    data = f"voc:{root / 'voc'}"
    r = evaluate_detector(detector_dir, data)
    assert (r["images"], r["readable_images"], r["unreadable_images"]) == (3, 2, 1)
    assert r["unreadable_objects"] == 1 and r["unreadable_paths"] == [bad]
    assert r["skipped_by_reason"] == {R.CORRUPT: 1}
    # One class, one object an image: the missed object scales recall, and
    # so the all-points AP, by 2/3.
    assert r["voc_map50"] == pytest.approx(r["voc_map50_readable"] * 2 / 3)
    assert cli.main(["evaluate", "detector", "--model", detector_dir, "--data", data,
                     "--strict"]) == 2
    err = capsys.readouterr().err
    assert "1 of the 3 images" in err and "images/1.jpg" in err and "--strict" in err


def test_case_detector_predict_and_training_stream(detector_dir):
    from detection.data.pipeline import DetectionPreprocessing, make_detection_dataset
    from detection.data.sources import open_detection_source
    from detection.evaluate import predict_detector

    root, _, bad = corrupt_case()
    rows = predict_detector(detector_dir, [str(root / "voc" / "images" / "0.jpg"), bad])
    assert "boxes" in rows[0] and rows[1]["error"].startswith("not a readable image: corrupt")
    split = open_detection_source(f"voc:{root / 'voc'}", class_names=CLASS_NAMES).split("train")
    counter = SkipCounter()
    ds = make_detection_dataset(split.annotations, DetectionPreprocessing(64, 64),
                                training=True, batch_size=1, counter=counter)
    assert sum(1 for _ in ds) == 2 and counter.paths == [bad]


def _detections(rng, boxes, n_false=2):
    """Noisy hits on ``boxes`` [G, 4] plus false positives, class 0."""
    hits = boxes + rng.normal(0, 3, boxes.shape)
    false = rng.uniform(0, 60, (n_false, 2))
    false = np.concatenate([false, false + 20], 1)
    out = np.concatenate([hits, false]).astype(np.float32)
    return {"boxes": out, "scores": rng.uniform(0, 1, len(out)).astype(np.float32),
            "classes": np.zeros(len(out), np.int32)}


def test_unreadable_images_are_aligned_and_their_objects_missed_in_voc_and_coco():
    from detection.data.annotations import ImageAnnotation
    from detection.evaluate import _align
    from detection.metrics.coco_map import evaluate_coco
    from detection.metrics.voc_map import evaluate_voc

    rng = np.random.default_rng(0)
    anns, found = [], []
    for i in range(6):
        boxes = rng.uniform(0, 40, (1 + i % 3, 2))
        boxes = np.concatenate([boxes, boxes + rng.uniform(15, 30, boxes.shape)], 1)
        anns.append(ImageAnnotation(path=f"img{i}.jpg", height=80, width=80,
                                    boxes=boxes.astype(np.float32),
                                    classes=np.zeros(len(boxes), np.int32),
                                    difficult=np.zeros(len(boxes), bool)))
        found.append(_detections(rng, boxes))
    lost = {1, 4}
    dets = _align([d for i, d in enumerate(found) if i not in lost], anns,
                  ["img1.jpg", "img4.jpg"], 2)
    assert [bool(d.get("unreadable")) for d in dets] == [i in lost for i in range(6)]
    assert all(dets[i] is found[i] for i in range(6) if i not in lost)
    gts = [{"boxes": a.boxes, "classes": a.classes} for a in anns]
    keep = [i for i in range(6) if i not in lost]
    conservative = evaluate_voc(dets, gts, 1)["mAP"]
    readable = evaluate_voc([dets[i] for i in keep], [gts[i] for i in keep], 1)["mAP"]
    npos = [len(a.boxes) for a in anns]
    assert readable > 0.3
    assert conservative == pytest.approx(
        readable * sum(npos[i] for i in keep) / sum(npos))
    sizes = [(80, 80)] * 6
    coco = evaluate_coco(dets, gts, ["a"], sizes)["AP50"]
    coco_readable = evaluate_coco([dets[i] for i in keep], [gts[i] for i in keep], ["a"],
                                  [sizes[i] for i in keep])["AP50"]
    assert coco < coco_readable
    with pytest.raises(ValueError, match="kept only the last 1 paths"):
        _align(found[:4], anns, ["img4.jpg"], 2)
    with pytest.raises(RuntimeError, match="can't be matched"):
        _align(found[:3], anns, ["img1.jpg", "img4.jpg"], 2)
    with pytest.raises(ValueError, match="detection lists for"):
        evaluate_voc(dets[:5], gts, 1)


# --- localization: an ILSVRC folder with the same fault -------------------------------


LOC_ROWS = {"ILSVRC2012_val_00000001": "n01751748 111 108 441 193",
            "ILSVRC2012_val_00000002": "n09193705 45 49 499 162 n09193705 2 69 437 207",
            "ILSVRC2012_val_00000003": "n02105855 38 19 385 373"}
LOC_CLASSES = ["n01751748", "n09193705", "n02105855"]


@pytest.fixture(scope="module")
def localizer_case(tmp_path_factory):
    """(localizer directory, ILSVRC folder, the corrupt file): three real
    validation images, the second with its Huffman table corrupted."""
    import keras

    import resnet_tf
    from localization.model import Localizer
    from localization.model_dir import save_localizer
    from resnet_tf.data.preprocessing import Preprocessing

    real = shared_data("imagenet-val-loc")
    root = tmp_path_factory.mktemp("ilsvrc")
    (root / "images").mkdir()
    for image_id in LOC_ROWS:
        data = (real / "images" / f"{image_id}.JPEG").read_bytes()
        if image_id.endswith("2"):
            data = corrupt_huffman_table(data)
        (root / "images" / f"{image_id}.JPEG").write_bytes(data)
    (root / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n" + "".join(f"{k},{v}\n" for k, v in LOC_ROWS.items()))
    keras.utils.set_random_seed(0)
    clf = resnet_tf.ResNet(18, classes=len(LOC_CLASSES), width=8, input_shape=(None, None, 3))
    loc = Localizer(clf.get_config(), class_names=LOC_CLASSES, anchor_scales=(16, 32, 48),
                    head_channels=8)
    loc.ensure_built(64)
    loc.load_classifier_weights(clf)
    directory = str(root / "loc")
    save_localizer(directory, loc, Preprocessing.for_style("imagenet", crop_size=64,
                                                           eval_resize=72,
                                                           scale_range=(72, 96)))
    return directory, root, str(root / "images" / "ILSVRC2012_val_00000002.JPEG")


def test_localizer_evaluation_scores_the_unreadable_image_as_a_miss(localizer_case, capsys):
    from localization.evaluate import evaluate_localizer, predict_localizer
    from apps import cli

    directory, root, bad = localizer_case
    data = f"ilsvrc-loc:{root}"
    r = evaluate_localizer(directory, data, per_image=True)
    assert (r["images"], r["readable_images"], r["unreadable_images"]) == (3, 2, 1)
    assert r["unreadable_objects"] == 2 and r["unreadable_paths"] == [bad]
    assert r["per_image"][1] == {"path": bad, "label": 1, "unreadable": True}
    for key in ("top1_loc_error", "top5_loc_error", "top1_cls_error", "top5_cls_error",
                "oracle_loc_error"):
        assert r[key] * 3 == pytest.approx(r[f"{key}_readable"] * 2 + 1), key
    with pytest.raises(ValueError, match=r"1 of the 3 images .*val_00000002.*--strict"):
        evaluate_localizer(directory, data, strict=True)
    assert cli.main(["evaluate", "localizer", "--model", directory, "--data", data,
                     "--strict"]) == 2
    assert "val_00000002" in capsys.readouterr().err
    rows = predict_localizer(directory, [str(root / "images" / "ILSVRC2012_val_00000001.JPEG"),
                                         bad])
    assert "predictions" in rows[0] and rows[1]["error"].startswith(
        "not a readable image: corrupt")


def test_oracle_error_counts_a_missing_box_as_wrong():
    from localization.metrics import localization_errors, oracle_error

    truth = [(np.array([0]), np.array([[0, 0, 10, 10]], np.float32))] * 2
    assert oracle_error([np.array([0, 0, 10, 10]), None], truth) == 0.5
    errors = localization_errors([(np.array([0]), np.array([[0, 0, 10, 10]])),
                                  (np.zeros([0], int), np.zeros([0, 4]))], truth, ks=(1,))
    assert errors["top1_loc_error"] == errors["top1_cls_error"] == 0.5


# --- export: a served classifier's request ---------------------------------------------


def test_served_classifier_names_the_corrupt_image_of_a_request(classifier_dir, tmp_path):
    from resnet_tf import export

    root, bad, _ = corrupt_case()
    loaded = tf.saved_model.load(export.export_classifier(classifier_dir,
                                                          str(tmp_path / "serving")))
    serve = loaded.signatures["serving_default"]
    good = (root / "cls" / "circle" / "0.jpg").read_bytes()
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"image_bytes\[1\]: corrupt image data"):
        serve(image_bytes=tf.constant([good, open(bad, "rb").read(), good]))
    # What TF reads though the end checks doubt it is served; a format only
    # PIL reads is refused by index.
    out = serve(image_bytes=tf.constant([good, CORPUS["jpeg_long_trailer"][1],
                                         CORPUS["gif_without_trailer_byte"][1]]))
    assert out["probabilities"].shape == (3, len(CLASS_NAMES))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"image_bytes\[0\]: not a JPEG/PNG/GIF/BMP image"):
        serve(image_bytes=tf.constant([CORPUS["tiff"][1]]))

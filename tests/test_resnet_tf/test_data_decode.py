"""Robust decoding: good files of every supported kind decode like PIL, bad
files are dropped, counted and named, and an epoch never stops on them."""

import io
import logging
import struct
import threading
import zlib

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from conftest import shared_data
from resnet_tf.data import decode
from resnet_tf.data.decode import REASONS, SkipCounter, decode_and_filter, decode_image

H, W = 24, 36


def gradient(height=H, width=W):
    """A smooth RGB uint8 image, so JPEG's error stays small."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1),
                     (x + y) * 255 // (height + width - 2)], -1).astype(np.uint8)


def encode(image, fmt, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def png_rgb16(array):
    """A 16-bit RGB PNG (PIL can't write one): uint16 [H, W, 3] -> bytes."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    height, width, _ = array.shape
    rows = b"".join(b"\x00" + array[r].astype(">u2").tobytes() for r in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def pil_rgb(data):
    return np.asarray(PIL.Image.open(io.BytesIO(data)).convert("RGB"))


def animated_gif():
    frames = [PIL.Image.fromarray(np.roll(gradient(), 7 * i, axis=1)).quantize(32)
              for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50)
    data = buffer.getvalue()
    assert PIL.Image.open(io.BytesIO(data)).n_frames == 3
    return data, pil_rgb(data)  # PIL opens at the first frame


def top_down_bmp():
    """A 24-bit BMP stored top row first (negative height)."""
    data = bytearray(encode(PIL.Image.fromarray(gradient()), "BMP"))
    offset = struct.unpack("<I", data[10:14])[0]
    row = (24 * W + 31) // 32 * 4
    rows = [data[offset + r * row: offset + (r + 1) * row] for r in range(H)]
    data[22:26] = struct.pack("<i", -H)
    data[offset:] = b"".join(reversed(rows))
    return bytes(data), gradient()


def good_files():
    """name -> (file name, bytes, expected uint8 [H, W, 3], max mean abs diff)."""
    rgb = PIL.Image.fromarray(gradient())
    gray16 = (np.mgrid[0:H, 0:W][1] * 1800 + 7).astype(np.uint16)
    rgb16 = gradient().astype(np.uint16) * 257 + np.arange(3, dtype=np.uint16)
    files = {}

    def add(name, filename, data, expected=None, tol=0.0):
        files[name] = (filename, data, pil_rgb(data) if expected is None else expected, tol)

    # Mean abs diff < 2 is the requirement for JPEG (decoder rounding may
    # differ); with INTEGER_ACCURATE it matches PIL (both libjpeg ISLOW).
    add("rgb_jpeg", "rgb.jpg", encode(rgb, "JPEG", quality=90), tol=2)
    add("progressive_jpeg", "prog.jpeg", encode(rgb, "JPEG", progressive=True), tol=2)
    add("gray_jpeg", "gray.jpg", encode(rgb.convert("L"), "JPEG"), tol=2)
    add("cmyk_jpeg", "cmyk.jpg", encode(rgb.convert("CMYK"), "JPEG"), tol=2)
    add("rgb_png", "rgb.png", encode(rgb, "PNG"))
    add("rgba_png", "rgba.png", encode(PIL.Image.fromarray(
        np.dstack([gradient(), gradient()[..., :1]])), "PNG"))
    add("gray_alpha_png", "la.png", encode(rgb.convert("LA"), "PNG"))
    add("palette_png", "palette.png", encode(rgb.quantize(16), "PNG"))
    add("palette_transparent_png", "palette_t.png",
        encode(rgb.quantize(16), "PNG", transparency=3))
    # 16-bit samples keep their high byte (libpng's strip_16).
    add("gray16_png", "gray16.png", encode(PIL.Image.fromarray(gray16), "PNG"),
        np.repeat((gray16 >> 8).astype(np.uint8)[..., None], 3, -1))
    add("rgb16_png", "rgb16.png", png_rgb16(rgb16), (rgb16 >> 8).astype(np.uint8))
    add("animated_gif", "anim.gif", *animated_gif())
    add("bmp24", "rgb.bmp", encode(rgb, "BMP"))
    add("bmp32", "rgba.bmp", encode(PIL.Image.fromarray(
        np.dstack([gradient(), gradient()[..., :1]])), "BMP"))
    # TF's own decode_bmp returns palette indices as gray for these.
    add("bmp8_palette", "palette.bmp", encode(rgb.quantize(16), "BMP"))
    add("bmp8_gray", "gray.bmp", encode(rgb.convert("L"), "BMP"))
    add("bmp_top_down", "topdown.bmp", *top_down_bmp())
    add("bmp_trailing_bytes", "trailing.bmp", encode(rgb, "BMP") + b"\x00" * 6, gradient())
    # TF can't decode a 1-bit BMP; PIL can, and the rule accepts what either reads.
    add("bmp_1bit_pil", "mono.bmp", encode(rgb.convert("1"), "BMP"))
    return files


def bad_files():
    """name -> (file name, bytes, reason code)."""
    jpeg = encode(PIL.Image.fromarray(gradient(64, 64)), "JPEG")
    png = encode(PIL.Image.fromarray(gradient(64, 64)), "PNG")
    gif = encode(PIL.Image.fromarray(gradient(64, 64)).quantize(64), "GIF")
    bmp = encode(PIL.Image.fromarray(gradient(64, 64)), "BMP")
    return {
        "zero_bytes": ("empty.jpg", b"", decode.EMPTY),
        "text_as_jpeg": ("notes.jpg", b"this is not an image\n" * 20, decode.NOT_AN_IMAGE),
        "truncated_jpeg": ("half.jpg", jpeg[:len(jpeg) // 2], decode.TRUNCATED_JPEG),
        "truncated_png": ("half.png", png[:len(png) // 2], decode.TRUNCATED_PNG),
        "truncated_gif": ("half.gif", gif[:len(gif) // 2], decode.TRUNCATED_GIF),
        "truncated_bmp": ("half.bmp", bmp[:len(bmp) // 2], decode.TRUNCATED_BMP),
    }


def write(tmp_path, files):
    paths = []
    for filename, data, *_ in files.values():
        (tmp_path / filename).write_bytes(data)
        paths.append(str(tmp_path / filename))
    return paths


def file_dataset(paths):
    """The element format of resnet_tf.data.sources for folder sources."""
    dataset = tf.data.Dataset.from_tensor_slices(
        {"path": paths, "label": np.arange(len(paths), dtype=np.int32)})
    return dataset.map(lambda e: {**e, "image_bytes": tf.io.read_file(e["path"])})


GOOD = good_files()
BAD = bad_files()


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_file_decodes_like_pil(name):
    filename, data, expected, tol = GOOD[name]
    image, ok = decode_image(tf.constant(data), tf.constant(filename))
    assert bool(ok)
    assert image.dtype == tf.uint8 and image.shape == (H, W, 3)
    diff = np.abs(image.numpy().astype(int) - expected.astype(int)).mean()
    assert diff <= tol, f"{name}: mean abs diff {diff} from the reference"


def test_cmyk_jpeg_is_really_cmyk():
    data = GOOD["cmyk_jpeg"][1]
    assert PIL.Image.open(io.BytesIO(data)).mode == "CMYK"
    # and its colours survive: not a gray or inverted image
    image, _ = decode_image(data, "cmyk.jpg")
    assert np.abs(image.numpy().astype(int) - gradient()).mean() < 3


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_file_is_reported_not_decoded(name, caplog):
    filename, data, reason = BAD[name]
    fmt, code = decode.check_image_bytes(data)
    assert int(code) == reason
    counter = SkipCounter()
    with caplog.at_level(logging.WARNING, logger="resnet_tf.data"):
        image, ok = decode_image(tf.constant(data), tf.constant(filename), counter)
    assert not bool(ok)
    assert image.shape == (1, 1, 3) and image.dtype == tf.uint8
    assert counter.count == 1 and counter.paths == [filename]
    message = caplog.records[-1].getMessage()
    assert filename in message and REASONS[reason] in message
    assert "re-encode" in message


def test_every_truncation_is_caught_before_the_decoder():
    """Cutting a file anywhere gives a file the checks reject (so no decoder
    raises), for each format's end-of-file check."""
    for name in ("rgb_jpeg", "rgb_png", "animated_gif", "bmp8_palette"):
        data = GOOD[name][1]
        prefixes = tf.data.Dataset.range(len(data) + 1).map(
            lambda n: tf.strings.substr(tf.constant(data), 0, tf.cast(n, tf.int32)))
        codes = [int(code) for _, code in
                 prefixes.map(decode.check_image_bytes).as_numpy_iterator()]
        assert codes[-1] == decode.OK
        assert decode.OK not in codes[:-1], f"{name}: a prefix passes the checks"


def test_mixed_dataset_yields_exactly_the_good_files(tmp_path, caplog):
    good = write(tmp_path, GOOD)
    bad = write(tmp_path, BAD)
    # Passes the checks (magic, EOI) but fails inside the decoder (TF's and
    # PIL's): dropped, and counted and named like the others.
    corrupt = tmp_path / "corrupt_inside.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + b"garbage!" * 40 + b"\xff\xd9")
    paths = []
    for i in range(max(len(good), len(bad))):  # interleave good and bad
        paths += good[i:i + 1] + bad[i:i + 1]
        if i == 3:
            paths.append(str(corrupt))
    counter = SkipCounter()
    with caplog.at_level(logging.WARNING, logger="resnet_tf.data"):
        out = list(decode_and_filter(file_dataset(paths), counter).as_numpy_iterator())
    assert [e["path"].decode() for e in out] == good  # order kept (deterministic default)
    assert [e["label"] for e in out] == [paths.index(p) for p in good]
    assert all(e["image"].shape == (H, W, 3) and e["image"].dtype == np.uint8 for e in out)
    assert "image_bytes" not in out[0]
    assert counter.count == len(bad) + 1
    assert sorted(counter.paths) == sorted(bad + [str(corrupt)])
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "resnet_tf.data")
    for path in bad + [str(corrupt)]:
        assert path in logged
    assert counter.by_reason[decode.REASON_KEYS[decode.CORRUPT]] == 1


def test_decode_and_filter_keeps_static_shapes(tmp_path):
    dataset = decode_and_filter(file_dataset(write(tmp_path, GOOD)[:2]), SkipCounter(),
                                deterministic=False)
    spec = dataset.element_spec
    assert spec["image"].shape.as_list() == [None, None, 3]
    assert spec["image"].dtype == tf.uint8
    assert spec["label"].dtype == tf.int32 and "image_bytes" not in spec


def test_decode_image_in_a_graph():
    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def run(contents):
        return decode_image(contents, "x")
    image, ok = run.get_concrete_function().structured_outputs
    assert image.shape.as_list() == [None, None, 3] and ok.shape.rank == 0
    image, ok = run(tf.constant(GOOD["palette_png"][1]))
    assert bool(ok) and image.shape == (H, W, 3)
    image, ok = run(tf.constant(BAD["truncated_jpeg"][1]))
    assert not bool(ok) and image.shape == (1, 1, 3)


def test_skip_counter_is_thread_safe_and_bounded(caplog):
    counter = SkipCounter(max_paths=5)
    with caplog.at_level(logging.ERROR, logger="resnet_tf.data"):  # quiet
        threads = [threading.Thread(target=lambda k=k: [counter.add(f"f{k}_{i}", "empty file")
                                                      for i in range(100)])
                   for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert counter.count == 400
    assert len(counter.paths) == 5
    assert counter.reset() == 400
    assert counter.count == 0 and len(counter.paths) == 5


def test_every_hymenoptera_file_decodes():
    root = shared_data("hymenoptera/hymenoptera_data")
    paths = sorted(str(p) for p in root.glob("*/*/*") if p.is_file())
    assert len(paths) >= 398
    counter = SkipCounter()
    out = {e["path"].decode(): e["image"]
           for e in decode_and_filter(file_dataset(paths), counter).as_numpy_iterator()}
    assert counter.count == 0
    assert sorted(out) == paths
    for path, image in out.items():
        width, height = PIL.Image.open(path).size
        assert image.shape == (height, width, 3), path
    gif = str(root / "train/ants/imageNotFound.gif")
    np.testing.assert_array_equal(out[gif], pil_rgb(open(gif, "rb").read()))
    for path in paths[::100]:  # a few JPEGs pixel for pixel
        diff = np.abs(out[path].astype(int) - pil_rgb(open(path, "rb").read())).mean()
        assert diff < 2, path

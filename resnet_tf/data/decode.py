"""Robust image decoding for tf.data: bad files are skipped and counted.

One unreadable file among a million must not end an epoch. ``decode_image``
first checks the encoded bytes in-graph (magic number, end-of-file marker,
BMP header), and runs a decoder only on bytes that pass, inside ``tf.cond``,
so the common bad files (empty, not an image, cut short by an interrupted
copy) never reach a decoder that would raise. ``decode_and_filter`` drops the
bad elements and reports each one, by path and reason, to a ``SkipCounter``.

Formats (all decoded to uint8 [H, W, 3], RGB):

- JPEG: baseline and progressive; grayscale is repeated to 3 channels; CMYK
  is converted to RGB by TF's own decoder (tested with the Adobe-style
  inverted CMYK that Photoshop and PIL write: identical to PIL's
  conversion). Decoded with ``dct_method="INTEGER_ACCURATE"`` (libjpeg's
  ISLOW, what PIL uses; TF's default is a faster, less exact DCT), which
  makes the pixels equal to PIL's. EXIF orientation is ignored, as by PIL
  without ``ImageOps.exif_transpose``.
- PNG: gray, gray+alpha, palette (with or without tRNS), RGB, RGBA; alpha is
  dropped (not composited). 16-bit samples become 8-bit by keeping the high
  byte (``v >> 8``), which differs from exact rounding ``round(v / 257)`` by
  at most 1.
- GIF: the first frame only (animations are not expanded).
- BMP: uncompressed 8-bit (palette), 24-bit and 32-bit (alpha or padding byte
  dropped), bottom-up or top-down. TF's ``decode_bmp`` ignores the colour
  table of 8-bit BMPs (it returns the palette indices as gray levels), so
  8-bit BMPs are decoded here as indices and looked up in the colour table
  in-graph. 1-, 4- and 16-bit and RLE-compressed BMPs are rejected as
  unsupported (TF cannot decode them). TF also insists that a BMP's size is
  exactly header + rows; trailing bytes are cut off before decoding.

Size: a file whose header claims more than ``MAX_PIXELS`` pixels (about
179 million, 537 MB as RGB: where PIL refuses a "decompression bomb" and
TF's JPEG decoder stops) is skipped as too large before any decoder
allocates for it. The size is read from the PNG IHDR, the GIF logical
screen, the BMP header, and the JPEG frame header (SOFn, found by walking
the marker segments in-graph).

Limits: the checks catch files that are empty, of an unknown format,
truncated (the end-of-file marker is missing) or too large. A file that passes them and
still fails inside a decoder (corrupt data in the middle of the file) is
dropped by ``decode_and_filter``'s ``ignore_errors`` safety net, which TF
logs (without the file's path) but which is not counted. The checks are
strict where TF would be lenient: giflib decodes a GIF that lacks only its
final trailer byte, but such a file is reported as truncated. WebP and
other formats are reported as "not a JPEG/PNG/GIF/BMP image". An animated
GIF is decoded whole before its first frame is kept (TF's decoder), so only
its frame size, not its frame count, is checked.
"""

import logging

import tensorflow as tf

from resnet_tf.data import report as reasons
from resnet_tf.data.report import SkipReport

logger = logging.getLogger("resnet_tf.data")

# The functions given to tf.data here are plain tensor code (tf.cond, no
# Python control flow on tensors), so AutoGraph has nothing to convert; it
# would only warn that it cannot read the source of lambdas.
graph_fn = tf.autograph.experimental.do_not_convert

# Format codes returned by ``check_image_bytes``.
JPEG, PNG, GIF, BMP = 0, 1, 2, 3
UNKNOWN_FORMAT = -1

# Reason codes returned by ``check_image_bytes``; ``REASONS[code]`` is the
# message reported for a skipped file.
OK = 0
EMPTY = 1
NOT_AN_IMAGE = 2
TRUNCATED_JPEG = 3
TRUNCATED_PNG = 4
TRUNCATED_GIF = 5
TRUNCATED_BMP = 6
UNSUPPORTED_BMP = 7
TOO_LARGE = 8

# PIL's decompression-bomb limit (2 * Image.MAX_IMAGE_PIXELS), which is also
# 2**29 bytes of RGB: the size at which TF's JPEG decoder gives up.
MAX_PIXELS = 2 ** 29 // 3

# JPEG and PNG writers sometimes append bytes after the end marker (camera
# maker notes, padding to a block size), so the marker is searched for in a
# window at the end rather than required at the very end. Inside JPEG
# entropy-coded data FF is always followed by 00 or a restart marker, so a
# stray FF D9 cannot occur there; 1 KiB keeps an EXIF thumbnail's EOI at the
# start of a file out of reach for all but tiny files.
TAIL_WINDOW = 1024

REASONS = (
    "ok",
    "empty file",
    "not a JPEG/PNG/GIF/BMP image (no known magic number at its start)",
    f"truncated JPEG (no end-of-image marker FF D9 in its last {TAIL_WINDOW} bytes)",
    f"truncated PNG (no complete IEND chunk in its last {TAIL_WINDOW} bytes)",
    "truncated GIF (does not end with a block terminator and the 0x3B trailer)",
    "truncated BMP (shorter than its header's width, height and bit depth need)",
    "unsupported BMP (only uncompressed 8-, 24- and 32-bit BMPs up to 65535 "
    "pixels a side can be decoded)",
    f"too large (its header claims more than {MAX_PIXELS} pixels; decoding it "
    "would take gigabytes)",
)
# ``REASON_KEYS[code]``: the key a skip is counted under (``report``).
REASON_KEYS = (
    "ok", reasons.EMPTY, reasons.NOT_AN_IMAGE, reasons.TRUNCATED_JPEG,
    reasons.TRUNCATED_PNG, reasons.TRUNCATED_GIF, reasons.TRUNCATED_BMP,
    reasons.UNSUPPORTED_BMP, reasons.TOO_LARGE,
)

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# The IEND chunk's type and its (constant) CRC: libpng fails without the CRC.
_PNG_END = b"IEND\xaeB`\x82"
_HEADER_BYTES = 64  # covers the 14-byte BMP file header + 40-byte info header
_MAX_BMP_SIDE = 65535  # keeps the size arithmetic far from int64 overflow


def _fixed_bytes(contents, pos, length):
    """``length`` bytes of ``contents`` from ``pos`` as uint8 [length].

    Bytes past the end of ``contents`` read as zero, so headers of short
    files can be parsed without a shape error. ``pos`` must be within
    ``[0, len(contents)]``.
    """
    chunk = tf.strings.substr(contents, pos, length)
    chunk = tf.strings.join([chunk, tf.constant(b"\x00" * length)])
    chunk = tf.strings.substr(chunk, 0, length)
    return tf.reshape(tf.io.decode_raw(chunk, tf.uint8), [length])


def _tail(contents):
    """The last ``TAIL_WINDOW`` bytes as uint8 [TAIL_WINDOW], zero-padded on
    the left for shorter files (zeros cannot fake an FF D9 or IEND marker)."""
    padded = tf.strings.join([tf.constant(b"\x00" * TAIL_WINDOW), contents])
    start = tf.strings.length(padded) - TAIL_WINDOW
    chunk = tf.strings.substr(padded, start, TAIL_WINDOW)
    return tf.reshape(tf.io.decode_raw(chunk, tf.uint8), [TAIL_WINDOW])


def _contains(haystack, pattern):
    """Whether bytes ``pattern`` occur in uint8 [N] ``haystack`` (static N)."""
    n, m = haystack.shape[0], len(pattern)
    found = tf.ones([n - m + 1], tf.bool)
    for j, byte in enumerate(pattern):
        found &= tf.equal(haystack[j:n - m + 1 + j], byte)
    return tf.reduce_any(found)


def _le_uint(header, pos, size):
    """Little-endian unsigned integer of ``size`` bytes at ``pos``, int64."""
    value = tf.constant(0, tf.int64)
    for k in range(size):
        value += tf.cast(header[pos + k], tf.int64) * 256 ** k
    return value


def _be_uint(header, pos, size):
    """Big-endian unsigned integer of ``size`` bytes at ``pos``, int64."""
    value = tf.constant(0, tf.int64)
    for k in range(size):
        value = value * 256 + tf.cast(header[pos + k], tf.int64)
    return value


_MAX_JPEG_SEGMENTS = 256  # marker segments before the frame header (APPn, DQT...)


def _jpeg_size(contents):
    """(height, width) int64 from the first SOFn frame header; 0 where it is
    not found (left to the decoder). Walks the marker segments from SOI."""
    length = tf.strings.length(contents)

    def cond(pos, height, width, i):
        return (i < _MAX_JPEG_SEGMENTS) & (height < 0) & (pos + 9 <= length)

    def body(pos, height, width, i):
        seg = _fixed_bytes(contents, pos, 9)  # FF marker Lh Ll | P Yh Yl Xh Xl
        marker = tf.cast(seg[1], tf.int32)
        is_marker = tf.equal(seg[0], 0xFF)
        fill = is_marker & tf.equal(marker, 0xFF)  # fill bytes before a marker
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
        is_sof = (is_marker & (marker >= 0xC0) & (marker <= 0xCF) & (marker != 0xC4)
                  & (marker != 0xC8) & (marker != 0xCC))
        seg_len = tf.cast(_be_uint(seg, 2, 2), tf.int32)
        # Not a marker, the scan data began (SOS), or a bad length: give up.
        stop = ~fill & (~is_marker | tf.equal(marker, 0xDA) | tf.equal(marker, 0xD9)
                        | (seg_len < 2))
        height = tf.where(is_sof, _be_uint(seg, 5, 2),
                          tf.where(stop, tf.constant(0, tf.int64), height))
        width = tf.where(is_sof, _be_uint(seg, 7, 2), width)
        pos = tf.where(fill, pos + 1, pos + 2 + seg_len)
        return pos, height, width, i + 1

    unknown = tf.constant(-1, tf.int64)
    _, height, width, _ = tf.while_loop(
        cond, body, (tf.constant(2), unknown, unknown, tf.constant(0)))
    return tf.maximum(height, 0), tf.maximum(width, 0)


def header_size(contents, fmt):
    """int64 [2] (height, width) that the header of encoded image bytes
    claims, read without decoding; zeros where unknown (an unknown format,
    a JPEG whose frame header isn't found before the scan data).

    Args:
        contents: tf.string scalar.
        fmt: int32 scalar, from ``check_image_bytes``.
    """
    def png():
        header = _fixed_bytes(contents, 0, 24)  # signature, IHDR length and type
        return tf.stack([_be_uint(header, 20, 4), _be_uint(header, 16, 4)])

    def gif():
        header = _fixed_bytes(contents, 0, 10)  # logical screen size
        return tf.stack([_le_uint(header, 8, 2), _le_uint(header, 6, 2)])

    def bmp():
        fields = _bmp_fields(_fixed_bytes(contents, 0, _HEADER_BYTES))
        return tf.stack([fields["abs_height"], fields["width"]])

    def jpeg():
        return tf.stack(_jpeg_size(contents))

    return tf.switch_case(tf.where(fmt == UNKNOWN_FORMAT, 4, fmt), [
        jpeg, png, gif, bmp, lambda: tf.zeros([2], tf.int64)])


def _header_pixels(contents, fmt):
    size = header_size(contents, fmt)
    return size[0] * size[1]


def _bmp_fields(header):
    """The BMP header fields that decoding depends on, as int64 scalars."""
    height = _le_uint(header, 22, 4)
    height = tf.where(height >= 2 ** 31, height - 2 ** 32, height)  # signed
    return dict(
        data_offset=_le_uint(header, 10, 4),
        info_size=_le_uint(header, 14, 4),
        width=_le_uint(header, 18, 4),
        abs_height=tf.abs(height),
        bpp=_le_uint(header, 28, 2),
        compression=_le_uint(header, 30, 4),
        colors_used=_le_uint(header, 46, 4),
    )


def _bmp_palette_size(fields):
    # biClrUsed == 0 means the full 2**bpp table (256 for 8-bit).
    return tf.where(fields["colors_used"] == 0, tf.constant(256, tf.int64),
                    fields["colors_used"])


def _bmp_data_size(fields):
    """Bytes TF's decoder needs: data offset + rows padded to 4 bytes."""
    row = (fields["bpp"] * fields["width"] + 31) // 32 * 4
    return fields["data_offset"] + row * fields["abs_height"]


def _bmp_reason(contents, header):
    fields = _bmp_fields(header)
    bpp, compression = fields["bpp"], fields["compression"]
    # BI_RGB (0) for all; BI_BITFIELDS (3) only with 32 bits, whose default
    # masks are the BGRA layout TF assumes. RLE (1, 2) is not decodable.
    supported = (
        (fields["info_size"] >= 40)
        & ((bpp == 8) | (bpp == 24) | (bpp == 32))
        & ((compression == 0) | ((compression == 3) & (bpp == 32)))
        & (fields["width"] > 0) & (fields["width"] <= _MAX_BMP_SIDE)
        & (fields["abs_height"] > 0) & (fields["abs_height"] <= _MAX_BMP_SIDE)
        & ((bpp != 8) | (_bmp_palette_size(fields) <= 256))
    )
    palette_end = 14 + fields["info_size"] + 4 * _bmp_palette_size(fields)
    length = tf.cast(tf.strings.length(contents), tf.int64)
    complete = (length >= _bmp_data_size(fields)) & (
        (bpp != 8) | (palette_end <= fields["data_offset"]))
    return tf.where(supported, tf.where(complete, OK, TRUNCATED_BMP), UNSUPPORTED_BMP)


def check_image_bytes(contents):
    """Classify encoded image bytes without decoding them.

    Args:
        contents: tf.string scalar, the bytes of an image file.

    Returns:
        ``(fmt, reason)``: int32 scalars. ``fmt`` is one of ``JPEG, PNG, GIF,
        BMP`` or ``UNKNOWN_FORMAT``; ``reason`` is ``OK`` or the code of the
        first problem found (``REASONS[reason]`` describes it). Never raises.
    """
    contents = tf.convert_to_tensor(contents, tf.string)
    length = tf.strings.length(contents)
    magic = tf.strings.substr(contents, 0, 8)
    is_jpeg = tf.strings.substr(magic, 0, 3) == _JPEG_MAGIC
    is_png = magic == _PNG_MAGIC
    gif_magic = tf.strings.substr(magic, 0, 6)
    is_gif = (gif_magic == b"GIF87a") | (gif_magic == b"GIF89a")
    is_bmp = tf.strings.substr(magic, 0, 2) == b"BM"
    fmt = tf.where(is_jpeg, JPEG, tf.where(is_png, PNG, tf.where(
        is_gif, GIF, tf.where(is_bmp, BMP, UNKNOWN_FORMAT))))

    tail = _tail(contents)
    # A GIF ends with the trailer 0x3B right after the 0x00 terminator of
    # its last data or extension block.
    gif_complete = tf.reduce_all(tf.equal(tail[-2:], tf.constant([0, 0x3B], tf.uint8)))
    reason = tf.switch_case(
        tf.where(fmt == UNKNOWN_FORMAT, 4, fmt),
        [
            lambda: tf.where(_contains(tail, b"\xff\xd9"), OK, TRUNCATED_JPEG),
            lambda: tf.where(_contains(tail, _PNG_END), OK, TRUNCATED_PNG),
            lambda: tf.where(gif_complete, OK, TRUNCATED_GIF),
            lambda: _bmp_reason(contents, _fixed_bytes(contents, 0, _HEADER_BYTES)),
            lambda: tf.constant(NOT_AN_IMAGE),
        ],
    )
    # Only complete files are measured, so a header read never runs past
    # the bytes there are.
    too_large = tf.cond(
        tf.equal(reason, OK),
        lambda: _header_pixels(contents, fmt) > MAX_PIXELS,
        lambda: tf.constant(False))
    reason = tf.where(too_large, TOO_LARGE, reason)
    reason = tf.where(length == 0, EMPTY, reason)
    return fmt, tf.cast(reason, tf.int32)


def _decode_bmp(contents):
    header = _fixed_bytes(contents, 0, _HEADER_BYTES)
    fields = _bmp_fields(header)
    # TF's decoder rejects any size other than header + rows exactly.
    contents = tf.strings.substr(contents, tf.constant(0, tf.int64), _bmp_data_size(fields))

    def palette_lookup():
        indices = tf.io.decode_bmp(contents, channels=0)[..., 0]  # 8-bit: [H, W, 1]
        size = tf.cast(_bmp_palette_size(fields), tf.int32)
        start = tf.cast(14 + fields["info_size"], tf.int32)
        table = tf.io.decode_raw(tf.strings.substr(contents, start, 4 * size), tf.uint8)
        rgb = tf.reverse(tf.reshape(table, [-1, 4])[:, :3], axis=[1])  # BGRx -> RGB
        rgb = tf.pad(rgb, [[0, 256 - size], [0, 0]])  # out-of-table indices -> black
        return tf.gather(rgb, tf.cast(indices, tf.int32))

    return tf.cond(fields["bpp"] == 8, palette_lookup,
                   lambda: tf.io.decode_bmp(contents, channels=3))


def _decode_valid(contents, fmt):
    image = tf.switch_case(fmt, [
        lambda: tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE"),
        # libpng strips 16-bit samples to their high byte (v >> 8).
        lambda: tf.io.decode_png(contents, channels=3, dtype=tf.uint8),
        # decode_gif decodes every frame; fine for the rare animated file.
        lambda: tf.io.decode_gif(contents)[0],
        lambda: _decode_bmp(contents),
    ])
    return tf.ensure_shape(image, [None, None, 3])


def decode_image(contents, path, counter=None):
    """Decode image file bytes to RGB, or report why they can't be.

    Args:
        contents: tf.string scalar, the encoded file (JPEG, PNG, GIF, BMP;
            see the module docstring for the variants).
        path: tf.string scalar naming the file; used only in messages.
        counter: optional ``SkipCounter``; a bad file is reported to it (with
            ``tf.py_function``, in the bad branch only, so good images never
            enter Python).

    Returns:
        ``(image, ok)``: ``image`` uint8 [H, W, 3], RGB in [0, 255], and
        ``ok`` a bool scalar. When ``ok`` is False, ``image`` is zeros of
        shape [1, 1, 3] and no decoder has run on the bytes.
    """
    contents = tf.convert_to_tensor(contents, tf.string)
    path = tf.convert_to_tensor(path, tf.string)
    fmt, reason = check_image_bytes(contents)

    def bad():
        ok = tf.constant(False)
        if counter is not None:
            message = tf.gather(tf.constant(REASONS), reason)
            ok = tf.py_function(_report_to(counter), [path, message, reason], tf.bool)
            ok = tf.ensure_shape(ok, [])
        return tf.zeros([1, 1, 3], tf.uint8), ok

    image, ok = tf.cond(reason == OK, lambda: (_decode_valid(contents, fmt), tf.constant(True)),
                        bad)
    return tf.ensure_shape(image, [None, None, 3]), ok


def _report_to(counter):
    def report(path, message, reason):
        counter.add(path.numpy().decode("utf-8", "replace"),
                    message.numpy().decode("utf-8"), REASON_KEYS[int(reason)])
        return False  # the decode result's "ok", so the report can't be pruned
    return report


class SkipCounter(SkipReport):
    """Counts and names files skipped by ``decode_and_filter``; thread-safe.

    tf.data calls ``add`` from its own threads. Each skip logs a warning on
    the ``resnet_tf.data`` logger naming the file and the reason, and is
    counted under its reason key (``REASON_KEYS``; see ``SkipReport`` for
    ``count``, ``paths``, ``reset()``, ``by_reason`` and ``total``).
    """

    def add(self, path, message, reason=reasons.UNREADABLE_IMAGE, key=None):
        """Record one skipped file and log why. ``path``, ``message``: str."""
        super().add(path, message, reason, key)

    def _warn(self, where, message):
        logger.warning("Skipping %s: %s. Delete or re-encode the file (e.g. save it "
                       "again as JPEG or PNG) to stop this warning.", where, message)

    def __repr__(self):
        return f"SkipCounter(count={self.count}, by_reason={self.by_reason})"


def filter_valid(dataset, counter, deterministic=None):
    """Drop elements whose ``"image_bytes"`` fail ``check_image_bytes``.

    The bytes stay encoded (for a later decode that needs them, such as the
    windowed JPEG decode of the ImageNet-style training view); each dropped
    file is reported to ``counter`` (in the bad branch only). Adds
    ``"format"`` (int32, ``JPEG``/``PNG``/``GIF``/``BMP``) to each element.
    """

    def check(element):
        element = dict(element)
        fmt, reason = check_image_bytes(element["image_bytes"])
        element["format"] = fmt
        ok = reason == OK
        if counter is not None:
            def report():
                message = tf.gather(tf.constant(REASONS), reason)
                flag = tf.py_function(_report_to(counter),
                                      [element["path"], message, reason], tf.bool)
                return tf.ensure_shape(flag, [])
            ok = tf.cond(ok, lambda: tf.constant(True), report)
        return element, ok

    dataset = dataset.map(graph_fn(check), num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=deterministic)
    dataset = dataset.filter(graph_fn(lambda element, ok: ok))
    return dataset.map(graph_fn(lambda element, ok: element))


def decode_checked(contents, fmt):
    """Decode bytes that passed ``check_image_bytes``: uint8 [H, W, 3]."""
    return tf.ensure_shape(_decode_valid(contents, fmt), [None, None, 3])


def decode_and_filter(dataset, counter, deterministic=None):
    """Decode ``"image_bytes"`` to ``"image"``, dropping files that can't be.

    Args:
        dataset: tf.data.Dataset of dicts with at least ``"image_bytes"``
            (tf.string scalar, encoded file) and ``"path"`` (tf.string
            scalar); other keys (e.g. ``"label"``) pass through.
        counter: ``SkipCounter`` told about each dropped file (or None).
        deterministic: passed to ``Dataset.map``; None follows
            ``tf.data.Options.deterministic`` (True by default).

    Returns:
        The dataset of the same dicts with ``"image"`` (uint8 [H, W, 3], RGB
        in [0, 255]) in place of ``"image_bytes"``, without the bad files.

    Files that pass ``check_image_bytes`` but still fail in the decoder
    (corruption inside the data) are dropped by ``ignore_errors``: TF logs
    a warning with the error, but ``counter`` does not see them. The
    pipeline needs a Python interpreter for the counter (``tf.py_function``),
    so it can't be serialised to the tf.data service with a counter.
    """

    def decode(element):
        element = dict(element)
        element["image"] = decode_checked(element.pop("image_bytes"),
                                          element.pop("format"))
        return element

    dataset = filter_valid(dataset, counter, deterministic)
    dataset = dataset.map(graph_fn(decode), num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=deterministic)
    return dataset.ignore_errors(log_warning=True)


def read_image_file(path):
    """Eagerly read and decode one image file for prediction.

    Returns:
        ``(image uint8 [H, W, 3], None)``, or ``(None, reason)`` when the file
        cannot be read or decoded (callers report it per file, not raise).
    """
    try:
        contents = tf.io.read_file(path)
    except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as e:
        return None, f"cannot read: {e.message}"
    image, ok = decode_image(contents, tf.constant(path))
    if not bool(ok):
        return None, "not a readable JPEG/PNG/GIF/BMP image"
    return image, None

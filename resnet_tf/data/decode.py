"""Robust image decoding for tf.data: bad files are skipped and counted.

One unreadable file among a million must not end an epoch, and none may be
lost silently. The rule: a file is accepted when TensorFlow's or PIL's
decoder reads it fully, and rejected, named and counted otherwise.

- ``check_image_bytes`` first classifies the encoded bytes in-graph (magic
  number, end-of-file marker, BMP header, header size), so the common bad
  files (empty, not an image, cut short by an interrupted copy) are known
  without a decoder, and a decompression bomb never reaches one.
- Bytes TF's decoders may read (those that pass, and those whose end
  marker is missing: TF reads a JPEG with a long trailer after its EOI, a
  GIF without its last trailer byte) are decoded in the graph inside
  ``attempt``, an in-graph try: a decoder error on corrupt data (the
  checks can't see inside the entropy-coded data or the Huffman tables) is
  caught there instead of ending the epoch.
- The rest goes to ``fallback_decode`` in Python (``tf.py_function``, in
  that branch only, so good images never enter Python): PIL, which also
  reads formats TF doesn't (TIFF, WebP, 1-, 4- and 16-bit BMP ...). A file
  PIL can't read either is rejected with the checks' reason, or
  ``corrupt_image`` when they found nothing wrong, and the message says
  what each decoder said.

``decode_and_filter`` / ``map_decoded`` drop the rejected elements and report
each one, by path and reason, to a ``SkipCounter``; ``decode_bytes`` and
``read_image_file`` apply the same rule eagerly (``predict``); the serving
export applies it with TF's decoders alone (``resnet_tf.export``).
tests/test_faults_decoding.py holds the rule to the decoders themselves on
a corpus of odd and broken files.

Formats (all decoded to uint8 [H, W, 3], RGB):

- JPEG: baseline and progressive; grayscale is repeated to 3 channels; CMYK
  is converted to RGB by TF's own decoder (tested with the Adobe-style
  inverted CMYK that Photoshop and PIL write: identical to PIL's
  conversion). Decoded with ``dct_method="INTEGER_ACCURATE"`` (libjpeg's
  ISLOW, what PIL uses; TF's default is a faster, less exact DCT), which
  makes the pixels equal to PIL's.
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

EXIF orientation (JPEG APP1 "Exif" segment, PNG eXIf chunk) is applied,
as viewers and annotation tools (labelImg, CVAT, Label Studio) show the
image: a phone photo stored 96x64 with Orientation 6 decodes to 64x96,
equal to PIL's ``ImageOps.exif_transpose`` for all eight orientations. The
tag is found by walking the file's segments or chunks in-graph
(``exif_orientation``), so training, evaluation, ``predict`` and the
exported serving signatures all decode the same pixels.

Size: a file whose header claims more than ``MAX_PIXELS`` pixels (about
179 million, 537 MB as RGB: where PIL refuses a "decompression bomb" and
TF's JPEG decoder stops) is skipped as too large before any decoder
allocates for it. The size is read from the PNG IHDR, the GIF logical
screen, the BMP header, and the JPEG frame header (SOFn, found by walking
the marker segments in-graph).

Limits: "fully" is each decoder's own verdict; libjpeg, in both, reads
damaged entropy-coded data with a warning (gray or smeared blocks), so such
a file is accepted, as either library would. The size cap is the one
deliberate exception to "TF or PIL reads it": a file over ``MAX_PIXELS`` is
rejected before any decoder runs (PIL refuses it too). Only the decoder ops
run inside ``attempt`` (``try_decode``): ops in its one-element dataset run
without the graph optimisations of the pipeline's own functions, loops some
2x slower, so everything that can't raise stays outside. An animated GIF is
decoded whole before its first frame is kept (TF's decoder), so only its
frame size, not its frame count, is checked. PIL output follows the TF
path's conventions: the first frame, EXIF orientation applied, alpha
dropped, 16-bit samples to their high byte.
"""

import functools
import io
import logging
import re

import numpy as np
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
CORRUPT = 9  # passed the checks, yet neither TF nor PIL decodes it

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
    "corrupt image data (its header and end marker are intact, but the decoder "
    "fails on it)",
)
# ``REASON_KEYS[code]``: the key a skip is counted under (``report``).
REASON_KEYS = (
    "ok", reasons.EMPTY, reasons.NOT_AN_IMAGE, reasons.TRUNCATED_JPEG,
    reasons.TRUNCATED_PNG, reasons.TRUNCATED_GIF, reasons.TRUNCATED_BMP,
    reasons.UNSUPPORTED_BMP, reasons.TOO_LARGE, reasons.CORRUPT,
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


# --- EXIF orientation ----------------------------------------------------------
# Cameras and phones store the sensor's pixels and record how to turn them
# for display in the EXIF Orientation tag (0x0112, in IFD0 of the TIFF
# structure inside a JPEG's APP1 "Exif" segment or a PNG's eXIf chunk).
# Viewers, browsers and annotation tools (labelImg, CVAT, Label Studio)
# show, and annotate, the turned image; so does every decode here.

ORIENTATION_TAG = 0x0112
# Values 1..8 (EXIF 2.3, Sec. 4.6.4): 1 as stored; 2 mirrored left-right;
# 3 turned 180 degrees; 4 mirrored top-bottom; 5 transposed (mirrored about
# the main diagonal); 6 turned 90 degrees clockwise; 7 transverse (mirrored
# about the anti-diagonal); 8 turned 90 degrees counter-clockwise. 5..8 swap
# height and width. Any other value is treated as 1, as PIL does.
ORIENTATION_SWAPS_SIDES = (5, 6, 7, 8)
_MAX_IFD_ENTRIES = 128  # IFD0 tags are sorted; Orientation (0x0112) comes early
_MAX_PNG_CHUNKS = 64  # chunks before the first IDAT (where eXIf is written)


def _exif_in_jpeg(contents):
    """(start, length) int32 of the TIFF block in the first APP1 "Exif"
    segment before the scan data (PIL's rule); (-1, 0) where there is none."""
    length = tf.strings.length(contents)

    def cond(pos, start, size, i):
        return (i < _MAX_JPEG_SEGMENTS) & tf.equal(start, -1) & (pos + 10 <= length)

    def body(pos, start, size, i):
        seg = _fixed_bytes(contents, pos, 10)  # FF marker Lh Ll "Exif\0\0"
        marker = tf.cast(seg[1], tf.int32)
        is_marker = tf.equal(seg[0], 0xFF)
        fill = is_marker & tf.equal(marker, 0xFF)
        seg_len = tf.cast(_be_uint(seg, 2, 2), tf.int32)
        is_exif = (is_marker & tf.equal(marker, 0xE1) & (seg_len >= 8 + 8)
                   & tf.reduce_all(tf.equal(seg[4:10], tf.constant(
                       list(b"Exif\x00\x00"), tf.uint8))))
        stop = ~fill & (~is_marker | tf.equal(marker, 0xDA) | tf.equal(marker, 0xD9)
                        | (seg_len < 2))
        start = tf.where(is_exif, pos + 10, tf.where(stop, -2, -1))
        size = tf.where(is_exif, seg_len - 8, size)
        pos = tf.where(fill, pos + 1, pos + 2 + seg_len)
        return pos, start, size, i + 1

    _, start, size, _ = tf.while_loop(
        cond, body, (tf.constant(2), tf.constant(-1), tf.constant(0), tf.constant(0)))
    found = start >= 0
    return tf.where(found, start, -1), tf.where(found, size, 0)


def _exif_in_png(contents):
    """(start, length) int32 of the eXIf chunk's data, looked for among the
    chunks before the first IDAT; (-1, 0) where there is none."""
    length = tf.strings.length(contents)
    exif_type = tf.constant(list(b"eXIf"), tf.uint8)
    idat_type = tf.constant(list(b"IDAT"), tf.uint8)

    def cond(pos, start, size, i):
        return (i < _MAX_PNG_CHUNKS) & tf.equal(start, -1) & (pos + 8 <= length)

    def body(pos, start, size, i):
        head = _fixed_bytes(contents, pos, 8)  # length (BE), type
        chunk_len = _be_uint(head, 0, 4)
        is_exif = tf.reduce_all(tf.equal(head[4:8], exif_type))
        # A length past the end of the file ends the walk, not the decode.
        stop = (tf.reduce_all(tf.equal(head[4:8], idat_type))
                | (chunk_len > tf.cast(length, tf.int64)))
        chunk_len = tf.cast(tf.minimum(chunk_len, tf.cast(length, tf.int64)), tf.int32)
        start = tf.where(is_exif, pos + 8, tf.where(stop, -2, -1))
        size = tf.where(is_exif, chunk_len, size)
        return pos + 12 + chunk_len, start, size, i + 1

    _, start, size, _ = tf.while_loop(
        cond, body, (tf.constant(8), tf.constant(-1), tf.constant(0), tf.constant(0)))
    found = start >= 0
    return tf.where(found, start, -1), tf.where(found, size, 0)


def _tiff_orientation(contents, start, size):
    """The Orientation value in IFD0 of the TIFF block ``contents[start:
    start + size]``: int32, 1 where absent, malformed or out of 1..8."""
    length = tf.strings.length(contents)

    def at(offset, n):  # n bytes at TIFF offset ``offset`` (zeros past the end)
        return _fixed_bytes(contents, tf.clip_by_value(start + offset, 0, length), n)

    header = at(0, 8)
    little = tf.equal(header[0], 0x49) & tf.equal(header[1], 0x49)  # "II"
    big = tf.equal(header[0], 0x4D) & tf.equal(header[1], 0x4D)  # "MM"

    def uint(b):  # [..., n] uint8 -> int64, in the block's byte order
        b = tf.cast(b, tf.int64)
        n = b.shape[-1]
        weights_le = tf.constant([256 ** k for k in range(n)], tf.int64)
        weights = tf.where(little, weights_le, tf.reverse(weights_le, [0]))
        return tf.reduce_sum(b * weights, axis=-1)

    magic_ok = (little | big) & tf.equal(uint(header[2:4]), 42)
    ifd = tf.cast(tf.minimum(uint(header[4:8]), 2 ** 30), tf.int32)
    count = tf.cast(uint(at(ifd, 2)), tf.int32)
    entries = tf.reshape(at(ifd + 2, 12 * _MAX_IFD_ENTRIES), [_MAX_IFD_ENTRIES, 12])
    tags, types = uint(entries[:, 0:2]), uint(entries[:, 2:4])
    # SHORT (3) is the tag's type; a LONG (4) is read too.
    values = tf.where(tf.equal(types, 3), uint(entries[:, 8:10]),
                      tf.where(tf.equal(types, 4), uint(entries[:, 8:12]), 0))
    index = tf.range(_MAX_IFD_ENTRIES)
    # Entries must lie inside the block: PIL reads no further.
    inside = (ifd + 2 + 12 * (index + 1)) <= size
    hit = (index < count) & inside & tf.equal(tags, ORIENTATION_TAG)
    value = tf.where(tf.reduce_any(hit), tf.gather(values, tf.argmax(tf.cast(hit, tf.int32))),
                     1)
    ok = magic_ok & (size >= 8) & (value >= 1) & (value <= 8)
    return tf.where(ok, tf.cast(value, tf.int32), 1)


def exif_orientation(contents, fmt):
    """The EXIF orientation of encoded image bytes, read in-graph.

    Args:
        contents: tf.string scalar that passed ``check_image_bytes``.
        fmt: its int32 format code.

    Returns:
        int32 scalar in 1..8 (see ``ORIENTATION_SWAPS_SIDES`` and the
        comment above it); 1 for GIF and BMP, for files without EXIF, and
        for an unreadable EXIF block. JPEG: the first APP1 "Exif" segment
        before the scan data (PIL's rule); PNG: an eXIf chunk before the
        first IDAT (where PIL, exiftool and libpng write it).
    """
    contents = tf.convert_to_tensor(contents, tf.string)

    def read(find):
        def run():
            start, size = find(contents)
            return tf.cond(start >= 0, lambda: _tiff_orientation(contents, start, size),
                           lambda: tf.constant(1))
        return run

    return tf.switch_case(tf.where((fmt == JPEG) | (fmt == PNG), fmt, 2), [
        read(_exif_in_jpeg), read(_exif_in_png), lambda: tf.constant(1)])


def apply_orientation(image, orientation):
    """Turn a decoded image as its EXIF orientation says, for display.

    Args:
        image: [H, W, C], any dtype, as stored in the file.
        orientation: int32 scalar, 1..8 (other values: unchanged).

    Returns:
        [H, W, C], or [W, H, C] for orientations 5..8: equal to PIL's
        ``ImageOps.exif_transpose``.
    """
    def transpose():
        return tf.transpose(image, [1, 0, 2])

    valid = (orientation >= 1) & (orientation <= 8)
    return tf.switch_case(tf.where(valid, orientation - 1, 0), [
        lambda: image,
        lambda: tf.reverse(image, [1]),  # 2: mirror left-right
        lambda: tf.reverse(image, [0, 1]),  # 3: 180 degrees
        lambda: tf.reverse(image, [0]),  # 4: mirror top-bottom
        transpose,  # 5
        lambda: tf.reverse(transpose(), [1]),  # 6: 90 degrees clockwise
        lambda: tf.reverse(transpose(), [0, 1]),  # 7: transverse
        lambda: tf.reverse(transpose(), [0]),  # 8: 90 degrees counter-clockwise
    ])


def display_size(contents, fmt):
    """int64 [2] (height, width) of the image as displayed: the header's
    size (``header_size``), swapped for EXIF orientations 5..8; zeros where
    the header doesn't say."""
    size = header_size(contents, fmt)
    swap = tf.reduce_any(tf.equal(exif_orientation(contents, fmt),
                                  tf.constant(ORIENTATION_SWAPS_SIDES)))
    return tf.where(swap, tf.reverse(size, [0]), size)


# TF's decoder of each format code (JPEG, PNG, GIF, BMP): the pixels as
# stored, uint8 [H, W, 3]. The only part of decoding that raises on bad data
# (what ``try_decode`` wraps in ``attempt``).
_DECODERS = (
    lambda contents: tf.io.decode_jpeg(contents, channels=3,
                                       dct_method="INTEGER_ACCURATE"),
    # libpng strips 16-bit samples to their high byte (v >> 8).
    lambda contents: tf.io.decode_png(contents, channels=3, dtype=tf.uint8),
    # decode_gif decodes every frame; fine for the rare animated file.
    lambda contents: tf.io.decode_gif(contents)[0],
    lambda contents: _decode_bmp(contents),
)


def _decode_pixels(contents, fmt):
    image = tf.switch_case(fmt, [lambda f=f: f(contents) for f in _DECODERS])
    return tf.ensure_shape(image, [None, None, 3])


def _decode_valid(contents, fmt):
    image = _decode_pixels(contents, fmt)
    image = apply_orientation(image, exif_orientation(contents, fmt))
    return tf.ensure_shape(image, [None, None, 3])


def decode_image(contents, path, counter=None):
    """Decode image file bytes to RGB by the rule (module docstring), or
    report why they can't be.

    Args:
        contents: tf.string scalar, the encoded file.
        path: tf.string scalar naming the file; used only in messages.
        counter: optional ``SkipCounter``; a file that neither TF nor PIL
            decodes fully is reported to it.

    Returns:
        ``(image, ok)``: ``image`` uint8 [H, W, 3], RGB in [0, 255], and
        ``ok`` a bool scalar. When ``ok`` is False, ``image`` is zeros of
        shape [1, 1, 3]. Good JPEG/PNG/GIF/BMP files are decoded by TF in
        the graph; only the rest enter Python (``tf.py_function``, in that
        branch only), so a graph holding this needs Python to run.
    """
    contents = tf.convert_to_tensor(contents, tf.string)
    path = tf.convert_to_tensor(path, tf.string)
    image, ok = _decode_in_graph(contents, path, counter)
    return tf.ensure_shape(image, [None, None, 3]), ok


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


def decode_checked(contents, fmt):
    """Decode bytes that passed ``check_image_bytes`` with TF's decoders:
    uint8 [H, W, 3]. Raises ``InvalidArgumentError`` (at run time) on data
    a decoder rejects; ``attempt`` catches that in-graph."""
    return tf.ensure_shape(_decode_valid(contents, fmt), [None, None, 3])


# --- the accept/reject rule: what TensorFlow or PIL decodes fully ------------------

# Checks whose verdict a decoder may overrule: TF's decoders read some files
# the end-marker checks call truncated (a JPEG with more than TAIL_WINDOW
# bytes after its EOI, a GIF without its last trailer byte).
_TF_MAY_DECODE = (OK, TRUNCATED_JPEG, TRUNCATED_PNG, TRUNCATED_GIF)


def tf_may_decode(reason):
    """bool scalar: whether TF's decoders are tried on bytes that
    ``check_image_bytes`` classified as ``reason`` (int32 scalar)."""
    return tf.reduce_any(tf.equal(reason, tf.constant(_TF_MAY_DECODE, tf.int32)))


def attempt(fn, args, when=True):
    """In-graph ``try``: ``(fn(*args), True)``, or ``(zeros of the same
    structure, False)`` when an op inside ``fn`` fails (a decoder rejecting
    corrupt data raises ``InvalidArgumentError``, which no graph op can
    catch) or ``when`` (bool scalar) is False, and then ``fn`` doesn't run.

    ``fn`` runs inside a one-element ``tf.data`` dataset whose
    ``ignore_errors`` drops the failure; a second dataset supplies the
    fallback value. Works in tf.data functions, ``tf.function`` and
    exported SavedModels (no Python). The zeros have 0 for every dimension
    that ``fn``'s output leaves unknown.

    Args:
        fn: a function of tensors (nested structures allowed).
        args: tuple of its arguments.
        when: bool scalar.
    """
    def run(*a):
        return fn(*a[:-1]), tf.constant(True)

    tried = (tf.data.Dataset.from_tensors(tuple(args) + (tf.convert_to_tensor(when),))
             .filter(graph_fn(lambda *a: a[-1]))
             .map(graph_fn(run))
             .ignore_errors())
    default = tf.nest.map_structure(
        lambda s: tf.zeros([0 if d is None else d for d in s.shape], s.dtype),
        tried.element_spec[0])
    failed = tf.data.Dataset.from_tensors((default, tf.constant(False)))
    return tried.concatenate(failed).take(1).get_single_element()


def _pil_rgb(contents):
    """uint8 [H, W, 3] RGB of what PIL decodes fully from ``contents``
    (bytes); raises what PIL raises. The first frame of an animation, EXIF
    orientation applied (``ImageOps.exif_transpose``), alpha dropped, 16-bit
    samples to their high byte: the conventions of the TF path."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(contents)) as im:
        im.load()  # every byte of the first frame; truncated or corrupt data raises
        im = ImageOps.exif_transpose(im)
        if im.mode.startswith("I;16") or im.mode in ("I", "F"):
            scale = 256 if im.mode.startswith("I;16") else 1
            gray = np.clip(np.asarray(im, np.float64) / scale, 0, 255).astype(np.uint8)
            return np.repeat(gray[..., None], 3, axis=-1)
        return np.asarray(im.convert("RGB"), np.uint8)


@functools.lru_cache(maxsize=None)
def _tf_decoder():
    """``decode_checked`` traced once, for eager callers."""
    return tf.function(graph_fn(decode_checked), autograph=False, input_signature=[
        tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int32)])


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _tf_message(error):
    """The decoder's own words in a TF ``OpError`` (which wraps them in the
    graph's trace): e.g. "jpeg::Uncompress failed. Invalid JPEG data ..."."""
    lines = [line.strip() for line in error.message.splitlines()]
    said = [line for line in lines if line and not line.startswith(
        ("Graph execution error", "Detected at node", "File ", "[[", "{{"))]
    text = said[-1] if said else "the decoder failed"
    return re.sub(r"\{\{.*?\}\}\s*|\s*\[\[.*|\s*\[Op:.*", "", text).strip()


def fallback_decode(contents, fmt, reason):
    """The rule in Python, for what the in-graph path could not decode: TF's
    decoder where it may read the bytes (``tf_may_decode``; the in-graph
    attempt already failed there, so this is for its error message), then
    PIL.

    Args:
        contents: bytes of the file.
        fmt, reason: ``check_image_bytes``'s verdict (ints).

    Returns:
        ``(uint8 [H, W, 3] numpy, None, None)`` when TF or PIL decodes the
        file fully, else ``(None, reason key, message)``: the checks' reason
        (empty, too large, truncated, ...) or ``CORRUPT``, and what each
        decoder said.
    """
    if reason in (EMPTY, TOO_LARGE):
        return None, REASON_KEYS[reason], REASONS[reason]
    said = []
    if fmt != UNKNOWN_FORMAT and reason in _TF_MAY_DECODE:
        try:
            return _tf_decoder()(contents, fmt).numpy(), None, None
        except tf.errors.OpError as e:
            said.append(f"TensorFlow: {_tf_message(e).rstrip('.')}")
    from PIL import Image, UnidentifiedImageError

    try:
        return _pil_rgb(contents), None, None
    except Image.DecompressionBombError:
        return None, REASON_KEYS[TOO_LARGE], REASONS[TOO_LARGE]
    except UnidentifiedImageError:
        said.append("PIL: not an image format it knows")
    except Exception as e:  # noqa: BLE001 (PIL raises many kinds)
        said.append(f"PIL: {_first_line(e).rstrip('.')}")
    code = CORRUPT if reason == OK else reason
    return None, REASON_KEYS[code], f"{REASONS[code]}; {'; '.join(said)}"


def _fallback_in_graph(contents, path, fmt, reason, counter):
    """``(image uint8 [H, W, 3], ok)`` from ``fallback_decode`` through
    ``tf.py_function``; a file it rejects is reported to ``counter``."""
    def run(contents, path, fmt, reason):
        image, key, message = fallback_decode(contents.numpy(), int(fmt), int(reason))
        if image is None:
            if counter is not None:
                counter.add(path.numpy().decode("utf-8", "replace"), message, key)
            return np.zeros([1, 1, 3], np.uint8), False
        return image, True

    image, ok = tf.py_function(run, [contents, path, fmt, reason], [tf.uint8, tf.bool])
    return tf.ensure_shape(image, [None, None, 3]), tf.ensure_shape(ok, [])


def try_decode(contents, fmt, reason):
    """``(image uint8 [H, W, 3] as displayed, ok)``: ``decode_checked`` in
    the graph where ``tf_may_decode(reason)``, with a decoder error caught
    (``ok`` False, ``image`` empty). Only the decoders run inside
    ``attempt``; the EXIF orientation (which never raises) is read outside
    it, because loops run some 2x slower inside an ``attempt``'s dataset."""
    when = tf_may_decode(reason)
    # One attempt per format, each around one decoder: the least inside.
    pixels, ok = tf.switch_case(tf.maximum(fmt, 0), [
        lambda f=f: attempt(f, (contents,), when=when) for f in _DECODERS])
    pixels = tf.ensure_shape(pixels, [None, None, 3])
    image = apply_orientation(pixels, exif_orientation(contents, fmt))
    return tf.ensure_shape(image, [None, None, 3]), ok


def _decode_in_graph(contents, path, counter):
    """``(image, ok)`` by the rule: TF in-graph, then the Python fallback."""
    fmt, reason = check_image_bytes(contents)
    image, ok = try_decode(contents, fmt, reason)
    return tf.cond(ok, lambda: (image, ok),
                   lambda: _fallback_in_graph(contents, path, fmt, reason, counter))


def map_decoded(dataset, counter, from_image, deterministic=None):
    """``dataset.map`` of a function of each element's decoded image, by the
    rule: files that neither TF nor PIL decodes fully are dropped and
    reported to ``counter``.

    Args:
        dataset: dicts with ``"image_bytes"`` (tf.string scalar, the encoded
            file) and ``"path"`` (tf.string scalar, for messages).
        counter: a ``SkipCounter`` or None.
        from_image: ``(element, image) -> output``: ``element`` without
            ``"image_bytes"``, ``image`` uint8 [H, W, 3] RGB (a 1x1 zero
            image for a dropped file: ``from_image`` must accept any size).
        deterministic: passed to ``Dataset.map``.
    Returns:
        The dataset of outputs, in order (with ``deterministic``).
    """
    def apply(element):
        element = dict(element)
        contents = element.pop("image_bytes")
        image, ok = _decode_in_graph(contents, element["path"], counter)
        return from_image(element, image), ok

    dataset = dataset.map(graph_fn(apply), num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=deterministic)
    return (dataset.filter(graph_fn(lambda out, ok: ok))
            .map(graph_fn(lambda out, ok: out)))


def decode_bytes(contents):
    """The rule, eagerly, for one file: ``(uint8 [H, W, 3] numpy, None,
    None)``, or ``(None, reason key, message)`` when neither TF nor PIL
    decodes ``contents`` (bytes or a tf.string scalar) fully."""
    image, fmt, reason, ok = _traced_rule()(tf.convert_to_tensor(contents, tf.string))
    if bool(ok):
        return image.numpy(), None, None
    if isinstance(contents, tf.Tensor):
        contents = contents.numpy()
    return fallback_decode(bytes(contents), int(fmt), int(reason))


@functools.lru_cache(maxsize=None)
def _traced_rule():
    @tf.function(input_signature=[tf.TensorSpec([], tf.string)], autograph=False)
    def run(contents):
        fmt, reason = check_image_bytes(contents)
        image, ok = try_decode(contents, fmt, reason)
        return image, fmt, reason, ok
    return run


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
        in [0, 255]) in place of ``"image_bytes"``, without the files that
        neither TF nor PIL decodes fully (``map_decoded``). Each of those is
        reported to ``counter``, by path and reason, corrupt data inside an
        intact-looking file included. The pipeline needs a Python
        interpreter for the files TF can't decode (``tf.py_function``), so
        it can't be serialised to the tf.data service.
    """
    return map_decoded(dataset, counter, lambda element, image: {**element, "image": image},
                       deterministic=deterministic)


def read_image_file(path):
    """Eagerly read and decode one image file for prediction, by the rule.

    Returns:
        ``(image uint8 [H, W, 3] tf.Tensor, None)``, or ``(None, message)``
        when the file cannot be read or neither TF nor PIL decodes it fully
        (callers report it per file, not raise): "not a readable image: "
        and the reason, as ``decode_bytes`` gives it.
    """
    try:
        contents = tf.io.read_file(path)
    except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as e:
        return None, f"cannot read: {e.message}"
    image, _, message = decode_bytes(contents)
    if image is None:
        return None, f"not a readable image: {message}"
    return tf.constant(image), None

"""EXIF orientation, found in-graph and applied as viewers and annotation
tools apply it (see ``resnet_tf.data.decode``'s docstring for where).

Public:
    exif_orientation(contents, fmt) -> int32 scalar 1..8 (1 when absent),
        from a JPEG's APP1 "Exif" segment or a PNG's eXIf chunk.
    apply_orientation(image, orientation) -> the image turned for display:
        [H, W, C] for 1..4, [W, H, C] for 5..8; same dtype.
    display_size(contents, fmt) -> int64 [2] (height, width) as displayed.

Equal to PIL's ``ImageOps.exif_transpose`` for all eight orientations
(EXIF 2.3, Sec. 4.6.4). Annotation boxes are turned to match in
``detection.data.annotations.fit_to_image``. Nothing here raises on bad
bytes: a missing or damaged tag reads as orientation 1.
"""

import tensorflow as tf

from resnet_tf.data.image_checks import (JPEG, PNG, MAX_JPEG_SEGMENTS, be_uint, fixed_bytes,
                                         header_size)

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
        return (i < MAX_JPEG_SEGMENTS) & tf.equal(start, -1) & (pos + 10 <= length)

    def body(pos, start, size, i):
        seg = fixed_bytes(contents, pos, 10)  # FF marker Lh Ll "Exif\0\0"
        marker = tf.cast(seg[1], tf.int32)
        is_marker = tf.equal(seg[0], 0xFF)
        fill = is_marker & tf.equal(marker, 0xFF)
        seg_len = tf.cast(be_uint(seg, 2, 2), tf.int32)
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
        head = fixed_bytes(contents, pos, 8)  # length (BE), type
        chunk_len = be_uint(head, 0, 4)
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
        return fixed_bytes(contents, tf.clip_by_value(start + offset, 0, length), n)

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

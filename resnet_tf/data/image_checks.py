"""What an image file's bytes say before any decoder runs: its format, its
size, and what is wrong with it.

``check_image_bytes`` classifies encoded bytes in-graph (magic number,
end-of-file marker, BMP header, the size its header claims), so the common
bad files (empty, not an image, cut short by an interrupted copy, a
decompression bomb) are known without a decoder. The reason codes and their
messages (``REASONS``) and skip-report keys (``REASON_KEYS``) are defined
here once; ``resnet_tf.data.decode`` applies them (its docstring has the
whole accept/reject rule).
"""

import tensorflow as tf

from resnet_tf.data import report as reasons

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
HEADER_BYTES = 64  # covers the 14-byte BMP file header + 40-byte info header
_MAX_BMP_SIDE = 65535  # keeps the size arithmetic far from int64 overflow


def fixed_bytes(contents, pos, length):
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


def le_uint(header, pos, size):
    """Little-endian unsigned integer of ``size`` bytes at ``pos``, int64."""
    value = tf.constant(0, tf.int64)
    for k in range(size):
        value += tf.cast(header[pos + k], tf.int64) * 256 ** k
    return value


def be_uint(header, pos, size):
    """Big-endian unsigned integer of ``size`` bytes at ``pos``, int64."""
    value = tf.constant(0, tf.int64)
    for k in range(size):
        value = value * 256 + tf.cast(header[pos + k], tf.int64)
    return value


MAX_JPEG_SEGMENTS = 256  # marker segments before the frame header (APPn, DQT...)


def _jpeg_size(contents):
    """(height, width) int64 from the first SOFn frame header; 0 where it is
    not found (left to the decoder). Walks the marker segments from SOI."""
    length = tf.strings.length(contents)

    def cond(pos, height, width, i):
        return (i < MAX_JPEG_SEGMENTS) & (height < 0) & (pos + 9 <= length)

    def body(pos, height, width, i):
        seg = fixed_bytes(contents, pos, 9)  # FF marker Lh Ll | P Yh Yl Xh Xl
        marker = tf.cast(seg[1], tf.int32)
        is_marker = tf.equal(seg[0], 0xFF)
        fill = is_marker & tf.equal(marker, 0xFF)  # fill bytes before a marker
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
        is_sof = (is_marker & (marker >= 0xC0) & (marker <= 0xCF) & (marker != 0xC4)
                  & (marker != 0xC8) & (marker != 0xCC))
        seg_len = tf.cast(be_uint(seg, 2, 2), tf.int32)
        # Not a marker, the scan data began (SOS), or a bad length: give up.
        stop = ~fill & (~is_marker | tf.equal(marker, 0xDA) | tf.equal(marker, 0xD9)
                        | (seg_len < 2))
        height = tf.where(is_sof, be_uint(seg, 5, 2),
                          tf.where(stop, tf.constant(0, tf.int64), height))
        width = tf.where(is_sof, be_uint(seg, 7, 2), width)
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
        header = fixed_bytes(contents, 0, 24)  # signature, IHDR length and type
        return tf.stack([be_uint(header, 20, 4), be_uint(header, 16, 4)])

    def gif():
        header = fixed_bytes(contents, 0, 10)  # logical screen size
        return tf.stack([le_uint(header, 8, 2), le_uint(header, 6, 2)])

    def bmp():
        fields = bmp_fields(fixed_bytes(contents, 0, HEADER_BYTES))
        return tf.stack([fields["abs_height"], fields["width"]])

    def jpeg():
        return tf.stack(_jpeg_size(contents))

    return tf.switch_case(tf.where(fmt == UNKNOWN_FORMAT, 4, fmt), [
        jpeg, png, gif, bmp, lambda: tf.zeros([2], tf.int64)])


def _header_pixels(contents, fmt):
    size = header_size(contents, fmt)
    return size[0] * size[1]


def bmp_fields(header):
    """The BMP header fields that decoding depends on, as int64 scalars."""
    height = le_uint(header, 22, 4)
    height = tf.where(height >= 2 ** 31, height - 2 ** 32, height)  # signed
    return dict(
        data_offset=le_uint(header, 10, 4),
        info_size=le_uint(header, 14, 4),
        width=le_uint(header, 18, 4),
        abs_height=tf.abs(height),
        bpp=le_uint(header, 28, 2),
        compression=le_uint(header, 30, 4),
        colors_used=le_uint(header, 46, 4),
    )


def bmp_palette_size(fields):
    # biClrUsed == 0 means the full 2**bpp table (256 for 8-bit).
    return tf.where(fields["colors_used"] == 0, tf.constant(256, tf.int64),
                    fields["colors_used"])


def bmp_data_size(fields):
    """Bytes TF's decoder needs: data offset + rows padded to 4 bytes."""
    row = (fields["bpp"] * fields["width"] + 31) // 32 * 4
    return fields["data_offset"] + row * fields["abs_height"]


def _bmp_reason(contents, header):
    fields = bmp_fields(header)
    bpp, compression = fields["bpp"], fields["compression"]
    # BI_RGB (0) for all; BI_BITFIELDS (3) only with 32 bits, whose default
    # masks are the BGRA layout TF assumes. RLE (1, 2) is not decodable.
    supported = (
        (fields["info_size"] >= 40)
        & ((bpp == 8) | (bpp == 24) | (bpp == 32))
        & ((compression == 0) | ((compression == 3) & (bpp == 32)))
        & (fields["width"] > 0) & (fields["width"] <= _MAX_BMP_SIDE)
        & (fields["abs_height"] > 0) & (fields["abs_height"] <= _MAX_BMP_SIDE)
        & ((bpp != 8) | (bmp_palette_size(fields) <= 256))
    )
    palette_end = 14 + fields["info_size"] + 4 * bmp_palette_size(fields)
    length = tf.cast(tf.strings.length(contents), tf.int64)
    complete = (length >= bmp_data_size(fields)) & (
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
            lambda: _bmp_reason(contents, fixed_bytes(contents, 0, HEADER_BYTES)),
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

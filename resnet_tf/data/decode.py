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
tests/test_faults/test_faults_decoding.py holds the rule to the decoders themselves on
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

from resnet_tf.data.exif import (  # noqa: F401  (public through decode)
    ORIENTATION_SWAPS_SIDES, ORIENTATION_TAG, apply_orientation, display_size,
    exif_orientation)
from resnet_tf.data.image_checks import (  # noqa: F401  (public through decode)
    BMP, CORRUPT, EMPTY, GIF, JPEG, MAX_PIXELS, NOT_AN_IMAGE, OK, PNG, REASON_KEYS,
    REASONS, TAIL_WINDOW, TOO_LARGE, TRUNCATED_BMP, TRUNCATED_GIF, TRUNCATED_JPEG,
    TRUNCATED_PNG, UNKNOWN_FORMAT, UNSUPPORTED_BMP, bmp_data_size, bmp_fields,
    HEADER_BYTES, bmp_palette_size, fixed_bytes, check_image_bytes, header_size)


def _decode_bmp(contents):
    header = fixed_bytes(contents, 0, HEADER_BYTES)
    fields = bmp_fields(header)
    # TF's decoder rejects any size other than header + rows exactly.
    contents = tf.strings.substr(contents, tf.constant(0, tf.int64), bmp_data_size(fields))

    def palette_lookup():
        indices = tf.io.decode_bmp(contents, channels=0)[..., 0]  # 8-bit: [H, W, 1]
        size = tf.cast(bmp_palette_size(fields), tf.int32)
        start = tf.cast(14 + fields["info_size"], tf.int32)
        table = tf.io.decode_raw(tf.strings.substr(contents, start, 4 * size), tf.uint8)
        rgb = tf.reverse(tf.reshape(table, [-1, 4])[:, :3], axis=[1])  # BGRx -> RGB
        rgb = tf.pad(rgb, [[0, 256 - size], [0, 0]])  # out-of-table indices -> black
        return tf.gather(rgb, tf.cast(indices, tf.int32))

    return tf.cond(fields["bpp"] == 8, palette_lookup,
                   lambda: tf.io.decode_bmp(contents, channels=3))


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

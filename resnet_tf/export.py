"""Export trained models as SavedModels that TensorFlow Serving loads.

One export path for every model kind. A kind supplies a ``ServingModel``:
how to turn one decoded image into the model's fixed-size input
(``preprocess``) and how to turn a batch of those into named outputs
(``predict``); ``export_serving_model`` wraps both into the two signatures
and writes ``BASE/<version>/`` with ``tf.saved_model.save``, the weights
frozen into the graph as constants (``resnet_tf.fold.freeze``).

Signatures (the same for every kind):

- ``serving_default``: ``image_bytes``, tf.string [None], encoded JPEG, PNG,
  GIF (first frame) or BMP files, decoded and preprocessed in the graph;
- ``serve_image_tensor``: ``images``, uint8 [None, None, None, 3], RGB
  images of one size, preprocessed in the graph.

Outputs (named; see each kind's builder):

- classifier: ``probabilities`` float32 [N, C], ``top_k_classes`` int32
  [N, k], ``top_k_scores`` float32 [N, k], ``top_k_labels`` string [N, k]
  with k = min(5, C); the class names live in the graph as a constant.
- detector (``detection.export``): ``detection_boxes``, ``detection_scores``,
  ``detection_classes``, ``detection_labels``, ``num_detections``.

Decoding is the training pipeline's own (``resnet_tf.data.decode``): bytes
are checked first, and a bad file (empty, not an image, truncated) fails the
request with an ``InvalidArgument`` error naming its index in the batch and
the reason, instead of reaching a decoder. Every op is a core TensorFlow op
(no Python functions), so a stock ``tensorflow_model_server``
at least as new as the exporting TensorFlow (2.21) serves it. The graph
holds no variables (weights are constants), so nothing is restored at load.

Adding a model kind: write ``export_<kind>(model_dir, base, version=None)``
in the kind's package that loads the directory, builds a ``ServingModel``
and returns ``export_serving_model(serving, base, version)`` (see
``detection.export.export_detector`` for a complete example); then add one
entry to the registry, ``apps.export.EXPORTERS``, which also makes the
``resnet-tf export <kind>`` command. This module imports nothing from the
packages above it (imports flow ``localization -> detection -> resnet_tf``).
"""

import dataclasses
import json
import os
import re
from typing import Callable

import numpy as np
import tensorflow as tf

from resnet_tf import model_dir
from resnet_tf.atomic import atomic_directory
from resnet_tf.data import decode
from resnet_tf.fold import fold_batch_norms, freeze, serving_dtype

SERVE_TAG = "serve"  # tensorflow::kSavedModelTagServe
BYTES_SIGNATURE = "serving_default"
TENSOR_SIGNATURE = "serve_image_tensor"
BYTES_INPUT = "image_bytes"
TENSOR_INPUT = "images"
TOP_K = 5
EXPORT_INFO = "resnet_tf_export.json"  # written to <version>/assets.extra/


@dataclasses.dataclass
class ServingModel:
    """What one model kind gives the shared export path.

    Attributes:
        kind: "classifier", "detector", "localizer" (recorded in the export).
        model: the Keras model ``predict`` calls (its weights are frozen
            into the export's graph).
        preprocess: ``fn(image) -> dict`` for ONE image: uint8 [H, W, 3] RGB
            in, a dict of tensors shaped as ``example_spec`` out (graph-mode
            TF, no Python control flow on tensors: endpoints are traced with
            AutoGraph off).
        example_spec: ``{name: tf.TensorSpec}`` of one preprocessed image,
            static shapes (the decode ``map_fn``'s ``fn_output_signature``:
            without it the batch's dtype and shape are lost at serving time).
        predict: ``fn(batch) -> dict`` from the stacked examples
            (``[N, ...]``) to the named outputs of the signatures.
        info: extra JSON-able facts recorded in ``assets.extra``.
    """

    kind: str
    model: object
    preprocess: Callable
    example_spec: dict
    predict: Callable
    info: dict = dataclasses.field(default_factory=dict)


# --- versions ------------------------------------------------------------------


def next_version(base):
    """The next free TF Serving version under ``base``: 1 + the largest
    integer-named folder, or 1."""
    versions = [int(n) for n in (os.listdir(base) if os.path.isdir(base) else [])
                if re.fullmatch(r"\d+", n) and os.path.isdir(os.path.join(base, n))]
    return max(versions, default=0) + 1


def _version_dir(base, version):
    if version is None:
        version = next_version(base)
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
        raise ValueError(f"version must be a positive integer (TF Serving loads "
                         f"BASE/<integer>/), got {version!r}.")
    path = os.path.join(base, str(int(version)))
    if os.path.exists(path):
        raise ValueError(f"{path} already exists: TF Serving versions are immutable; "
                         f"leave out --version to use {next_version(base)}, or remove it.")
    if os.path.exists(base) and not os.path.isdir(base):
        raise ValueError(f"{base} is a file, not a folder for SavedModel versions.")
    return path, int(version)


# --- in-graph decoding -----------------------------------------------------------


def decode_serving_image(contents, index):
    """Encoded bytes -> uint8 [H, W, 3] RGB, or an InvalidArgument error.

    Args:
        contents: tf.string scalar, a JPEG/PNG/GIF/BMP file.
        index: int32 scalar, its position in the request (for the message).

    The bytes are classified by ``decode.check_image_bytes`` first, then
    decoded exactly as in training and ``predict`` (JPEG with the accurate
    DCT, palette BMPs through their colour table, alpha dropped, EXIF
    orientation applied in-graph by ``decode.exif_orientation``) where TF's
    decoders may read them, inside ``decode.attempt`` (an in-graph try). A
    file TF can't decode raises ``image_bytes[i]: <reason>``: the checks'
    reason (empty, truncated, not a JPEG/PNG/GIF/BMP image ...) or "corrupt
    image data" for one whose header and end marker look intact. There is
    no PIL in a served graph: formats only PIL reads (TIFF, WebP, 1-bit
    BMP ...) are refused, named by index; convert them to JPEG or PNG.
    """
    fmt, reason = decode.check_image_bytes(contents)
    image, ok = decode.attempt(decode.decode_checked, (contents, fmt),
                               when=decode.tf_may_decode(reason))
    code = tf.where(tf.equal(reason, decode.OK), decode.CORRUPT, reason)
    message = tf.strings.join([
        f"{BYTES_INPUT}[", tf.strings.as_string(index), "]: ",
        tf.gather(tf.constant(decode.REASONS), code)])
    check = tf.debugging.Assert(ok, [message])
    with tf.control_dependencies([check]):
        return tf.identity(image)


# --- the archive -----------------------------------------------------------------


def export_serving_model(serving, base, version=None):
    """Write ``serving`` as ``base/<version>/``; return that path.

    The SavedModel is written to a hidden folder beside it and renamed into
    place, so a TF Serving instance polling ``base`` never sees half a
    version.
    """
    import keras

    path, version = _version_dir(base, version)
    spec = serving.example_spec

    # The model part is frozen once (resnet_tf.fold.freeze: its weights become
    # graph constants, which is what lets oneDNN keep each filter's layout
    # between requests); both signatures call that one function, so the
    # SavedModel holds the weights once.
    model_fn = freeze(serving.predict, [
        {k: tf.TensorSpec([None, *s.shape], s.dtype, name=k) for k, s in spec.items()}])

    def predict(examples, n):
        # Convolution kernels reject an empty batch, and an empty request is
        # valid: run one blank example instead and return none of it.
        blank = {k: tf.zeros([1, *s.shape], s.dtype) for k, s in spec.items()}
        examples = tf.cond(n > 0, lambda: examples, lambda: blank)
        return {k: v[:n] for k, v in model_fn(examples).items()}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)],
                 autograph=False)
    def from_bytes(image_bytes):
        n = tf.shape(image_bytes)[0]
        examples = tf.map_fn(
            lambda args: serving.preprocess(decode_serving_image(*args)),
            (image_bytes, tf.range(n)), fn_output_signature=spec)
        return predict(examples, n)

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.uint8, name=TENSOR_INPUT)], autograph=False)
    def from_tensor(images):
        examples = tf.map_fn(serving.preprocess, images, fn_output_signature=spec)
        return predict(examples, tf.shape(images)[0])

    module = tf.Module()
    module.model_fn, module.from_bytes, module.from_tensor = model_fn, from_bytes, from_tensor
    # serving_default: TF Serving's default for requests without a
    # signature_name.
    signatures = {BYTES_SIGNATURE: from_bytes, TENSOR_SIGNATURE: from_tensor}

    # The version folder appears complete or not at all (TF Serving may be
    # watching ``base``); the temporary beside it is hidden from Serving.
    with atomic_directory(path) as tmp:
        tf.saved_model.save(module, tmp, signatures=signatures)
        info = {"kind": serving.kind, "version": version,
                "tensorflow": tf.__version__, "keras": keras.__version__,
                "signatures": {BYTES_SIGNATURE: {BYTES_INPUT: "string [None]"},
                               TENSOR_SIGNATURE: {TENSOR_INPUT: "uint8 [None, None, None, 3]"}},
                **serving.info}
        # assets.extra/ travels with the SavedModel; TF Serving ignores it.
        os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
        with open(os.path.join(tmp, "assets.extra", EXPORT_INFO), "w") as f:
            f.write(json.dumps(info, indent=1) + "\n")
    return path


# --- classifier ------------------------------------------------------------------


def top_k_outputs(probabilities, class_names, k=TOP_K):
    """The ``top_k_*`` outputs of float32 [N, C] scores: classes int32
    [N, k], scores [N, k], labels string [N, k], k = min(k, C)."""
    k = min(k, len(class_names))
    scores, classes = tf.math.top_k(probabilities, k=k)
    return {"top_k_classes": tf.cast(classes, tf.int32), "top_k_scores": scores,
            "top_k_labels": tf.gather(tf.constant(list(class_names)), classes)}


def classifier_serving_model(clf):
    """A ``ServingModel`` for a loaded ``model_dir.Classifier``: the single
    evaluation view of ``predict`` (shorter side 256, centre 224 crop, or the
    CIFAR original view) and per-pixel mean subtraction, in the graph."""
    prep = clf.preprocessing
    # Batch norm folded into the convolutions (resnet_tf.fold); a model
    # trained under mixed_bfloat16 is served with bfloat16 weights.
    model = fold_batch_norms(clf.model, dtype=serving_dtype(clf.model))
    mean = None if clf.mean_image is None else np.asarray(clf.mean_image, np.float32)
    crop = prep.crop_size
    logits_out = getattr(clf.model, "classifier_activation", "softmax") in (None, "linear")

    def preprocess(image):
        mean_t = None if mean is None else tf.constant(mean)
        return {"images": tf.ensure_shape(prep.eval_view(image, mean_t), [crop, crop, 3])}

    def predict(batch):
        probs = tf.cast(model(batch["images"], training=False), tf.float32)
        if logits_out:
            probs = tf.nn.softmax(probs)
        return {"probabilities": probs, **top_k_outputs(probs, clf.class_names)}

    return ServingModel(
        kind="classifier", model=model, preprocess=preprocess,
        example_spec={"images": tf.TensorSpec([crop, crop, 3], tf.float32)},
        predict=predict,
        info={"class_names": list(clf.class_names), "source": os.path.abspath(clf.directory),
              "preprocessing": prep.to_dict(),
              # Any image size maps to the one crop view: nothing is capped.
              "caps": {}})


def export_classifier(directory, base, version=None):
    """Export a classifier directory to ``base/<version>/``; return the path."""
    return export_serving_model(classifier_serving_model(model_dir.load_classifier(directory)),
                                base, version)

"""Requests as TF Serving receives them, and bad input to a served classifier.

The server binary is not installable here, so its request mapping is
re-enacted on the loaded signatures: REST row (``instances``) and columnar
(``inputs``) JSON with ``{"b64": ...}`` strings, and a gRPC
``PredictRequest`` from the ``tensorflow-serving-api`` protos, serialised
and parsed on both sides. Bad input (corrupt bytes, an empty batch,
grayscale, PNG, 1x1, 10,000x10,000) gives a clean InvalidArgument error or
the same result as the in-process model, never a crash.
"""

import base64
import io
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from resnet_tf import export
from resnet_tf.serving import client
from export_helpers import (CLASSES, assert_classifier_outputs, keras_probabilities,
                                    make_classifier_dir, real_jpegs)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(model directory, loaded export) of a float32 classifier."""
    root = tmp_path_factory.mktemp("served")
    directory = make_classifier_dir(root / "model", seed=1)
    return directory, tf.saved_model.load(export.export_classifier(directory,
                                                                   str(root / "serving")))


# --- the server's side, as TF Serving maps requests onto a signature ----------------


def _json_to_tensor_value(value):
    """REST JSON value -> Python value; ``{"b64": s}`` is a binary string."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_json_to_tensor_value(v) for v in value]
    return value


def _tensor_to_json(name, array):
    """Output tensor -> JSON: strings as text, or base64 when the output's
    name ends in ``_bytes`` (TF Serving's rule)."""
    if array.dtype == object:
        if name.endswith("_bytes"):
            return np.vectorize(lambda b: {"b64": base64.b64encode(b).decode()},
                                otypes=[object])(array).tolist()
        return np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(array).tolist()
    return array.tolist()


def serve_rest(loaded, body):
    """A REST ``:predict`` body (JSON text) -> response JSON text."""
    request = json.loads(body)
    signature = loaded.signatures[request.get("signature_name", "serving_default")]
    input_names = sorted(signature.structured_input_signature[1])
    if "instances" in request:  # row format: one entry per example
        rows = request["instances"]
        if len(input_names) == 1 and not (rows and isinstance(rows[0], dict)
                                          and set(rows[0]) == set(input_names)):
            inputs = {input_names[0]: [_json_to_tensor_value(r) for r in rows]}
        else:
            inputs = {k: [_json_to_tensor_value(r[k]) for r in rows] for k in input_names}
    else:  # columnar: the value or a dict of values
        columns = request["inputs"]
        if not (isinstance(columns, dict) and set(columns) == set(input_names)):
            columns = {input_names[0]: columns}
        inputs = {k: _json_to_tensor_value(v) for k, v in columns.items()}
    dtypes = {k: s.dtype for k, s in signature.structured_input_signature[1].items()}
    outputs = {k: v.numpy() for k, v in signature(
        **{k: tf.constant(v, dtypes[k]) for k, v in inputs.items()}).items()}
    if "instances" in request:
        n = len(next(iter(outputs.values())))
        return json.dumps({"predictions": [
            {k: _tensor_to_json(k, v[i]) for k, v in outputs.items()} for i in range(n)]})
    return json.dumps({"outputs": {k: _tensor_to_json(k, v) for k, v in outputs.items()}})


def serve_grpc(loaded, request_bytes):
    """A serialised ``PredictRequest`` -> serialised ``PredictResponse``."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest.FromString(request_bytes)
    signature = loaded.signatures[request.model_spec.signature_name or "serving_default"]
    outputs = signature(**{k: tf.constant(tf.make_ndarray(v)) for k, v in
                           request.inputs.items()})
    response = predict_pb2.PredictResponse()
    response.model_spec.CopyFrom(request.model_spec)
    for k, v in outputs.items():
        response.outputs[k].CopyFrom(tf.make_tensor_proto(v.numpy()))
    return response.SerializeToString()


# --- round trips ---------------------------------------------------------------------


def direct(loaded, files):
    out = loaded.signatures["serving_default"](
        image_bytes=tf.constant([open(f, "rb").read() for f in files]))
    return {k: v.numpy() for k, v in out.items()}


def assert_same(got, expected):
    assert set(got) == set(expected)
    for k, v in expected.items():
        if v.dtype == object:
            assert [[s.decode() for s in row] for row in v] == [
                [s.decode() if isinstance(s, bytes) else s for s in row] for row in got[k]]
        else:
            np.testing.assert_allclose(got[k], v, rtol=0, atol=1e-7)


@pytest.mark.parametrize("columnar", [False, True], ids=["rows", "columns"])
def test_rest_round_trip(served, columnar):
    directory, loaded = served
    files = real_jpegs(3)
    body = json.dumps(client.rest_request(files, columnar=columnar))
    assert '"b64"' in body and ("inputs" if columnar else "instances") in body
    response = json.loads(serve_rest(loaded, body))
    assert ("outputs" if columnar else "predictions") in response
    got = client.rest_outputs(response)
    assert_same(got, direct(loaded, files))
    assert_classifier_outputs(got, keras_probabilities(directory, files), atol=1e-5,
                              exact_dtypes=False)


def test_rest_image_tensor_signature(served):
    _, loaded = served
    image = np.asarray(Image.open(real_jpegs(1)[0]).convert("RGB"))
    body = json.dumps({"signature_name": "serve_image_tensor",
                       "instances": [image.tolist()]})
    got = client.rest_outputs(json.loads(serve_rest(loaded, body)))
    expected = loaded.signatures["serve_image_tensor"](images=tf.constant(image[None]))
    np.testing.assert_allclose(got["probabilities"], expected["probabilities"], atol=1e-7)


def test_grpc_round_trip(served):
    from tensorflow_serving.apis import predict_pb2

    directory, loaded = served
    files = real_jpegs(3)
    request = client.predict_request(files, model_name="resnet", version=1)
    response = predict_pb2.PredictResponse.FromString(
        serve_grpc(loaded, request.SerializeToString()))
    assert response.model_spec.name == "resnet" and response.model_spec.version.value == 1
    got = client.predict_outputs(response)
    assert_same(got, direct(loaded, files))
    assert_classifier_outputs(got, keras_probabilities(directory, files), atol=1e-5)


# --- bad input -----------------------------------------------------------------------


def _encode(image, fmt, **kwargs):
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def serve_bytes(loaded, blobs):
    out = loaded.signatures["serving_default"](image_bytes=tf.constant(blobs, tf.string))
    return {k: v.numpy() for k, v in out.items()}


def test_bad_bytes_are_invalid_argument_naming_the_image(served):
    _, loaded = served
    good = open(real_jpegs(1)[0], "rb").read()
    for blob, reason in [(b"", "empty file"),
                         (b"hello, not an image", "not a JPEG/PNG/GIF/BMP image"),
                         (good[:len(good) // 2], "truncated JPEG"),
                         (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "truncated PNG")]:
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"image_bytes\[1\]: " + reason):
            serve_bytes(loaded, [good, blob])
    assert serve_bytes(loaded, [good, good])["probabilities"].shape == (2, len(CLASSES))


def test_empty_batch_gives_empty_outputs(served):
    _, loaded = served
    out = serve_bytes(loaded, [])
    assert out["probabilities"].shape == (0, len(CLASSES))
    assert out["top_k_labels"].shape == (0, 5)
    out = loaded.signatures["serve_image_tensor"](images=tf.zeros([0, 8, 8, 3], tf.uint8))
    assert out["probabilities"].shape == (0, len(CLASSES))


def test_grayscale_png_tiny_and_damaged_images_match_keras(served, tmp_path):
    directory, loaded = served
    jpeg = real_jpegs(1)[0]
    with Image.open(jpeg) as im:
        im.load()
    raw = bytearray(open(jpeg, "rb").read())
    # Damage inside the scan data: libjpeg recovers what it can, in serving
    # as in training and `predict`.
    raw[len(raw) // 2:len(raw) // 2 + 64] = b"\x13" * 64
    blobs = {
        "gray.jpg": _encode(im.convert("L"), "JPEG"),
        "rgba.png": _encode(im.convert("RGBA"), "PNG"),
        "one.png": _encode(im.resize((1, 1)), "PNG"),
        "one.jpg": _encode(im.resize((1, 1)), "JPEG"),
        "damaged.jpg": bytes(raw),
    }
    paths = []
    for name, blob in blobs.items():
        (tmp_path / name).write_bytes(blob)
        paths.append(str(tmp_path / name))
    out = serve_bytes(loaded, list(blobs.values()))
    assert_classifier_outputs(out, keras_probabilities(directory, paths), atol=1e-5)
    one = loaded.signatures["serve_image_tensor"](images=tf.constant(
        np.asarray(im.resize((1, 1)))[None]))
    np.testing.assert_allclose(one["probabilities"], out["probabilities"][2:3], atol=1e-5)


@pytest.mark.slow
def test_very_large_image(served, tmp_path):
    directory, loaded = served
    with Image.open(real_jpegs(1)[0]) as im:
        big = im.convert("RGB").resize((10_000, 10_000), Image.NEAREST)
    path = tmp_path / "big.jpg"
    big.save(path, "JPEG", quality=50)
    out = serve_bytes(loaded, [path.read_bytes()])
    assert_classifier_outputs(out, keras_probabilities(directory, [str(path)]), atol=1e-5)

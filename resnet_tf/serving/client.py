"""Requests for a TF Serving instance serving a resnet-tf export.

REST (``POST http://HOST:8501/v1/models/NAME:predict``):

    body = rest_request(["cat.jpg"])              # row format, base64 bytes
    body = rest_request(["cat.jpg"], columnar=True)
    outputs = rest_outputs(response_json)         # {output name: numpy array}

gRPC (port 8500, ``tensorflow-serving-api``, installed with ``--no-deps``):

    request = predict_request(["cat.jpg"], model_name="resnet")
    response = stub.Predict(request, 30.0)
    outputs = predict_outputs(response)

A JSON value ``{"b64": "..."}`` is how TF Serving's REST API carries binary
strings; the server decodes it before the signature sees the bytes.
"""

import base64

import numpy as np

from resnet_tf.export import BYTES_INPUT, BYTES_SIGNATURE


def _read(image):
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    with open(image, "rb") as f:
        return f.read()


def rest_request(images, signature_name=BYTES_SIGNATURE, columnar=False):
    """The JSON body (a dict) of a REST predict request for image files or bytes.

    Row format: ``{"signature_name", "instances": [{"b64": ...}, ...]}``;
    columnar: ``{"signature_name", "inputs": {"image_bytes": [{"b64": ...}]}}``.
    """
    values = [{"b64": base64.b64encode(_read(i)).decode("ascii")} for i in images]
    if columnar:
        return {"signature_name": signature_name, "inputs": {BYTES_INPUT: values}}
    return {"signature_name": signature_name, "instances": values}


def rest_outputs(response):
    """A REST predict response (dict) -> ``{output name: numpy array}``.

    Handles both ``predictions`` (row format: a list of per-instance dicts)
    and ``outputs`` (columnar: a dict of lists). String outputs stay ``str``.
    """
    if "error" in response:
        raise ValueError(f"TF Serving error: {response['error']}")
    if "predictions" in response:
        rows = response["predictions"]
        if rows and not isinstance(rows[0], dict):
            raise ValueError("single-output response: the output name is not in it")
        names = rows[0].keys() if rows else []
        return {k: np.array([r[k] for r in rows]) for k in names}
    return {k: np.array(v) for k, v in response["outputs"].items()}


def predict_request(images, model_name, signature_name=BYTES_SIGNATURE, version=None):
    """A ``tensorflow_serving.apis.predict_pb2.PredictRequest`` for image files
    or bytes."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs[BYTES_INPUT].CopyFrom(
        tf.make_tensor_proto([_read(i) for i in images], dtype=tf.string))
    return request


def predict_outputs(response):
    """A ``PredictResponse`` -> ``{output name: numpy array}`` (strings as bytes)."""
    import tensorflow as tf

    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

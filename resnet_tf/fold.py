"""Inference copies of a trained ResNet with batch norm folded into the
convolutions.

At inference a batch norm is a per-channel affine map, so a convolution
followed by one is a single convolution with a bias:

    W' = W * gamma / sqrt(var + eps)        (per output channel)
    b' = (b - mean) * gamma / sqrt(var + eps) + beta

``fold_batch_norms(model)`` returns a new functional model that computes
this, for every Conv2D whose only consumer is a batch norm. The original
model is untouched (keep training it; fold again afterwards). On the
TensorFlow backend each ResNet unit then runs as one oneDNN convolution
with its bias, residual add and ReLU fused, and reads two variables instead
of five; under JAX it is the same arithmetic with fewer ops.

``dtype="bfloat16"`` stores the folded weights in bfloat16 and runs the
whole copy in bfloat16 (the classifier's output in float32), so no weight
is cast per call; see benchmarks/RESULTS.md for when that pays on CPU.

    inference = fold_batch_norms(model)                 # float32
    probs = inference.predict_on_batch(images)          # == model(images, training=False)
"""

import keras
import numpy as np


def is_functional(model):
    """Whether ``model`` is a functional Keras model (a graph of layers that
    ``fold_batch_norms`` can rebuild)."""
    from keras.src.models.functional import Functional

    return isinstance(model, Functional)


@keras.saving.register_keras_serializable(package="resnet_tf")
class FoldedBatchNorm(keras.layers.Layer):
    """Stands where a batch norm was folded into the convolution before it:
    passes its input through (its arguments are those of the batch norm's
    call)."""

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def foldable_pairs(model):
    """``{conv layer name: batch norm layer name}`` for every Conv2D whose
    output feeds exactly one layer, a BatchNormalization on its last axis
    with the default (channels-last) layout, called once."""
    consumers = {}
    for layer in model.layers:
        for node in getattr(layer, "_inbound_nodes", []):
            for t in node.input_tensors:
                producer = t._keras_history.operation
                consumers.setdefault(producer.name, []).append(layer)
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Conv2D) or len(layer._inbound_nodes) != 1:
            continue
        if layer.data_format != "channels_last" or layer.activation not in (
                keras.activations.linear, None):
            continue
        users = consumers.get(layer.name, [])
        if len(users) != 1:
            continue
        bn = users[0]
        if (isinstance(bn, keras.layers.BatchNormalization)
                and len(bn._inbound_nodes) == 1 and bn.axis in (-1, 3)
                and not getattr(bn, "renorm", False)):
            pairs[layer.name] = bn.name
    return pairs


def folded_weights(conv, bn):
    """``(kernel, bias)`` float64->float32 of ``conv`` followed by ``bn`` in
    inference mode."""
    def f64(v):
        return np.asarray(keras.ops.convert_to_numpy(v), np.float64)

    kernel = f64(conv.kernel)
    out = kernel.shape[-1]
    bias = f64(conv.bias) if conv.use_bias else np.zeros(out)
    gamma = f64(bn.gamma) if bn.scale else np.ones(out)
    beta = f64(bn.beta) if bn.center else np.zeros(out)
    mean, var = f64(bn.moving_mean), f64(bn.moving_variance)
    scale = gamma / np.sqrt(var + bn.epsilon)
    return ((kernel * scale).astype(np.float32),
            ((bias - mean) * scale + beta).astype(np.float32))


def fold_batch_norms(model, dtype=None):
    """A new functional model: ``model`` in inference mode with every
    foldable Conv2D -> BatchNormalization pair (``foldable_pairs``) replaced
    by one Conv2D with a bias.

    Args:
        model: a built functional Keras model (``resnet_tf.build(...)``, a
            loaded classifier, a feature model). Layers that are not part of
            a pair are shared with ``model`` (same weights).
        dtype: None keeps each layer's dtype policy; "float32" or "bfloat16"
            runs every layer of the copy in that dtype with its weights stored
            in it, except the layers producing the model's outputs (the
            classifier, the last ReLU of a feature model), which compute in
            float32.
    Returns:
        keras.Model with the same inputs and outputs; call it with
        ``training=False`` semantics only (it has no batch norms left to
        train).
    Raises:
        ValueError: if ``model`` is not a functional model.
    """
    if not is_functional(model):
        raise ValueError(
            f"fold_batch_norms needs a functional Keras model; got {type(model).__name__} "
            f"{model.name!r}. Build it with resnet_tf.build(...) or keras.Model(inputs, "
            "outputs).")
    pairs = foldable_pairs(model)
    folded_bns = set(pairs.values())
    # Under a lower precision the layers that produce the model's outputs
    # keep float32 (the classifier's softmax, the returned feature maps).
    outputs = {t._keras_history.operation.name for t in keras.tree.flatten(model.outputs)}
    copies = {}

    def clone(layer):
        if layer.name in folded_bns:
            return FoldedBatchNorm(name=layer.name, dtype=dtype or layer.dtype_policy)
        if isinstance(layer, keras.layers.InputLayer):
            return layer
        if layer.name not in pairs and (dtype is None or not isinstance(layer, keras.layers.Layer)):
            return layer
        config = layer.get_config()
        if layer.name in pairs:
            config.update(use_bias=True, bias_initializer="zeros")
        for key in ("kernel_regularizer", "bias_regularizer", "beta_regularizer",
                    "gamma_regularizer", "activity_regularizer"):
            if key in config:
                config[key] = None
        if dtype is not None:
            config["dtype"] = "float32" if layer.name in outputs else dtype
        copies[layer.name] = layer.__class__.from_config(config)
        return copies[layer.name]

    inference = keras.models.clone_model(model, clone_function=clone)
    by_name = {layer.name: layer for layer in model.layers}
    for name, copy in copies.items():
        if name in pairs:
            copy.set_weights(list(folded_weights(by_name[name], by_name[pairs[name]])))
        else:
            copy.set_weights(by_name[name].get_weights())
    inference.trainable = False
    return inference


def serving_dtype(model_or_policy):
    """The ``dtype`` for ``fold_batch_norms`` of a model trained under a
    mixed precision policy: "bfloat16" when ``model_or_policy`` (a dtype
    policy, its name, or a model whose layers use it) is mixed_bfloat16
    (weights then stored in bfloat16, nothing cast per call), else None (the
    model's own dtypes)."""

    if isinstance(model_or_policy, keras.Model):
        names = {getattr(l.dtype_policy, "name", None) for l in model_or_policy.layers}
        return "bfloat16" if "mixed_bfloat16" in names else None
    name = getattr(model_or_policy, "name", model_or_policy)
    return "bfloat16" if name == "mixed_bfloat16" else None


def freeze(fn, input_signature):
    """``fn`` traced once for ``input_signature`` with every variable it
    reads turned into a graph constant (TensorFlow backend).

    Returns a ``tf.function`` with that input signature and ``fn``'s output
    structure. Constant filters let oneDNN keep each convolution's weights
    in its own layout between calls instead of reordering them on every
    call, and grappler fold what depends only on weights; exports use it for
    their signatures. The weights are copied: later changes to the model's
    variables do not reach the frozen function.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)

    concrete = tf.function(fn, autograph=False).get_concrete_function(*input_signature)
    frozen = convert_variables_to_constants_v2(concrete)
    structure = concrete.structured_outputs

    @tf.function(input_signature=list(input_signature), autograph=False)
    def run(*args):
        # The frozen graph takes its inputs flat and returns its outputs flat.
        return tf.nest.pack_sequence_as(structure, frozen(*tf.nest.flatten(args)))

    return run


def serving_function(model, dtype="auto"):
    """What an export of ``model`` runs, as an in-process function: batch
    norm folded (``fold_batch_norms``, ``dtype`` "auto" = ``serving_dtype``)
    and, on TensorFlow, frozen (``freeze``) for float32 [None, *input shape]
    batches. On other backends the folded model itself."""

    folded = fold_batch_norms(model, dtype=serving_dtype(model) if dtype == "auto" else dtype)
    if keras.backend.backend() != "tensorflow":
        return folded
    import tensorflow as tf

    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
    return freeze(lambda x: folded(x, training=False), [spec])

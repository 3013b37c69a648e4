"""Carry weights users already have into resnet-tf models.

Everything here maps weights by layer name (the scheme in ``blocks.py``)
and checks every shape before assigning anything, so a mismatch never
leaves a model half-loaded.

Supported sources:
- ``keras.applications.ResNet50/101/152`` (v1: stride on the first 1x1,
  convolutions with bias, BN epsilon 1.001e-5), in memory or from the
  ``.keras`` / ``.h5`` file a user saved: ``from_keras_applications``.
- Any ``{layer_name: [arrays]}`` mapping: ``assign_by_name``.
"""

import numpy as np

import keras

from resnet_tf.backbone import ResNet
from resnet_tf.model_dir import load_keras_file
from resnet_tf.zoo import IMAGENET_STAGES


def named_weights(model):
    """``{layer_name: [np.ndarray, ...]}`` for every layer that has weights."""
    out = {}
    for layer in _weighted_layers(model):
        out[layer.name] = [np.asarray(w) for w in layer.get_weights()]
    return out


def assign_by_name(model, weights, source="weights", skip=()):
    """Assign ``weights`` (layer name -> arrays) to ``model``'s layers.

    Every weighted layer of ``model`` except those named in ``skip`` must be
    present with the same number of arrays and the same shapes; otherwise a
    ValueError names the first layer that differs and nothing is assigned.
    Layers of ``weights`` that ``model`` lacks are an error too (they would
    be silently lost).
    """
    layers = {layer.name: layer for layer in _weighted_layers(model)}
    wanted = [n for n in layers if n not in skip]
    missing = [n for n in wanted if n not in weights]
    if missing:
        raise ValueError(
            f"{source} has no weights for layer {missing[0]!r} of "
            f"{model.name} ({len(missing)} layers missing in all). Check the "
            "depth, the shortcut option and conv_bias of the model you built."
        )
    extra = [n for n in weights if n not in layers and n not in skip]
    if extra:
        raise ValueError(
            f"{source} has weights for layer {extra[0]!r}, which {model.name} "
            f"does not have ({len(extra)} such layers). Check the depth, the "
            "shortcut option, conv_bias and include_top of the model you built."
        )
    for name in wanted:
        have = [tuple(w.shape) for w in layers[name].weights]
        got = [tuple(np.shape(a)) for a in weights[name]]
        if have != got:
            raise ValueError(
                f"{source}: layer {name!r} has weight shapes {got}, but "
                f"{model.name} expects {have}. The first layer that differs is "
                f"{name!r}; build the model with matching classes, width, channels "
                "and conv_bias."
            )
    for name in wanted:
        layers[name].set_weights(weights[name])
    return model


def from_keras_applications(source, **overrides):
    """A resnet-tf ResNet holding a keras.applications ResNet's weights.

    Args:
        source: a ``keras.applications.ResNet50/101/152`` model, or the path
            of a ``.keras``/``.h5`` file of one.
        overrides: ``ResNet`` arguments to change (e.g. ``input_shape``).
            Depth, conv_bias, BN epsilon, include_top, pooling and classes
            follow the source.
    Returns:
        ``ResNet`` whose outputs equal the source's (to float rounding).
    """
    if isinstance(source, str):
        source = load_keras_file(source, "keras.applications model",
                                 hint="save the keras.applications model again")
    names = {layer.name for layer in source.layers}
    depth = _keras_applications_depth(names, source.name)
    in_shape = tuple(source.input_shape[1:])
    if in_shape[-1] != 3:
        raise ValueError(
            f"{source.name} takes {in_shape[-1]}-channel input, but "
            "keras.applications ResNet weights are for RGB images with 3 "
            "channels."
        )
    bn = source.get_layer("conv1_bn")
    config = dict(
        depth=depth,
        family="imagenet",
        shortcut="B",
        stride_on="1x1",
        conv_bias=True,
        bn_epsilon=bn.epsilon,
        bn_momentum=bn.momentum,
        include_top="predictions" in names,
        input_shape=in_shape,
    )
    if config["include_top"]:
        head = source.get_layer("predictions")
        config["classes"] = head.units
        config["classifier_activation"] = keras.activations.serialize(
            head.activation)
        if config["classifier_activation"] == "linear":
            config["classifier_activation"] = None
    else:
        config["pooling"] = ("avg" if "avg_pool" in names
                             else "max" if "max_pool" in names else None)
    config.update(overrides)
    channels = (config.get("input_shape") or (None, None, 3))[-1]
    if channels != 3:
        raise ValueError(
            f"input_shape {config['input_shape']} has {channels} channels, but "
            "keras.applications ResNet weights are for RGB images: use 3."
        )
    model = ResNet(**config)
    return assign_by_name(model, named_weights(source),
                          source=f"keras.applications model {source.name!r}")


def _keras_applications_depth(names, model_name):
    blocks = tuple(
        sum(1 for n in names if n.startswith(f"conv{s}_block") and n.endswith("_out"))
        for s in (2, 3, 4, 5)
    )
    for depth, (kind, counts) in IMAGENET_STAGES.items():
        if kind == "bottleneck" and counts == blocks:
            return depth
    raise ValueError(
        f"{model_name!r} is not a keras.applications ResNet50/101/152 (blocks "
        f"per stage {blocks}); only those v1 layouts can be imported."
    )


def _weighted_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _weighted_layers(layer)
        elif layer.weights:
            yield layer

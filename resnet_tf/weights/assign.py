"""Assign weights to a resnet-tf model by layer name (the scheme in
``resnet_tf/blocks.py``: ``conv1_conv``, ``conv{stage}_block{b}_{i}_conv``,
``..._bn``, ``predictions``).

Every shape is checked before anything is assigned, so a mismatch never
leaves a model half-loaded.
"""

import numpy as np

import keras


def named_weights(model):
    """``{layer_name: [np.ndarray, ...]}`` for every layer that has weights."""
    out = {}
    for layer in weighted_layers(model):
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
    layers = {layer.name: layer for layer in weighted_layers(model)}
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


def weighted_layers(model):
    """Every layer of ``model`` that holds weights, nested models walked."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from weighted_layers(layer)
        elif layer.weights:
            yield layer

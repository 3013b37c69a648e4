"""keras.applications ResNet50/101/152 (v1: stride on the first 1x1,
convolutions with bias, BN epsilon 1.001e-5; the layer names are
resnet-tf's own, ``conv2_block1_1_conv`` ...).

- ``from_keras_applications``: an in-memory model (or a saved one) to a
  resnet-tf ``ResNet`` with the same outputs, taking the same (caffe) input.
- ``read_keras_applications``: a weight file to ``SourceWeights`` for
  ``resnet_tf.weights.import_classifier``, which also folds the caffe input
  convention into conv1.
"""

import numpy as np

import keras

from resnet_tf.backbone import ResNet
from resnet_tf.model_dir import load_keras_file
from resnet_tf.weights.assign import assign_by_name, named_weights
from resnet_tf.zoo import IMAGENET_STAGES


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




def read_keras_applications(path):
    """Read a keras.applications ResNet50/101/152 file.

    Accepted files:
    - the ImageNet weight files keras.applications downloads
      (``resnet50_weights_tf_dim_ordering_tf_kernels[_notop].h5``): Keras 2
      HDF5 weights, a group per layer listed in the ``layer_names``
      attribute, with or without the top;
    - a whole model saved with ``model.save("x.h5")`` (the same weights
      under ``model_weights``) or ``model.save("x.keras")``;
    - weights saved by Keras 3 with ``model.save_weights("x.weights.h5")``
      (``layers/<name>/vars/<i>``).

    Args:
        path: the file.
    Returns:
        ``SourceWeights`` with the v1 layout (stride on the first 1x1),
        conv bias, the file's BN epsilon (1.001e-5 for keras.applications),
        and the caffe input convention (BGR, mean pixel subtracted).
    Raises:
        ValueError naming ``path``: missing, empty, a git-lfs pointer, not
        HDF5/zip, truncated, or not a ResNet50/101/152 (e.g. a ResNet50V2).
    """
    import h5py

    from resnet_tf.weights.convention import KERAS_CAFFE
    from resnet_tf.weights.files import SourceWeights, check_weight_file, damaged

    what = "keras.applications ResNet"
    check_weight_file(path, what)
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic[:4] == b"PK\x03\x04":
        model = load_keras_file(path, f"{what} model",
                                hint="save the keras.applications model again")
        weights, epsilon = named_weights(model), _model_epsilon(model)
    elif magic == b"\x89HDF\r\n\x1a\n":
        try:
            with h5py.File(path, "r") as f:
                weights, epsilon = _read_h5_weights(f)
        except (OSError, KeyError, ValueError) as e:
            if isinstance(e, ValueError) and str(e).startswith(str(path)):
                raise
            raise damaged(path, f"{what} HDF5", e) from e
    else:
        raise ValueError(f"{path}: not a keras.applications file (neither HDF5 nor a "
                         ".keras zip archive: it starts with {magic!r}). Give the .h5 "
                         "weights file or a saved .keras/.h5 model.")
    names = set(weights)
    if any("preact" in n or n == "post_bn" for n in names):
        raise ValueError(f"{path}: a pre-activation ResNetV2 (layers 'preact'/'post_bn'); "
                         "only keras.applications ResNet50/101/152, the paper's v1 "
                         "layout, can be imported.")
    try:
        depth = _keras_applications_depth(
            {f"{n.rsplit('_', 2)[0]}_out" for n in names if n.endswith("_3_conv")}, path)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if "conv1_conv" not in names or len(weights["conv1_conv"]) != 2:
        raise ValueError(f"{path}: no conv1_conv with kernel and bias; not a "
                         "keras.applications ResNet (v1, convolutions with bias).")
    top = "predictions" in names
    config = dict(depth=depth, family="imagenet", shortcut="B", stride_on="1x1",
                  conv_bias=True, bn_epsilon=epsilon, include_top=top)
    if top:
        config["classes"] = int(weights["predictions"][0].shape[-1])
    keep = {n: w for n, w in weights.items() if n.startswith("conv") or n == "predictions"}
    return SourceWeights(weights=keep, config=config, convention=KERAS_CAFFE,
                         source="keras-applications", path=str(path),
                         details={"layout": "v1 (stride on the first 1x1), conv bias"})


# keras.applications builds every BatchNormalization with this epsilon
# (keras/src/applications/resnet.py); Keras 2 weight files don't store it.
KERAS_APPLICATIONS_BN_EPSILON = 1.001e-5


def _model_epsilon(model):
    bn = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    return float(bn[0].epsilon) if bn else KERAS_APPLICATIONS_BN_EPSILON


def _read_h5_weights(f):
    """``({layer: [arrays]}, epsilon)`` from a Keras 2 or Keras 3 HDF5 file."""
    epsilon = KERAS_APPLICATIONS_BN_EPSILON
    if "model_weights" in f:  # a whole model saved as .h5
        config = f.attrs.get("model_config")
        if config is not None:
            import json

            text = config.decode() if isinstance(config, bytes) else config
            for layer in json.loads(text)["config"]["layers"]:
                if layer["class_name"] == "BatchNormalization":
                    epsilon = float(layer["config"]["epsilon"])
                    break
        f = f["model_weights"]
    if "layer_names" in f.attrs:  # Keras 2 layout
        out = {}
        for raw in f.attrs["layer_names"]:
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            group = f[name]
            wnames = [w.decode() if isinstance(w, bytes) else str(w)
                      for w in group.attrs.get("weight_names", [])]
            if wnames:
                out[name] = [np.asarray(group[w], np.float32) for w in wnames]
        return out, epsilon
    if "layers" in f:  # Keras 3 .weights.h5: layers/<name>/vars/<i>
        out = {}
        for name, group in f["layers"].items():
            if "vars" in group and len(group["vars"]):
                v = group["vars"]
                out[name] = [np.asarray(v[str(i)], np.float32) for i in range(len(v))]
        return out, epsilon
    raise ValueError("no 'layer_names' attribute, 'model_weights' or 'layers' group: "
                     "not a Keras weights file")

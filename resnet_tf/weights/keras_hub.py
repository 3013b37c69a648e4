"""keras-hub ResNet presets saved to a local folder, renamed to resnet-tf's
layers.

A preset folder (``ResNetBackbone.save_to_preset`` /
``ResNetImageClassifier.save_to_preset``, keras-hub 0.32) holds:

    config.json           the backbone's Keras config (ResNetBackbone)
    model.weights.h5      the backbone's weights (Keras 3 weights file)
    task.json             the classifier's config, if a task was saved
    task.weights.h5       the classifier's own weights (the Dense head)
    preprocessor.json     ResNetImageClassifierPreprocessor, with its
    image_converter.json  ResNetImageConverter: pixels * scale + offset
    metadata.json         versions, parameter count

A Keras 3 weights file keys each layer by its class (``conv2d_17``), not
by its name, in the order of the model's layers, so the backbone is built
from ``config.json`` with keras-hub and ``load_weights`` reads the file;
the layers are then read by name. Nothing is downloaded: the folder is read
directly, never through ``from_preset`` (which would fetch a built-in
preset whose name equals a relative folder path).

The layout (keras-hub ``src/models/resnet/resnet_backbone.py``, 0.32.0):
stem ``conv1_pad`` ZeroPadding2D(3), ``conv1_conv`` 7x7/2 valid without
bias, ``conv1_bn`` (epsilon 1e-5, momentum 0.9), ReLU, ``pool1_pad``
ZeroPadding2D(1), ``pool1_pool`` 3x3/2 max pool: resnet-tf's stem exactly.
Blocks ``stack{s}_block{b}_{i}_conv`` / ``_bn`` (s, b from 0; i = 0 for the
1x1 projection shortcut, 1, 2[, 3] for the residual branch), convolutions
without bias, BN epsilon 1e-5; a bottleneck block's stride sits on its 3x3
(v1.5, as in timm, from which keras-hub's ImageNet presets were
converted), a basic block's on its first 3x3; a strided 3x3 is preceded by
ZeroPadding2D(1) and is valid (resnet-tf's padding). Projection shortcuts
where the shape changes: option B.

Names -> resnet-tf names:

    conv1_conv, conv1_bn                 conv1_conv, conv1_bn
    stack{s}_block{b}_{i}_conv, _bn      conv{s+2}_block{b+1}_{i}_conv, _bn
    predictions (the task's Dense)       predictions

Not representable in resnet-tf, refused with a ValueError naming the
folder: ``use_pre_activation`` (ResNetV2), ``block_type`` ``*_vd``
(ResNet-vd: average-pool shortcut, usually a 3-convolution deep stem), any
other stem, widths, strides or depth (e.g. timm's bottleneck resnet26), and
a max-pooling classifier head.
"""

import json
import os
import re

import numpy as np

from resnet_tf.weights.convention import InputConvention
from resnet_tf.weights.files import LFS_PREFIX, SourceWeights, check_weight_file, damaged
from resnet_tf.zoo import IMAGENET_STAGES

BACKBONE_CONFIG = "config.json"
BACKBONE_WEIGHTS = "model.weights.h5"
TASK_CONFIG = "task.json"
TASK_WEIGHTS = "task.weights.h5"
PREPROCESSOR_CONFIG = "preprocessor.json"
IMAGE_CONVERTER_CONFIG = "image_converter.json"

_BLOCK_TYPES = {"basic_block": "basic", "bottleneck_block": "bottleneck"}
_BLOCK_LAYER = re.compile(r"^stack(\d+)_block(\d+)_([0-3])_(conv|bn)$")
_INSTALL = "pip install --no-deps keras-hub==0.32.0 tokenizers==0.23.3"


def read_keras_hub(path, convention=None):
    """A keras-hub ResNet-18/34/50/101/152 preset folder, as resnet-tf
    weights.

    Args:
        path: the preset folder (``save_to_preset``'s ``preset_dir``).
        convention: an ``InputConvention`` for a folder that carries no image
            converter (a backbone saved alone); with one in the folder it
            must be None.
    Returns:
        ``SourceWeights``:

        - ``weights``: ``{resnet-tf layer name: [np.ndarray float32]}``;
          Conv2D ``[kernel [kh, kw, in, out]]`` (no bias), BN ``[gamma,
          beta, moving_mean, moving_variance]`` each ``[C]``, and with a
          task ``predictions`` ``[kernel [2048 or 512, classes], bias
          [classes]]``. conv1's kernel still expects keras-hub's normalised
          input (``convention``).
        - ``config``: ``ResNet`` arguments: depth, family "imagenet",
          shortcut "B", stride_on ("3x3": keras-hub's bottleneck strides its
          3x3), conv_bias False, bn_epsilon (1e-5), include_top (a
          ``task.json`` classifier present) and classes.
        - ``convention``: from the image converter, which computes
          ``x = rgb * scale + offset`` on RGB pixels in [0, 255] (per
          channel), i.e. ``mean = -offset / scale`` and ``std = 1 / scale``
          in pixel units.
        - ``details``: the preset's Keras classes, the converter's image size and
          interpolation, the head's activation and dropout, keras-hub
          version, where the convention came from.
    Raises:
        ValueError naming the folder or file: no folder, missing
        ``config.json`` / ``model.weights.h5`` (or ``task.weights.h5``
        beside a ``task.json``), a git-lfs pointer, an empty, truncated or
        unreadable file, invalid JSON, a config that is not a keras-hub
        ResNet, a layout resnet-tf cannot represent (ResNetV2, ResNet-vd,
        another stem, depth, width or pooling), weights that do not fit the
        config, no input convention; keras-hub not installed.
    """
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        what = "is a file" if os.path.isfile(folder) else "does not exist"
        raise ValueError(
            f"{folder}: {what}; give the keras-hub preset folder (the directory "
            f"save_to_preset wrote, holding {BACKBONE_CONFIG} and {BACKBONE_WEIGHTS}).")
    config_path = os.path.join(folder, BACKBONE_CONFIG)
    if not os.path.isfile(config_path):
        raise ValueError(
            f"{config_path}: no such file, so {folder} is not a keras-hub preset folder "
            f"(it needs {BACKBONE_CONFIG} and {BACKBONE_WEIGHTS}, as save_to_preset "
            "writes them).")
    backbone_json = _read_json(config_path)
    weights_path = os.path.join(folder, BACKBONE_WEIGHTS)
    if not os.path.exists(weights_path) and os.path.exists(
            os.path.join(folder, "model.weights.json")):
        raise ValueError(f"{folder}: holds sharded weights (model.weights.json); only a "
                         f"single {BACKBONE_WEIGHTS} is read (a ResNet is never sharded "
                         "by save_to_preset's default 10 GB shard size).")
    check_weight_file(weights_path, f"keras-hub {BACKBONE_WEIGHTS}")
    layout = _check_backbone_config(config_path, backbone_json)

    task_path = os.path.join(folder, TASK_CONFIG)
    task_json = _read_json(task_path) if os.path.isfile(task_path) else None
    task_weights_path = os.path.join(folder, TASK_WEIGHTS)
    if task_json is not None:
        _check_task_config(task_path, task_json, backbone_json)
        check_weight_file(task_weights_path, f"keras-hub {TASK_WEIGHTS}")

    converter, converter_from = _find_converter(folder, task_json)
    if converter is not None and convention is not None:
        raise ValueError(f"{folder}: carries its own image converter ({converter_from}); "
                         "do not pass a convention as well.")
    if converter is None and convention is None:
        raise ValueError(
            f"{folder}: has no image converter ({PREPROCESSOR_CONFIG}, "
            f"{IMAGE_CONVERTER_CONFIG} or a preprocessor in {TASK_CONFIG}), so how its "
            "inputs are normalised is unknown. Save the preset together with its "
            "preprocessor (ResNetImageClassifier.save_to_preset), or pass the "
            "convention it was trained with.")
    if converter is not None:
        convention = convention_from_converter(converter, converter_from)

    keras, _ = _import_keras_hub(folder)
    if task_json is not None:
        task = _deserialize(keras, task_json, task_path)
        backbone = task.backbone
    else:
        task = None
        backbone = _deserialize(keras, backbone_json, config_path)
    _load(backbone.load_weights, weights_path, config_path)
    if task is not None:
        _load(task.load_task_weights, task_weights_path, task_path)

    stride_on, bn_epsilon = _check_built(folder, backbone, layout["block"])
    weights = _renamed(folder, backbone)
    config = dict(depth=layout["depth"], family="imagenet", shortcut="B",
                  stride_on=stride_on, conv_bias=False, bn_epsilon=bn_epsilon,
                  include_top=task is not None)
    details = {"preset_class": backbone_json.get("class_name"),
               "block_type": backbone_json["config"]["block_type"],
               "convention_from": converter_from or "given by the caller"}
    if converter is not None:
        details["image_size"] = converter.get("image_size")
        details["interpolation"] = converter.get("interpolation")
        details["crop_to_aspect_ratio"] = converter.get("crop_to_aspect_ratio")
    if task is not None:
        head = task.get_layer("predictions")
        weights["predictions"] = [np.asarray(w, np.float32) for w in head.get_weights()]
        config["classes"] = int(head.units)
        details["task_class"] = task_json.get("class_name")
        details["classifier_activation"] = task_json["config"].get("activation")
        details["dropout"] = task_json["config"].get("dropout")
    metadata = os.path.join(folder, "metadata.json")
    if os.path.isfile(metadata):
        try:
            with open(metadata) as f:
                details["keras_hub_version"] = json.load(f).get("keras_hub_version")
        except (OSError, ValueError, AttributeError):
            pass
    return SourceWeights(weights, config, convention, "keras-hub", folder, details)


def convention_from_converter(converter, where=""):
    """The ``InputConvention`` of a keras-hub image converter's config.

    keras-hub's ``ImageConverter`` (``src/layers/preprocessing/
    image_converter.py``) computes ``x = rgb * scale + offset`` per channel
    on RGB pixels in [0, 255] (a scalar applies to all three; None skips the
    step). The legacy form ``mean`` and ``variance`` (with ``scale``) means
    ``x = (rgb * scale - mean) / sqrt(variance)``.

    Args:
        converter: the converter's ``config`` dict (``scale``, ``offset``,
            or ``mean``/``variance``).
        where: the file it came from, for messages.
    Returns:
        ``InputConvention("RGB", mean=-offset / scale, std=1 / scale)``, both
        in [0, 255] pixel units.
    Raises:
        ValueError naming ``where``: a scale that is zero, negative or not
            finite, or values that are not one or three numbers.
    """
    scale = _per_channel(converter.get("scale"), 1.0, "scale", where)
    offset = _per_channel(converter.get("offset"), 0.0, "offset", where)
    if converter.get("mean") is not None and converter.get("variance") is not None:
        std = np.sqrt(_per_channel(converter["variance"], 1.0, "variance", where))
        offset = -_per_channel(converter["mean"], 0.0, "mean", where) / std
        scale = scale / std
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ValueError(f"{where}: image converter scale {scale.tolist()} must be positive "
                         "and finite to be a mean/std normalisation.")
    mean = -offset / scale + 0.0  # + 0.0: no -0.0 in the record
    std = 1.0 / scale
    # Rounded to 1e-9 pixel levels: float noise of -offset / scale, no more.
    return InputConvention(
        "RGB", tuple(round(float(m), 9) for m in mean), tuple(round(float(s), 9) for s in std),
        description=(f"keras-hub image converter ({where}): RGB in [0, 255] * scale "
                     f"{[round(float(v), 8) for v in scale]} + offset "
                     f"{[round(float(v), 6) for v in offset]}"))


def _per_channel(value, default, what, where):
    if value is None:
        return np.full(3, default, np.float64)
    arr = np.asarray(value, np.float64).reshape(-1)
    if arr.size == 1:
        return np.full(3, arr[0])
    if arr.size != 3:
        raise ValueError(f"{where}: image converter {what} {value!r} has {arr.size} values; "
                         "one or three (R, G, B) are needed.")
    return arr


def _read_json(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith(LFS_PREFIX):
        raise ValueError(f"{path}: this is a git-lfs pointer, not the JSON file it stands "
                         "for. Fetch it with `git lfs pull`, then read the folder again.")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: not valid JSON ({len(raw)} bytes; {e}); the file is "
                         "truncated or damaged, save or download the preset again.") from e
    if not isinstance(obj, dict) or not isinstance(obj.get("config"), dict):
        raise ValueError(f"{path}: not a Keras object config (no 'config' dict); not a "
                         "keras-hub preset file.")
    return obj


def _check_backbone_config(path, cfg):
    """Depth and block kind of a keras-hub ResNetBackbone config, or a
    ValueError saying what resnet-tf cannot represent."""
    cls = cfg.get("class_name")
    if cls != "ResNetBackbone":
        raise ValueError(
            f"{path}: holds a keras-hub {cls or 'object of unknown class'} "
            f"(registered as {cfg.get('registered_name')!r}), not a ResNetBackbone; only "
            "keras-hub ResNet presets can be read.")
    c = cfg["config"]
    folder = os.path.dirname(path)
    if c.get("use_pre_activation"):
        raise ValueError(
            f"{folder}: a pre-activation ResNetV2 (use_pre_activation true in {path}): BN "
            "and ReLU come before each convolution and after the last stage; resnet-tf "
            "builds only the original post-activation ResNet.")
    block_type = c.get("block_type")
    if isinstance(block_type, str) and block_type.endswith("_vd"):
        raise ValueError(
            f"{folder}: a ResNet-vd (block_type {block_type!r} in {path}): its "
            "projection shortcuts average-pool then apply a stride-1 1x1, and its stem "
            f"has {len(c.get('input_conv_filters') or [])} convolutions; resnet-tf's "
            "shortcut is a strided 1x1 and its stem one 7x7/2 convolution.")
    if block_type not in _BLOCK_TYPES:
        raise ValueError(f"{path}: unknown block_type {block_type!r}; expected "
                         "'basic_block' or 'bottleneck_block'.")
    kernels, filters = c.get("input_conv_kernel_sizes"), c.get("input_conv_filters")
    if list(kernels or []) != [7] or list(filters or []) != [64]:
        raise ValueError(
            f"{folder}: its stem has convolutions with kernels {kernels} and filters "
            f"{filters} ({path}); resnet-tf's stem is one 7x7/2 convolution with 64 "
            "filters (ZeroPadding2D(3), valid), BN, ReLU, ZeroPadding2D(1), 3x3/2 max pool.")
    for key, want in (("stackwise_num_filters", [64, 128, 256, 512]),
                      ("stackwise_num_strides", [1, 2, 2, 2])):
        if list(c.get(key) or []) != want:
            raise ValueError(f"{folder}: {key} {c.get(key)} in {path}; resnet-tf's "
                             f"ImageNet ResNets have {want}.")
    blocks = tuple(c.get("stackwise_num_blocks") or ())
    kind = _BLOCK_TYPES[block_type]
    depth = next((d for d, (k, n) in IMAGENET_STAGES.items() if k == kind and n == blocks),
                 None)
    if depth is None:
        raise ValueError(
            f"{folder}: {kind} blocks per stage {list(blocks)} ({path}) match no ResNet of "
            "Table 1 (basic 2,2,2,2 -> 18; 3,4,6,3 -> 34; bottleneck 3,4,6,3 -> 50; "
            "3,4,23,3 -> 101; 3,8,36,3 -> 152).")
    shape = c.get("image_shape") or [None, None, 3]
    if len(shape) != 3 or shape[-1] != 3:
        raise ValueError(f"{folder}: image_shape {shape} in {path}; only RGB input "
                         "(3 channels, channels last) can be imported.")
    dtype = c.get("dtype")
    if isinstance(dtype, dict) and dtype.get("class_name") not in (
            None, "DTypePolicy", "FloatDTypePolicy"):
        raise ValueError(f"{folder}: a quantized preset (dtype policy "
                         f"{dtype.get('class_name')} in {path}); save it in float first.")
    return {"depth": depth, "block": kind}


def _check_task_config(path, task, backbone_json):
    cls = task.get("class_name")
    c = task["config"]
    backbone = c.get("backbone")
    if "num_classes" not in c or not isinstance(backbone, dict):
        raise ValueError(
            f"{path}: holds a keras-hub {cls}, not an image classifier (no num_classes "
            f"and backbone); only a ResNetImageClassifier's head can be read. Remove "
            f"{TASK_CONFIG} and {TASK_WEIGHTS} to read the backbone alone.")
    if backbone.get("class_name") != "ResNetBackbone":
        raise ValueError(f"{path}: the classifier's backbone is a "
                         f"{backbone.get('class_name')}, not a ResNetBackbone.")
    arch = ("input_conv_filters", "input_conv_kernel_sizes", "stackwise_num_filters",
            "stackwise_num_blocks", "stackwise_num_strides", "block_type",
            "use_pre_activation")
    differ = [k for k in arch if backbone["config"].get(k) != backbone_json["config"].get(k)]
    if differ:
        raise ValueError(
            f"{path}: its backbone differs from {BACKBONE_CONFIG} in {differ}; the folder "
            "mixes two presets. Save the classifier again with save_to_preset.")
    if c.get("pooling", "avg") != "avg":
        raise ValueError(
            f"{os.path.dirname(path)}: the classifier pools with {c.get('pooling')!r} "
            f"({path}); resnet-tf's classifier uses global average pooling.")


def _find_converter(folder, task_json):
    """The image converter's config dict and the file it came from, as
    keras-hub would use it: the task's preprocessor, else preprocessor.json,
    else image_converter.json."""
    candidates = []
    if task_json is not None:
        pre = task_json["config"].get("preprocessor")
        if isinstance(pre, dict):
            candidates.append((pre, os.path.join(folder, TASK_CONFIG)))
    pre_path = os.path.join(folder, PREPROCESSOR_CONFIG)
    if os.path.isfile(pre_path):
        candidates.append((_read_json(pre_path), pre_path))
    for pre, where in candidates:
        conv = pre.get("config", {}).get("image_converter")
        if isinstance(conv, dict) and isinstance(conv.get("config"), dict):
            return conv["config"], where
    conv_path = os.path.join(folder, IMAGE_CONVERTER_CONFIG)
    if os.path.isfile(conv_path):
        return _read_json(conv_path)["config"], conv_path
    return None, None


def _import_keras_hub(folder):
    try:
        import keras
        import keras_hub
    except ImportError as e:
        raise ValueError(
            f"{folder}: reading keras-hub presets needs keras-hub, which is not "
            f"installed or does not import ({e}). Install it beside tensorflow-cpu "
            f"without its dependencies: {_INSTALL}") from e
    return keras, keras_hub


def _deserialize(keras, cfg, path):
    try:
        return keras.saving.deserialize_keras_object(cfg)
    except Exception as e:
        raise ValueError(f"{path}: keras-hub could not build the model it describes "
                         f"({type(e).__name__}: {_lines(e, 1)}).") from e


def _load(load, weights_path, config_path):
    """Run keras-hub's ``load`` (Keras ``load_weights``) on ``weights_path``.

    Keras raises when a layer finds no or misshapen variables in the file;
    its warnings about skipped containers, which come with that failure, are
    held back then and passed on only after a load that succeeded.
    """
    import warnings

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            load(weights_path)
    except ValueError as e:
        raise ValueError(
            f"{weights_path}: does not fit the model of {config_path} ({_lines(e)}); the "
            "folder mixes files of two presets, or the file is damaged.") from e
    except Exception as e:
        raise damaged(weights_path, f"keras-hub {os.path.basename(weights_path)}", e) from e
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _lines(error, n=2):
    """The first ``n`` non-empty lines of an error's message, on one line."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return " ".join(lines[:n]) or type(error).__name__


def _check_built(folder, backbone, block):
    """Check the built keras-hub layers against resnet-tf's layout; return
    ``(stride_on, bn_epsilon)``."""
    import keras

    layers = {layer.name: layer for layer in backbone.layers}

    def need(ok, what):
        if not ok:
            raise ValueError(f"{folder}: {what}; resnet-tf cannot represent this layout "
                             "(keras-hub changed its ResNet, or the preset is not a plain one).")

    def pad(name, p):
        layer = layers.get(name)
        need(isinstance(layer, keras.layers.ZeroPadding2D)
             and tuple(map(tuple, layer.padding)) == ((p, p), (p, p)),
             f"{name} is not a symmetric ZeroPadding2D({p})")

    pad("conv1_pad", 3)
    stem = layers.get("conv1_conv")
    need(isinstance(stem, keras.layers.Conv2D) and tuple(stem.kernel_size) == (7, 7)
         and tuple(stem.strides) == (2, 2) and stem.padding == "valid",
         "the stem is not a 7x7/2 valid convolution")
    pad("pool1_pad", 1)
    pool = layers.get("pool1_pool")
    need(isinstance(pool, keras.layers.MaxPooling2D) and tuple(pool.pool_size) == (3, 3)
         and tuple(pool.strides) == (2, 2) and pool.padding == "valid",
         "the stem's pooling is not a 3x3/2 valid max pool")
    epsilons, stride_on = set(), "3x3"
    for layer in backbone.layers:
        kind = type(layer).__name__
        need(not isinstance(layer, (keras.layers.AveragePooling2D,))
             and "pre_activation" not in layer.name and layer.name != "post_bn",
             f"layer {layer.name} ({kind}) is not part of a post-activation ResNet")
        if isinstance(layer, keras.layers.BatchNormalization):
            epsilons.add(float(layer.epsilon))
            need(layer.center and layer.scale, f"{layer.name} lacks beta or gamma")
        if isinstance(layer, keras.layers.Conv2D):
            need(not layer.use_bias, f"{layer.name} has a bias")
            k, s = tuple(layer.kernel_size), tuple(layer.strides)
            if s != (1, 1) and k != (1, 1) and layer.name != "conv1_conv":
                need(layer.padding == "valid", f"{layer.name} is strided with "
                     f"{layer.padding!r} padding")
                pad(layer.name[:-len("conv")] + "pad", k[0] // 2)
                if block == "bottleneck":
                    need(layer.name.endswith("_2_conv"),
                         f"{layer.name} carries a bottleneck's stride")
            elif s != (1, 1) and k == (1, 1) and block == "bottleneck" \
                    and layer.name.endswith("_1_conv"):
                stride_on = "1x1"
            elif s == (1, 1) and k != (1, 1):
                need(layer.padding == "same", f"{layer.name} has {layer.padding!r} padding")
    need(len(epsilons) == 1, f"BN epsilons {sorted(epsilons)} differ between layers")
    return stride_on, epsilons.pop()


def _renamed(folder, backbone):
    """``{resnet-tf name: [float32 arrays]}`` of the backbone's layers."""
    weights = {}
    for layer in backbone.layers:
        if not layer.weights:
            continue
        name = layer.name
        if name not in ("conv1_conv", "conv1_bn"):
            m = _BLOCK_LAYER.match(name)
            if m is None:
                raise ValueError(f"{folder}: unexpected weighted layer {name!r} "
                                 f"({type(layer).__name__}) in the keras-hub ResNet.")
            stack, block, i, what = m.groups()
            name = f"conv{int(stack) + 2}_block{int(block) + 1}_{i}_{what}"
        weights[name] = [np.asarray(w, np.float32) for w in layer.get_weights()]
    return weights

"""torchvision and timm ResNet checkpoints (``.pth`` state dicts,
``.safetensors``) renamed to resnet-tf's layers.

The layout both write (torchvision ``models/resnet.py``; timm
``timm/models/resnet.py`` keeps the same key names for its plain
``resnet*``): v1.5, the stride on the 3x3 of a bottleneck block (``stride_on
="3x3"``), convolutions without bias, BN epsilon 1e-5, padding
``k // 2`` (equal to resnet-tf's explicit zero padding before a strided
convolution), a 3x3/2 max pool with padding 1 after the stem.

Key names -> resnet-tf names:

    conv1.weight, bn1.*                    conv1_conv, conv1_bn
    layer{s}.{b}.conv{i}.weight, bn{i}.*   conv{s+1}_block{b+1}_{i}_conv, _bn
    layer{s}.{b}.downsample.0/.1           conv{s+1}_block{b+1}_0_conv, _0_bn
    fc.weight [out, in], fc.bias           predictions (kernel [in, out])

Convolution kernels go from OIHW to HWIO. ``num_batches_tracked`` is
dropped (it only matters to BN with momentum None in training).

Files are read with ``torch.load(weights_only=True)`` (no arbitrary
unpickling) or the ``safetensors`` package.
"""

import json
import os
import re

import numpy as np

from resnet_tf.weights.convention import TORCH_IMAGENET, InputConvention
from resnet_tf.weights.files import SourceWeights, check_weight_file, damaged
from resnet_tf.zoo import IMAGENET_STAGES

TORCH_BN_EPSILON = 1e-5
_BLOCK_KEY = re.compile(r"^layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.")
_WRAPPERS = ("state_dict", "model", "state_dict_ema", "model_ema")


def read_state_dict(path, what):
    """``{key: float32 np.ndarray}`` from a ``.pth``/``.pt``/``.bin`` or
    ``.safetensors`` file.

    A ``.pth`` holding a training checkpoint (a dict with ``state_dict``,
    ``model`` or ``state_dict_ema``) gives that state dict; a
    ``module.`` prefix (DataParallel) is removed.

    Raises:
        ValueError naming ``path``: missing, empty, git-lfs pointer,
            truncated or not a checkpoint; ``torch`` (for ``.pth``) or
            ``safetensors`` not installed (saying what to install).
    """
    check_weight_file(path, what)
    if str(path).endswith(".safetensors"):
        try:
            from safetensors.numpy import load_file
        except ImportError as e:
            raise ValueError(f"{path}: reading .safetensors files needs the safetensors "
                             "package: pip install safetensors") from e
        try:
            tensors = load_file(str(path))
        except Exception as e:
            raise damaged(path, f"{what} .safetensors", e) from e
        return {k: np.asarray(v, np.float32) for k, v in tensors.items()
                if np.issubdtype(v.dtype, np.floating)}
    try:
        import torch
    except ImportError as e:
        raise ValueError(
            f"{path}: reading PyTorch checkpoints needs torch, which is not installed. "
            "Install it (pip install torch; the CPU build is enough), or convert the "
            "file to .safetensors where torch is installed.") from e
    import argparse

    try:
        # timm's training checkpoints hold their argparse.Namespace of arguments.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise damaged(path, f"{what} PyTorch", e) from e
    for key in _WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state dict of "
                         "tensors; save the model with torch.save(model.state_dict(), "
                         "path).")
    out = {}
    for k, v in obj.items():
        k = k[len("module."):] if k.startswith("module.") else k
        if v.is_floating_point():
            out[k] = v.detach().to(torch.float32).cpu().numpy()
    return out


def state_dict_to_resnet_tf(state, path, source):
    """Rename a torchvision-layout state dict to resnet-tf layers.

    Args:
        state: ``{key: np.ndarray}`` (``read_state_dict``).
        path: the file, for messages.
        source: "torchvision" or "timm".
    Returns:
        ``(weights, config)``: ``{layer: [arrays]}`` and the ``ResNet``
        arguments (depth, stride_on "3x3", no conv bias, BN eps 1e-5, top).
    Raises:
        ValueError naming ``path`` when the keys or shapes are not those of a
        torchvision ResNet-18/34/50/101/152 (e.g. a ResNeXt, a wide ResNet,
        timm's ``resnet50d`` deep stem, a VGG).
    """
    stem = "conv1.weight"
    if stem not in state or state[stem].ndim != 4 or state[stem].shape[2:] != (7, 7):
        found = [k for k in state if k.startswith("conv1")][:3] or list(state)[:3]
        raise ValueError(
            f"{path}: no 7x7 stem 'conv1.weight' (found {found}); not a plain "
            f"{source} ResNet-18/34/50/101/152 (deep-stem variants such as resnet50d "
            "and other architectures cannot be imported).")
    blocks = {}
    for key in state:
        m = _BLOCK_KEY.match(key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
        elif not (key.startswith(("conv1.", "bn1.", "fc.")) or key.endswith("num_batches_tracked")):
            raise ValueError(f"{path}: unexpected key {key!r}; not a plain {source} "
                             "ResNet (only torchvision's key names are understood).")
    counts = tuple(len(blocks.get(s, ())) for s in (1, 2, 3, 4))
    kind = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
    depth = next((d for d, (k, c) in IMAGENET_STAGES.items()
                  if k == kind and c == counts), None)
    if depth is None:
        raise ValueError(f"{path}: {kind} blocks per stage {counts} match no ResNet of "
                         "Table 1 (18: 2,2,2,2; 34/50: 3,4,6,3; 101: 3,4,23,3; 152: "
                         "3,8,36,3).")
    if kind == "bottleneck" and state["layer1.0.conv2.weight"].shape[1] != \
            state["layer1.0.conv1.weight"].shape[0]:
        raise ValueError(f"{path}: grouped 3x3 convolutions (a ResNeXt); only plain "
                         "ResNets can be imported.")
    weights = {"conv1_conv": [_hwio(state[stem])], "conv1_bn": _bn(state, "bn1", path)}
    n_convs = 3 if kind == "bottleneck" else 2
    for s in range(1, 5):
        for b in range(counts[s - 1]):
            prefix, name = f"layer{s}.{b}", f"conv{s + 1}_block{b + 1}"
            for i in range(1, n_convs + 1):
                weights[f"{name}_{i}_conv"] = [_hwio(_get(state, f"{prefix}.conv{i}.weight", path))]
                weights[f"{name}_{i}_bn"] = _bn(state, f"{prefix}.bn{i}", path)
            if f"{prefix}.downsample.0.weight" in state:
                weights[f"{name}_0_conv"] = [_hwio(state[f"{prefix}.downsample.0.weight"])]
                weights[f"{name}_0_bn"] = _bn(state, f"{prefix}.downsample.1", path)
    config = dict(depth=depth, family="imagenet", shortcut="B", stride_on="3x3",
                  conv_bias=False, bn_epsilon=TORCH_BN_EPSILON, include_top="fc.weight" in state)
    if config["include_top"]:
        fc = state["fc.weight"]
        weights["predictions"] = [np.ascontiguousarray(fc.T),
                                  state.get("fc.bias", np.zeros(fc.shape[0], np.float32))]
        config["classes"] = int(fc.shape[0])
    width = state[stem].shape[0]
    if width != 64:
        config["width"] = int(width)
    return weights, config


def read_torchvision(path):
    """A torchvision ResNet-18/34/50/101/152 ``.pth`` state dict (as
    ``torch.save(model.state_dict(), path)`` writes it).

    Returns:
        ``SourceWeights`` with the torchvision input convention.
    Raises:
        ValueError naming ``path`` (see ``read_state_dict`` and
        ``state_dict_to_resnet_tf``).
    """
    state = read_state_dict(path, "torchvision ResNet")
    weights, config = state_dict_to_resnet_tf(state, path, "torchvision")
    return SourceWeights(weights, config, TORCH_IMAGENET, "torchvision", str(path),
                         {"layout": "v1.5 (stride on the 3x3), no conv bias"})


def read_timm(path):
    """A timm ``resnet*`` checkpoint: ``.safetensors`` (as timm and the
    Hugging Face hub store them) or ``.pth`` (a state dict or a timm training
    checkpoint).

    timm's pretrained config is read where the file carries one: a
    ``config.json`` beside the file (the hub layout: ``architecture``,
    ``num_classes``, ``pretrained_cfg`` with ``mean``, ``std`` and
    ``label_names``), or the ``.safetensors`` header metadata with the same
    fields as JSON strings. Otherwise the ImageNet mean and std, which every
    timm ``resnet*`` ImageNet weight uses.

    Returns:
        ``SourceWeights``; ``details["class_names"]`` when the config has
        ``label_names``.
    """
    state = read_state_dict(path, "timm ResNet")
    weights, config = state_dict_to_resnet_tf(state, path, "timm")
    cfg, where = _timm_config(path)
    pre = cfg.get("pretrained_cfg", cfg)
    convention, details = TORCH_IMAGENET, {"layout": "v1.5 (stride on the 3x3), no conv bias"}
    if "mean" in pre and "std" in pre:
        convention = InputConvention.from_unit_range(
            pre["mean"], pre["std"], description=f"timm pretrained_cfg mean {list(pre['mean'])}"
            f", std {list(pre['std'])} (from {where})")
    if cfg.get("architecture"):
        # Recorded only: the key and shape checks above refuse other layouts.
        details["architecture"] = cfg["architecture"]
    names = pre.get("label_names") or cfg.get("label_names")
    if names:
        details["class_names"] = list(names)
    if where:
        details["pretrained_cfg_from"] = where
    return SourceWeights(weights, config, convention, "timm", str(path), details)


def _timm_config(path):
    beside = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
    if os.path.isfile(beside):
        try:
            with open(beside) as f:
                return json.load(f), beside
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{beside}: the timm config beside {path} is not valid "
                             f"JSON ({e}); fix or remove it.") from e
    if str(path).endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(str(path), "np") as f:
            meta = f.metadata() or {}
        cfg = {}
        for key in ("architecture", "num_classes", "pretrained_cfg", "mean", "std",
                    "label_names"):
            if key in meta:
                try:
                    cfg[key] = json.loads(meta[key])
                except json.JSONDecodeError:
                    cfg[key] = meta[key]
        if cfg:
            return cfg, f"{path} (safetensors metadata)"
    return {}, None


def _get(state, key, path):
    if key not in state:
        raise ValueError(f"{path}: missing key {key!r}; the checkpoint is incomplete "
                         "or not a plain torchvision-layout ResNet.")
    return state[key]


def _hwio(w):
    if w.ndim != 4:
        raise ValueError(f"expected a 4-D convolution kernel, got shape {w.shape}")
    return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))


def _bn(state, prefix, path):
    return [_get(state, f"{prefix}.{k}", path)
            for k in ("weight", "bias", "running_mean", "running_var")]

"""One step from the ImageNet weights a user has to a resnet-tf classifier
directory: ``import_classifier`` (the ``resnet-tf import classifier``
command).

The directory written is an ordinary classifier directory
(``resnet_tf.model_dir``): ``evaluate``, ``predict``, ``export`` and
``--init-from`` of ``train detector`` / ``train localizer`` take it
unchanged. Its network takes resnet-tf's input, RGB in [0, 255] minus the
stored mean image, because the source's input convention is folded into
conv1 (``resnet_tf.weights.convention.fold_into_conv1``); its layout
(``stride_on``, ``conv_bias``, ``bn_epsilon``) is the source's, recorded in
the model config, and the detector and localizer build their trunks with it.
"""

import os
import time

import numpy as np

from resnet_tf.weights.assign import assign_by_name
from resnet_tf.weights.convention import fold_into_conv1, mean_image

SOURCES = ("keras-applications", "torchvision", "timm", "keras-hub")


def source_for_path(path):
    """The source a weight file most likely comes from, by its form: a folder
    is a keras-hub preset, ``.h5``/``.keras`` keras.applications, ``.pth``/
    ``.pt`` torchvision, ``.safetensors`` timm.

    Raises:
        ValueError naming ``path`` when its form says nothing; pass the source.
    """
    p = str(path)
    if os.path.isdir(p):
        return "keras-hub"
    for suffixes, source in (((".h5", ".keras"), "keras-applications"),
                             ((".pth", ".pt"), "torchvision"),
                             ((".safetensors",), "timm")):
        if p.endswith(suffixes):
            return source
    raise ValueError(f"{path}: can't tell which framework wrote it from its name; "
                     f"say which (one of {', '.join(SOURCES)}).")


def read_source(source, path):
    """``SourceWeights`` from ``path`` read as ``source`` (one of ``SOURCES``).

    Raises:
        ValueError: an unknown source, or the reader's error naming the file.
    """
    if source == "keras-applications":
        from resnet_tf.weights.keras_applications import read_keras_applications as read
    elif source == "torchvision":
        from resnet_tf.weights.torch_files import read_torchvision as read
    elif source == "timm":
        from resnet_tf.weights.torch_files import read_timm as read
    elif source == "keras-hub":
        from resnet_tf.weights.keras_hub import read_keras_hub as read
    else:
        raise ValueError(f"unknown weight source {source!r}; use one of "
                         f"{', '.join(SOURCES)}.")
    return read(path)


def import_classifier(source, path, out, *, class_index=None, classes=None,
                      depth=None, crop_size=224, eval_resize=256, seed=0):
    """Import a source network's ImageNet weights as a classifier directory.

    Args:
        source: "keras-applications", "torchvision", "timm" or "keras-hub".
        path: the weight file (keras-hub: the preset folder).
        out: the classifier directory to write (created).
        class_index: a class-index file giving the class names: Keras
            ``imagenet_class_index.json`` or ``LOC_synset_mapping.txt``.
            Its WordNet IDs become the class names (so ILSVRC data specs map
            onto the classes) and its human-readable names the display names
            ``predict`` prints. Without one, names come from the checkpoint
            where it carries them (timm ``label_names``), else they are
            numbered ("class_0000", ...).
        classes: the class count for a file without a classifier layer (a
            no-top file); the new top layer is initialised randomly (seed
            ``seed``) and needs training. With a top, it must equal the file's.
        depth: if given, the depth the file must have (a check).
        crop_size, eval_resize: the evaluation view recorded in the
            directory's preprocessing (shorter side 256, centre 224 crop: the
            view ImageNet weights are evaluated on).
    Returns:
        dict: directory, source, file, depth, layout, classes,
        class_names_from, convention, seconds.
    Raises:
        ValueError naming the file: unreadable, git-lfs pointer, wrong
        architecture or depth, a no-top file without ``classes`` or
        ``class_index``, a class count that disagrees with the file.
    """
    import keras

    from resnet_tf.backbone import ResNet
    from resnet_tf.data.preprocessing import Preprocessing
    from resnet_tf.model_dir import save_classifier

    t0 = time.time()
    sw = read_source(source, path)
    cfg = dict(sw.config)
    if depth is not None and int(depth) != cfg["depth"]:
        raise ValueError(f"{path}: holds a ResNet-{cfg['depth']}, not the ResNet-{depth} "
                         "asked for; pass the right file or --depth.")
    names, display, names_from = _class_names(sw, class_index, classes, path)
    has_top = cfg.pop("include_top")
    cfg["classes"] = len(names)
    weights = dict(sw.weights)
    conv1 = list(weights["conv1_conv"])
    conv1[0] = fold_into_conv1(conv1[0], sw.convention)
    weights["conv1_conv"] = conv1
    if not has_top:
        weights.pop("predictions", None)
        keras.utils.set_random_seed(seed)
    model = ResNet(**cfg, include_top=True, classifier_activation="softmax")
    assign_by_name(model, weights, source=f"{path} ({sw.source})",
                   skip=() if has_top else ("predictions",))
    imported = {"framework": sw.source, "file": os.path.abspath(str(path)),
                "input_convention": sw.convention.to_dict(),
                "folded_into": "conv1_conv: input channels in RGB order, divided by std",
                "top": "from the file" if has_top else f"new, random (seed {seed})",
                **{k: v for k, v in sw.details.items() if k != "class_names"}}
    prep = Preprocessing.for_style("imagenet", crop_size=crop_size, eval_resize=eval_resize,
                                   imported_from=imported)
    save_classifier(out, model, names, mean_image(sw.convention, crop_size), prep,
                    extra={"imported": imported,
                           **({"class_display_names": display} if display else {})})
    return {"directory": str(out), "source": sw.source, "file": str(path),
            "depth": cfg["depth"], "layout": {k: cfg[k] for k in
                                              ("stride_on", "conv_bias", "bn_epsilon")},
            "classes": len(names), "top": imported["top"],
            "class_names_from": names_from, "convention": sw.convention.to_dict(),
            "seconds": round(time.time() - t0, 2)}


def _class_names(sw, class_index, classes, path):
    """``(class names, display names or None, where they came from)``."""
    file_classes = sw.config.get("classes") if sw.config.get("include_top") else None
    names, display, names_from = None, None, None
    if class_index:
        from resnet_tf.data.labels import read_class_index

        display, names = read_class_index(class_index)
        names_from = str(class_index)
    elif sw.details.get("class_names"):
        names, names_from = list(sw.details["class_names"]), f"{path} (label_names)"
    count = file_classes or classes or (len(names) if names else None)
    if count is None:
        raise ValueError(
            f"{path}: has no classifier layer (a no-top file), so the class count is "
            "unknown. Pass --classes N (a new, randomly initialised top layer to train), "
            "or --class-index FILE, or import the file with the top.")
    if classes is not None and int(classes) != count:
        raise ValueError(f"{path}: its classifier has {count} classes, but --classes "
                         f"{classes} was given; leave --classes out for a file with a top.")
    if names is not None and len(names) != count:
        raise ValueError(f"{names_from}: {len(names)} class names, but {path}'s classifier "
                         f"has {count} classes; give the class-index file of this model.")
    if names is None:
        width = max(4, len(str(count - 1)))
        names = [f"class_{i:0{width}d}" for i in range(count)]
        names_from = "numbered (no class-index file given)"
    return list(names), display, names_from

"""The localizer directory: what ``localization.train`` writes and
evaluation, prediction and export read (on top of ``resnet_tf.model_dir``).

    DIR/localizer.weights.h5   the weights (trunk, head, the classifier copy)
    DIR/resnet_tf.json         kind "localizer": model config, class names,
                               preprocessing, the dtype policy, training
                               options, data report, results
    DIR/mean_image.npy         float32 [S, S, 3], the classifier's per-pixel
                               mean image (when it has one); S is the
                               classifier's crop size (224 ImageNet, 32 CIFAR)
    DIR/checkpoints/ DIR/backup/ DIR/history.csv DIR/logs/   written while
                               training (``resnet_tf.runner``)

A second-stage (RPN+R-CNN, ``localization.rcnn``) directory is a
localizer directory with ``"stage": "rcnn"`` in ``resnet_tf.json``:

    DIR/rcnn.weights.h5        the R-CNN's weights (``RegionClassifier``)
    DIR/resnet_tf.json         kind "localizer", stage "rcnn", "config": the
                               R-CNN's config, "num_proposals", "stage1":
                               "stage1" (the embedded first stage) and
                               "stage1_source" (the directory it was copied
                               from), class names, preprocessing, results
    DIR/mean_image.npy         as above
    DIR/stage1/                a copy of the first-stage localizer directory
                               (its weights, resnet_tf.json, mean image), so
                               the directory is complete on its own

Every file is written atomically (``resnet_tf.atomic``).
"""

import os
import shutil

from localization.model import Localizer
from localization.rcnn import RegionClassifier
from resnet_tf import model_dir
from resnet_tf.data.preprocessing import Preprocessing
from resnet_tf.precision import model_policy

KIND = "localizer"
WEIGHTS = "localizer.weights.h5"
MEAN = "mean_image.npy"
RCNN_WEIGHTS = "rcnn.weights.h5"
STAGE1 = "stage1"


def save_localizer(directory, model, prep, mean_image=None, **fields):
    """Write a localizer directory (created if needed).

    Args:
        model: a built ``Localizer``.
        prep: the classifier's ``Preprocessing`` (its crops).
        mean_image: float32 [S, S, 3] or None.
        fields: more metadata for ``resnet_tf.json`` (``results``,
            ``training``, ``display_names``...).
    Returns:
        ``directory``.
    """
    os.makedirs(directory, exist_ok=True)
    model_dir.save_weights_file(model, os.path.join(directory, WEIGHTS))
    if mean_image is not None:
        model_dir.write_mean_image(directory, mean_image, MEAN)
    return model_dir.write_meta(directory, KIND, config=model.get_config(),
                                policy=model_policy(model),
                                class_names=model.class_names,
                                preprocessing=prep.to_dict(),
                                mean_image=MEAN if mean_image is not None else None,
                                **fields)


def load_localizer(directory):
    """``(model, preprocessing, mean_image or None, meta)`` from a localizer
    directory; the model is built under the dtype policy the directory
    records.

    Raises:
        ValueError naming the directory or file: not a localizer directory,
        the weights file missing, damaged, or not fitting the config, an
        unreadable mean image.
    """
    meta = model_dir.read_meta(directory, kind=KIND)
    if meta.get("stage") == "rcnn":
        raise ValueError(f"{directory} is a two-stage (RPN+R-CNN) localizer directory; "
                         "load it with localization.model_dir.load_localizer_stages.")
    prep = Preprocessing.from_dict(meta["preprocessing"])
    model = model_dir.build_and_load(Localizer, directory, meta, WEIGHTS, KIND,
                                     build_args=(prep.crop_size,))
    return model, prep, model_dir.read_mean_image(directory, meta), meta


def save_rcnn_localizer(directory, rcnn, stage1_dir, prep, mean_image=None, *,
                        num_proposals, **fields):
    """Write a second-stage directory (module docstring): the R-CNN's
    weights and metadata, and a copy of the first-stage directory
    ``stage1_dir`` (its weights, ``resnet_tf.json`` and mean image) under
    ``DIR/stage1``.

    Args:
        rcnn: a built ``RegionClassifier``.
        num_proposals: the first stage's boxes per class at test time.
        fields: more metadata (``results``, ``training``, ``display_names``).
    Returns:
        ``directory``.
    """
    stage1_meta = model_dir.read_meta(stage1_dir, kind=KIND)
    if stage1_meta.get("stage") == "rcnn":
        raise ValueError(f"{stage1_dir} is already a two-stage localizer directory; "
                         "the second stage starts from a first-stage (RPN) directory.")
    target = os.path.join(directory, STAGE1)
    os.makedirs(target, exist_ok=True)
    for name in (WEIGHTS, model_dir.META, stage1_meta.get("mean_image")):
        if name and os.path.abspath(os.path.join(stage1_dir, name)) != \
                os.path.abspath(os.path.join(target, name)):
            shutil.copyfile(os.path.join(stage1_dir, name), os.path.join(target, name))
    model_dir.save_weights_file(rcnn, os.path.join(directory, RCNN_WEIGHTS))
    if mean_image is not None:
        model_dir.write_mean_image(directory, mean_image, MEAN)
    return model_dir.write_meta(directory, KIND, stage="rcnn", config=rcnn.get_config(),
                                policy=model_policy(rcnn),
                                class_names=rcnn.class_names,
                                preprocessing=prep.to_dict(),
                                mean_image=MEAN if mean_image is not None else None,
                                num_proposals=int(num_proposals), stage1=STAGE1,
                                stage1_source=os.path.abspath(stage1_dir), **fields)


def load_localizer_stages(directory):
    """Either kind of localizer directory: ``(localizer, rcnn or None,
    preprocessing, mean_image or None, meta)``. For a first-stage directory
    ``rcnn`` is None; for a second-stage one it is the ``RegionClassifier``
    and ``localizer`` the embedded first stage; ``meta["num_proposals"]``
    says how many boxes per class it rescores.

    Raises:
        ValueError naming the directory or file (``load_localizer``'s, and a
        second-stage directory whose ``stage1/`` or weights are missing).
    """
    meta = model_dir.read_meta(directory, kind=KIND)
    if meta.get("stage") != "rcnn":
        model, prep, mean, meta = load_localizer(directory)
        return model, None, prep, mean, meta
    stage1 = os.path.join(directory, meta.get("stage1") or STAGE1)
    if not os.path.isdir(stage1):
        raise ValueError(f"{stage1} is missing from the two-stage localizer directory "
                         f"{directory}: copy the first-stage directory there (it was "
                         f"{meta.get('stage1_source')}).")
    localizer, prep, mean, _ = load_localizer(stage1)
    rcnn = model_dir.build_and_load(RegionClassifier, directory, meta, RCNN_WEIGHTS, KIND)
    mean = model_dir.read_mean_image(directory, meta) if meta.get("mean_image") else mean
    return localizer, rcnn, prep, mean, meta

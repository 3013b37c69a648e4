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

Every file is written atomically (``resnet_tf.atomic``).
"""

import os

from localization.model import Localizer
from resnet_tf import model_dir
from resnet_tf.data.preprocessing import Preprocessing
from resnet_tf.precision import model_policy, policy_scope

KIND = "localizer"
WEIGHTS = "localizer.weights.h5"
MEAN = "mean_image.npy"


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
    weights = os.path.join(directory, WEIGHTS)
    if not os.path.exists(weights):
        raise ValueError(f"{weights} is missing from the localizer directory.")
    prep = Preprocessing.from_dict(meta["preprocessing"])
    with policy_scope(model_dir.recorded_policy(directory, meta)):
        model = Localizer.from_config(meta["config"])
        model.ensure_built(prep.crop_size)
    model_dir.load_weights_file(model, weights, KIND)
    return model, prep, model_dir.read_mean_image(directory, meta), meta

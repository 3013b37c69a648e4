"""The detector directory: what ``detection.train`` writes and evaluation,
prediction and export read (on top of ``resnet_tf.model_dir``).

    DIR/detector.weights.h5   the weights
    DIR/resnet_tf.json        kind "detector": model config, class names,
                              preprocessing, the dtype policy, training
                              options, results
    DIR/checkpoints/ DIR/backup/ DIR/history.csv DIR/logs/   written while
                              training (``resnet_tf.runner``)

Every file is written atomically (``resnet_tf.atomic``).
"""

import os

from detection.data.pipeline import DetectionPreprocessing
from detection.model import FasterRCNN
from resnet_tf import model_dir
from resnet_tf.precision import model_policy

KIND = "detector"
WEIGHTS = "detector.weights.h5"


def save_detector(directory, model, prep, **fields):
    """Write a detector directory (created if needed).

    Args:
        model: a built ``FasterRCNN``.
        prep: its ``DetectionPreprocessing``.
        fields: more metadata for ``resnet_tf.json`` (``results``,
            ``training``...).
    Returns:
        ``directory``.
    """
    os.makedirs(directory, exist_ok=True)
    model_dir.save_weights_file(model, os.path.join(directory, WEIGHTS))
    return model_dir.write_meta(directory, KIND, config=model.get_config(),
                                policy=model_policy(model),
                                class_names=model.class_names,
                                preprocessing=prep.to_dict(), **fields)


def load_detector(directory):
    """``(model, preprocessing, meta)`` from a detector directory: a
    ``FasterRCNN``, its ``DetectionPreprocessing`` and the ``resnet_tf.json``
    dict; the model is built under the dtype policy the directory records.

    Raises:
        ValueError naming the directory or file: not a detector directory,
        the weights file missing, damaged, or not fitting the config.
    """
    meta = model_dir.read_meta(directory, kind=KIND)
    model = model_dir.build_and_load(FasterRCNN, directory, meta, WEIGHTS, KIND)
    prep = DetectionPreprocessing(**{**meta["preprocessing"],
                                     "mean_rgb": tuple(meta["preprocessing"]["mean_rgb"])})
    return model, prep, meta

"""Export a detector directory as a SavedModel for TensorFlow Serving.

The shared export path (``resnet_tf.export``) gives the signatures
``serving_default`` (``image_bytes``) and ``serve_image_tensor``
(``images``); this module supplies the detector's in-graph preprocessing
(``prepare_example``: shorter side ``shorter_side`` unless the longer would
pass ``max_side``, mean subtraction, zero padding to the fixed square) and
its outputs, in the TF Object Detection API's convention:

- ``detection_boxes``: float32 [N, D, 4], (ymin, xmin, ymax, xmax)
  normalised to [0, 1] by the image's height and width (multiply by the
  original size to get pixels); padded rows are 0;
- ``detection_scores``: float32 [N, D], sorted, padded with 0;
- ``detection_classes``: float32 [N, D], 1-based class ids (id k is
  ``class_names[k - 1]``), padded with 0;
- ``detection_labels``: string [N, D], the class names, padded with "";
- ``num_detections``: float32 [N], the valid rows of each image;

with D the model's ``max_detections`` (100 by default, or the training
split's most boxes in one image when that is more) and detections kept
above its ``score_threshold`` (0.05) after per-class NMS.

Caps (recorded in ``assets.extra`` as ``caps``, printed by ``resnet-tf
export``): at most D detections per image (``num_detections == D`` says an
image had more to give); at most ``post_nms_test`` proposals after NMS of the
top ``pre_nms_test`` anchors; the longer side held to ``max_side``. Any image
size is accepted: it is resized, then padded (memory bounded by the padded
square, whatever its aspect ratio).
"""

import os

import tensorflow as tf

from detection.data.pipeline import prepare_example
from detection.model_dir import load_detector
from resnet_tf.export import ServingModel, export_serving_model


def detector_serving_model(model, prep, directory=None):
    """A ``ServingModel`` for a loaded ``FasterRCNN`` and its
    ``DetectionPreprocessing``."""
    pad = prep.pad_size
    names = tf.constant([""] + list(model.class_names))  # index 0 = padding

    def preprocess(image):
        x, _ = prepare_example(image, tf.fill([1, 4], -1.0), tf.constant([-1]), prep)
        return x

    def predict(batch):
        # The batch path stays on the fixed square: the signatures stack
        # per-image examples of one static spec (``resnet_tf.export``), one
        # request may mix orientations, and the outputs equal the in-process
        # single-image prediction (``predict_detector``, same square canvas).
        det = model(batch, training=False)
        count = tf.cast(det["num_detections"], tf.int32)
        valid = tf.range(tf.shape(det["scores"])[1])[None, :] < count[:, None]
        # Boxes are pixels of the resized image; dividing by its size gives
        # the same fractions of the original image.
        hw = batch["image_sizes"][:, None, :]
        boxes = tf.clip_by_value(det["boxes"] / tf.concat([hw, hw], -1), 0.0, 1.0)
        ids = tf.where(valid, tf.cast(det["classes"], tf.int32) + 1, 0)
        return {
            "detection_boxes": tf.where(valid[..., None], boxes, 0.0),
            "detection_scores": tf.where(valid, tf.cast(det["scores"], tf.float32), 0.0),
            "detection_classes": tf.cast(ids, tf.float32),
            "detection_labels": tf.gather(names, ids),
            "num_detections": tf.cast(count, tf.float32),
        }

    return ServingModel(
        kind="detector", model=model, preprocess=preprocess,
        example_spec={"images": tf.TensorSpec([pad, pad, 3], tf.float32),
                      "image_sizes": tf.TensorSpec([2], tf.float32)},
        predict=predict,
        info={"class_names": list(model.class_names), "preprocessing": prep.to_dict(),
              "max_detections": model.max_detections,
              "score_threshold": model.score_threshold,
              "caps": {"max_detections": model.max_detections,
                       "pre_nms_test": model.proposal_config.pre_nms_test,
                       "post_nms_test": model.proposal_config.post_nms_test,
                       "max_side": prep.max_side},
              **({"source": os.path.abspath(directory)} if directory else {})})


def export_detector(directory, base, version=None):
    """Export a detector directory to ``base/<version>/``; return the path."""
    model, prep, _ = load_detector(directory)
    return export_serving_model(detector_serving_model(model, prep, directory), base,
                                version)

"""Export a localizer directory as a SavedModel for TensorFlow Serving.

The shared export path (``resnet_tf.export``) gives the signatures
``serving_default`` (``image_bytes``) and ``serve_image_tensor``
(``images``); this module supplies the localizer's in-graph preprocessing and
outputs. Each image is tested as ``predict_localizer`` tests it (single
scale, Appendix C "fully convolutionally"): the whole image, shorter side
resized to the classifier's crop size (224 for ImageNet nets, 32 for CIFAR
nets), the mean image (resized to the view) subtracted, the frozen
classifier's top-5 classes, and for each the best anchor of that class's
``cls`` map, regressed with its ``reg`` and mapped back to the image.

Outputs, k = min(5, C):

- ``top_k_classes``: int32 [N, k], class indices, most probable first;
- ``top_k_labels``: string [N, k], their class names (ILSVRC: wnids);
- ``top_k_scores``: float32 [N, k], the classifier's probabilities (as the
  classifier export's ``top_k_scores``);
- ``top_k_box_scores``: float32 [N, k], the sigmoid of each class's best
  anchor logit (``predict_localizer``'s ``score``);
- ``top_k_boxes``: float32 [N, k, 4], (ymin, xmin, ymax, xmax) normalised to
  [0, 1] by the original image's height and width.

Limit: a batch is padded to one shape, so the view's longer side is capped
at ``MAX_ASPECT`` (4) times the shorter side (896 px for ImageNet nets). An
image more elongated than 4:1 is resized so its longer side is the cap
(its shorter side is then below 224) instead of to shorter side 224; its
result differs from ``predict_localizer``'s, which has no cap. The cap is
recorded in ``assets.extra`` (``caps``) and printed by ``resnet-tf export``.
It also bounds each example's memory: the image is resized (to at most
S x 4S) before it is padded, whatever its size.

A two-stage (RPN+R-CNN) directory exports both stages in the same
signatures, as ``TwoStageTester`` tests them: for each of the top-k
classes, the first stage's ``num_proposals`` best boxes are cropped from the
view before mean subtraction (``localization.data.rcnn.warp_regions``; the
example carries that view too, ``pixels``), warped, rescored and regressed
by the R-CNN, ``REGION_BATCH`` regions a step (``tf.map_fn``, sequential, so
memory stays that of one chunk), and the best is the class's box;
``top_k_box_scores`` are then the R-CNN's probabilities. ``info`` records
``stage`` and ``num_proposals``.
"""

import os

import tensorflow as tf

from localization.data.rcnn import warp_regions
from localization.model_dir import load_localizer_stages
from localization.rcnn import top_proposals
from resnet_tf.data import augment
from resnet_tf.export import TOP_K, ServingModel, export_serving_model

MAX_ASPECT = 4  # the padded view is S x (MAX_ASPECT * S); see the module docstring
REGION_BATCH = 256  # second-stage regions per in-graph step


def view_size(height, width, short, long_cap):
    """The test view of an image of ``height`` x ``width``: ``(int32 [2]
    (h, w), bool capped)``. Shorter side ``short``, the longer rounded as
    ``augment.resize_shorter_side`` rounds it, unless that longer side would
    pass ``long_cap``; then (``capped``) longer side ``long_cap``."""
    h, w = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    shorter, longer = tf.minimum(h, w), tf.maximum(h, w)
    target, cap = tf.constant(short, tf.float64), tf.constant(long_cap, tf.float64)
    new_long = tf.round(longer * (target / shorter))  # as augment._shorter_side_target
    capped = new_long > cap
    new_short = tf.where(capped, tf.clip_by_value(tf.round(shorter * (cap / longer)),
                                                  1.0, target), target)
    new_long = tf.minimum(new_long, cap)
    wide = h <= w
    size = tf.stack([tf.where(wide, new_short, new_long), tf.where(wide, new_long, new_short)])
    return tf.cast(size, tf.int32), capped


def localizer_serving_model(model, prep, mean_image=None, directory=None, meta=None,
                            rcnn=None, num_proposals=200):
    """A ``ServingModel`` for a loaded ``Localizer``, its ``Preprocessing``
    and mean image (float32 [S, S, 3] or None), as ``load_localizer`` gives;
    with ``rcnn`` (a ``RegionClassifier``), RPN+R-CNN rescoring
    ``num_proposals`` boxes per class (module docstring).

    One example (``example_spec``): ``view`` float32 [S, 4S, 3], the
    preprocessed view stored wide side along the second axis (a tall view is
    transposed, so one padded shape holds both orientations) and zero-padded;
    ``view_size`` int32 [2], the view's (h, w) before that; ``image_size``
    float32 [2], the original (h, w); with ``rcnn``, ``pixels`` float32
    [S, 4S, 3], the same view before mean subtraction.
    """
    short = int(prep.crop_size)
    cap = MAX_ASPECT * short
    k = min(TOP_K, model.num_classes)
    mean = None if mean_image is None or not prep.mean_subtraction else \
        tf.constant(mean_image, tf.float32)
    names = tf.constant(list(model.class_names))
    rcnn_mean = mean  # the warped regions' mean (None without mean subtraction)

    def preprocess(image):
        shape = tf.shape(image)
        size, capped = view_size(shape[0], shape[1], short, cap)
        # The ordinary case through the training pipeline's own resize, so
        # the view is bit-for-bit predict_localizer's (test_views).
        view = tf.cond(capped,
                       lambda: tf.ensure_shape(tf.cast(tf.image.resize(
                           image, size, method="bilinear", antialias=False), tf.float32),
                           [None, None, 3]),
                       lambda: augment.resize_shorter_side(image, short))
        pixels = view
        out = {"view_size": size, "image_size": tf.cast(shape[:2], tf.float32)}
        if rcnn is not None:
            out["pixels"] = pad(pixels)
        if mean is not None:
            view = augment.subtract_mean(view, mean)
        out["view"] = pad(view)
        return out

    def pad(view):
        view = tf.cond(tf.shape(view)[0] > tf.shape(view)[1],
                       lambda: tf.transpose(view, [1, 0, 2]), lambda: view)
        view = tf.image.pad_to_bounding_box(view, 0, 0, short, cap)
        return tf.ensure_shape(view, [short, cap, 3])

    def unpad(padded, h, w):
        return tf.cond(h > w, lambda: tf.transpose(padded[:w, :h], [1, 0, 2]),
                       lambda: padded[:h, :w])

    def second_stage(pixels, boxes, classes, h, w):
        """boxes [k, N, 4] view pixels -> (scores [k], boxes [k, 4])."""
        n = tf.shape(boxes)[1]
        flat = tf.reshape(boxes, [-1, 4])
        per_box = tf.repeat(classes, n)
        total = tf.shape(flat)[0]
        steps = (total + REGION_BATCH - 1) // REGION_BATCH
        padding = steps * REGION_BATCH - total
        flat_p = tf.reshape(tf.pad(flat, [[0, padding], [0, 0]], constant_values=1.0),
                            [steps, REGION_BATCH, 4])
        cls_p = tf.reshape(tf.pad(per_box, [[0, padding]]), [steps, REGION_BATCH])

        def chunk(args):
            b, c = args
            x = warp_regions(pixels, b, rcnn.warp_size, rcnn_mean)
            return rcnn.rescore(rcnn(x, training=False), c, b, (h, w))

        sc, bx = tf.map_fn(chunk, (flat_p, cls_p), parallel_iterations=1,
                           fn_output_signature=(tf.TensorSpec([REGION_BATCH], tf.float32),
                                                tf.TensorSpec([REGION_BATCH, 4],
                                                              tf.float32)))
        sc = tf.reshape(tf.reshape(sc, [-1])[:total], [-1, n])
        bx = tf.reshape(tf.reshape(bx, [-1, 4])[:total], [-1, n, 4])
        best = tf.argmax(sc, axis=1, output_type=tf.int32)
        return (tf.gather(sc, best, batch_dims=1), tf.gather(bx, best, batch_dims=1))

    def localize_one(example):
        # Whole-image testing keeps each image's own size: the network runs
        # on one unpadded view at a time (padding would change the features).
        # The blank example of an empty request has size 0: run it at 1 x 1.
        size = tf.maximum(example["view_size"], 1)
        h, w = size[0], size[1]
        x = unpad(example["view"], h, w)[None]
        probs = model.classify(x)
        _, classes = tf.math.top_k(probs, k=k)  # ties: lower index first, as argsort
        classes = tf.cast(classes, tf.int32)
        features = model.features(x)
        if rcnn is None:
            scores, boxes = model.localize(features, classes, (h, w))
        else:
            _, props = top_proposals(model, features, classes, (h, w), num_proposals)
            scores, boxes = second_stage(unpad(example["pixels"], h, w), props[0],
                                         classes[0], h, w)
            scores, boxes = scores[None], boxes[None]
        # Back to original pixels as Tester does, then fractions of the image.
        hw0 = example["image_size"]
        factor = tf.cast(size, tf.float32) / hw0
        boxes = boxes[0] / tf.concat([factor, factor], 0)
        boxes = tf.clip_by_value(boxes, 0.0, tf.concat([hw0, hw0], 0))
        return {"probabilities": probs[0], "classes": classes[0], "box_scores": scores[0],
                "boxes": boxes / tf.concat([hw0, hw0], 0)}

    def predict(batch):
        out = tf.map_fn(localize_one, batch, fn_output_signature={
            "probabilities": tf.TensorSpec([model.num_classes], tf.float32),
            "classes": tf.TensorSpec([k], tf.int32),
            "box_scores": tf.TensorSpec([k], tf.float32),
            "boxes": tf.TensorSpec([k, 4], tf.float32)})
        classes = out["classes"]
        return {"top_k_classes": classes,
                "top_k_labels": tf.gather(names, classes),
                "top_k_scores": tf.gather(out["probabilities"], classes, batch_dims=1),
                "top_k_box_scores": out["box_scores"],
                "top_k_boxes": out["boxes"]}

    meta = meta or {}
    spec = {"view": tf.TensorSpec([short, cap, 3], tf.float32),
            "view_size": tf.TensorSpec([2], tf.int32),
            "image_size": tf.TensorSpec([2], tf.float32)}
    if rcnn is not None:
        spec["pixels"] = tf.TensorSpec([short, cap, 3], tf.float32)
    return ServingModel(
        kind="localizer", model=model, preprocess=preprocess,
        example_spec=spec,
        predict=predict,
        info={"class_names": list(model.class_names),
              **({"display_names": meta["display_names"]}
                 if meta.get("display_names") else {}),
              "preprocessing": prep.to_dict(), "test_shorter_side": short,
              "max_longer_side": cap, "top_k": k,
              "stage": "rpn" if rcnn is None else "rcnn",
              **({"num_proposals": int(num_proposals)} if rcnn is not None else {}),
              "caps": {"max_longer_side": cap, "max_aspect": MAX_ASPECT},
              **({"source": os.path.abspath(directory)} if directory else {})})


def export_localizer(directory, base, version=None):
    """Export a localizer directory to ``base/<version>/``; return the path."""
    model, rcnn, prep, mean, meta = load_localizer_stages(directory)
    return export_serving_model(
        localizer_serving_model(model, prep, mean, directory, meta, rcnn=rcnn,
                                num_proposals=meta.get("num_proposals", 200)),
        base, version)

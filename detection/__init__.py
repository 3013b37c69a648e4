"""Faster R-CNN in the paper's C4 layout on a resnet-tf backbone.

Built so far, each a small unit with its own tests:

    ops/boxes.py     the one internal box format (ymin, xmin, ymax, xmax pixels), IoU
    ops/nms.py       padded batched NMS, per-class NMS
    ops/roi_align.py RoIAlign (aligned) and RoIPool
    anchors.py  box_coder.py  matcher.py  sampler.py  proposals.py
    targets.py       label_and_sample_anchors / label_and_sample_proposals
    heads.py         RPN head; conv5_x RoI head (resnet_tf.blocks, classifier names)
    losses.py        RPN and head losses as named scalars
    model.py         FasterRCNN: wiring; compute_loss calls targets.py, so model.fit trains it
    data/voc.py      PASCAL VOC XML (clipping, degenerate boxes dropped and counted)
    data/pipeline.py resize (600/1000), flip, mean, fixed-size padding; synthetic set
    data/sources.py  voc:PATH[:SPLIT], synthetic
    metrics/         VOC mAP (11-point and area), COCO AP (pycocotools)
    train.py         train_detector (model.fit, --init-from a classifier), detector dir
    evaluate.py      evaluate_detector (VOC + COCO), predict_detector, draw_detections

Importing the package registers every Keras object it serializes
(``FasterRCNN``).

Still to come (issue "Detection"): COCO JSON and TFDS loaders, the CLI,
tuning until BCCD overfits to mAP 0.8, the benchmarks, export.
"""

# Registered Keras objects (keras.saving.register_keras_serializable): a
# FasterRCNN config or saved model loads after `import detection` alone.
from detection import model as _model  # noqa: E402,F401

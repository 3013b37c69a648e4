"""Faster R-CNN in the paper's C4 layout on a resnet-tf backbone.

Each a small unit with its own tests:

    ops/boxes.py     the one internal box format (ymin, xmin, ymax, xmax pixels), IoU
    ops/nms.py       padded batched NMS, per-class NMS
    ops/roi_align.py RoIAlign (aligned) and RoIPool
    anchors.py  box_coder.py  matcher.py  sampler.py  proposals.py
    targets.py       label_and_sample_anchors / label_and_sample_proposals
    heads.py         RPN head; conv5_x RoI head (resnet_tf.blocks, classifier names)
    losses.py        RPN and head losses as named scalars
    model.py         FasterRCNN: wiring; compute_loss calls targets.py, so model.fit trains it
    refine.py        Table 9 box refinement (second head pass, NMS 0.3, box voting)
    multiscale.py    Table 9 multi-scale testing (pyramid, two scales near 224^2, maxout)
    data/voc.py, coco.py, tfds.py  PASCAL VOC XML, COCO JSON, TFDS (voc, coco);
                     boxes clipped, degenerate ones dropped, bad entries counted
    data/pipeline.py resize (600/1000), flip, mean, padding to aspect-ratio canvases
    data/sources.py  voc:PATH[:SPLIT], coco:PATH[:SPLIT], tfds:NAME[:SPLIT], synthetic
    metrics/         VOC mAP (11-point and area), COCO AP (pycocotools)
    model_dir.py     the detector directory: save_detector, load_detector
    train.py         train_detector (model.fit via resnet_tf.runner, --init-from a classifier)
    evaluate.py      evaluate_detector (VOC + COCO), predict_detector, draw_detections
    export.py        the detector's SavedModel (TF Object Detection API outputs)
    cli.py           resnet-tf {train,evaluate,predict} detector

Importing the package registers every Keras object it serializes
(``FasterRCNN``).
"""

# Registered Keras objects (keras.saving.register_keras_serializable): a
# FasterRCNN config or saved model loads after `import detection` alone.
from detection import model as _model  # noqa: E402,F401

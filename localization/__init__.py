"""The paper's ILSVRC localization: a per-class RPN (Appendix C).

    head.py          PerClassRPNHead: sibling 1x1 convs, C logits and C x 4 deltas per
                     anchor; ``for_classes`` computes only chosen classes' columns
    model.py         Localizer: a frozen copy of the classifier (class guesses), the
                     fine-tuned trunk, the head; targets and the GT-class-only losses in
                     compute_loss (detection's anchors, box coder, matcher, sampler)
    data/            ILSVRC Kaggle CSV and XML readers, the synthetic set, crops with boxes
    metrics.py       ILSVRC top-k localization error, oracle error, classification error
    model_dir.py     the localizer directory: save_localizer, load_localizer
    train.py         train_localizer (model.fit via resnet_tf.runner, --init-from a classifier)
    evaluate.py      whole-image (and multi-scale) testing, evaluate, predict, draw
    export.py        the localizer's SavedModel (top-k classes and their boxes)
    cli.py           resnet-tf {train,evaluate,predict} localizer

Importing the package registers every Keras object it serializes
(``Localizer``, ``PerClassRPNHead``, ``RegionClassifier``).

The second stage (RPN+R-CNN, Table 13): ``rcnn.py`` (the R-CNN on warped
proposals, ``top_proposals``), ``data/rcnn.py`` (warped crops, IoU labels,
RoI-centric batches), ``rcnn_train.py`` (``resnet-tf train localizer --stage
rcnn``); ``evaluate.TwoStageTester`` and the export serve both stages.
"""

# Registered Keras objects (keras.saving.register_keras_serializable): a
# Localizer config or saved model loads after `import localization` alone.
from localization import head as _head, model as _model, rcnn as _rcnn  # noqa: E402,F401

"""Losses used by the classifier recipes."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="resnet_tf")
class SparseCrossEntropy(keras.losses.Loss):
    """Cross-entropy on integer labels with optional label smoothing.

    Keras' sparse loss has no label smoothing; this one-hot encodes inside the
    loss so the pipeline keeps int32 labels. ``label_smoothing=0`` equals
    ``keras.losses.SparseCategoricalCrossentropy``.
    """

    def __init__(self, label_smoothing=0.0, from_logits=False,
                 name="sparse_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        num_classes = ops.shape(y_pred)[-1]
        if not self.label_smoothing:
            return keras.losses.sparse_categorical_crossentropy(
                y_true, y_pred, from_logits=self.from_logits)
        y = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), num_classes,
                        dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            y, y_pred, from_logits=self.from_logits,
            label_smoothing=self.label_smoothing)

    def get_config(self):
        config = super().get_config()
        config.update(label_smoothing=self.label_smoothing,
                      from_logits=self.from_logits)
        return config

"""Carry weights users already have into resnet-tf.

- ``import_classifier`` / ``resnet-tf import classifier``: a
  keras.applications, torchvision, timm or keras-hub ImageNet ResNet file to
  a classifier directory that takes resnet-tf's input (the source's input
  convention folded into conv1) and fine-tunes detectors and localizers.
- ``from_keras_applications``: an in-memory keras.applications ResNet as a
  resnet-tf ``ResNet`` with the same (caffe) input.
- ``assign_by_name`` / ``named_weights``: weights by layer name, every shape
  checked before anything is assigned.
"""

from resnet_tf.weights.assign import assign_by_name, named_weights, weighted_layers
from resnet_tf.weights.convention import (KERAS_CAFFE, TORCH_IMAGENET, InputConvention,
                                          fold_into_conv1)
from resnet_tf.weights.importer import SOURCES, import_classifier, read_source
from resnet_tf.weights.keras_applications import (from_keras_applications,
                                                  read_keras_applications)

__all__ = ["assign_by_name", "named_weights", "weighted_layers", "InputConvention",
           "KERAS_CAFFE", "TORCH_IMAGENET", "fold_into_conv1", "SOURCES",
           "import_classifier", "read_source", "from_keras_applications",
           "read_keras_applications"]

"""resnet-tf: the networks of "Deep Residual Learning for Image Recognition"
(He, Zhang, Ren, Sun, 2015) as Keras 3 functional models."""

from resnet_tf.backbone import ResNet, build
from resnet_tf.zoo import architecture_names, count_macs, count_params

__version__ = "0.1.0"

__all__ = [
    "ResNet",
    "build",
    "architecture_names",
    "count_macs",
    "count_params",
    "__version__",
]

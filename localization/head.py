"""The per-class RPN head (Appendix C): two sibling 1x1 convolutions.

    features [B, H, W, F] -> (optional 3x3 conv + ReLU, as in Faster R-CNN's RPN)
        -> loc_cls: 1x1 conv, A * C outputs: per anchor, C independent binary
           logistic regressions ("this class / not this class")
        -> loc_reg: 1x1 conv, A * C * 4 outputs: per anchor, one box
           regressor (t_y, t_x, t_h, t_w) per class

Channel layout (the layer names and this order are API; weights depend on
them): ``loc_cls`` channel ``a * C + c``; ``loc_reg`` channel
``(a * C + c) * 4 + d``. Outputs reshape to ``[B, H, W, A, C]`` and
``[B, H, W, A, C, 4]``, whose (y, x, anchor) order is
``detection.anchors.AnchorGenerator``'s.

With C = 1000 the dense outputs are large (A * 4000 regression channels per
cell), and training and testing only ever read a few classes of them: the
image's class in training, the top-k classes in testing. ``for_classes``
computes exactly those columns of the same 1x1 convolutions (the kernels'
columns gathered, then one einsum), so nothing of size C x 4 per cell is
ever materialised; ``call`` gives the dense maps (tests check both agree).
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="localization")
class PerClassRPNHead(keras.layers.Layer):
    """Args:
        num_classes: C.
        num_anchors: A, anchors per feature-map cell.
        conv_channels: width of the 3x3 conv before the siblings; 0 puts the
            siblings straight on the features.
        weight_decay: L2 on the kernels (the paper's 1e-4, as 0.5 * wd * w^2).
        seed: int seeding the kernels' N(0, 0.01^2) initialisers (the three
            convolutions use seed, seed + 1, seed + 2); None: unseeded.
    """

    def __init__(self, num_classes, num_anchors, conv_channels=512, weight_decay=1e-4,
                 seed=None, **kwargs):
        super().__init__(**kwargs)
        if num_classes < 1 or num_anchors < 1:
            raise ValueError(f"PerClassRPNHead needs num_classes >= 1 and num_anchors "
                             f">= 1, got {num_classes} and {num_anchors}.")
        self.num_classes, self.num_anchors = int(num_classes), int(num_anchors)
        self.conv_channels, self.weight_decay = int(conv_channels), float(weight_decay)
        self.seed = None if seed is None else int(seed)
        reg = keras.regularizers.L2(weight_decay / 2) if weight_decay else None

        def init(offset):
            return keras.initializers.RandomNormal(
                stddev=0.01, seed=None if self.seed is None else self.seed + offset)

        self.conv = None
        if self.conv_channels:
            self.conv = keras.layers.Conv2D(self.conv_channels, 3, padding="same",
                                            activation="relu", kernel_initializer=init(0),
                                            kernel_regularizer=reg, dtype=self.dtype_policy,
                                            name="loc_conv")
        self.cls = keras.layers.Conv2D(self.num_anchors * self.num_classes, 1,
                                       kernel_initializer=init(1), kernel_regularizer=reg,
                                       dtype=self.dtype_policy, name="loc_cls")
        self.reg = keras.layers.Conv2D(self.num_anchors * self.num_classes * 4, 1,
                                       kernel_initializer=init(2), kernel_regularizer=reg,
                                       dtype=self.dtype_policy, name="loc_reg")

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.conv is not None:
            self.conv.build(shape)
            shape = shape[:-1] + (self.conv_channels,)
        self.cls.build(shape)
        self.reg.build(shape)
        self.in_channels = shape[-1]
        self.built = True

    def _hidden(self, features):
        return features if self.conv is None else self.conv(features)

    def call(self, features):
        """Dense maps: cls logits [B, H, W, A, C], reg deltas [B, H, W, A, C, 4]."""
        h = self._hidden(features)
        shape = ops.shape(h)
        a, c = self.num_anchors, self.num_classes
        cls = ops.reshape(self.cls(h), (shape[0], shape[1], shape[2], a, c))
        reg = ops.reshape(self.reg(h), (shape[0], shape[1], shape[2], a, c, 4))
        return cls, reg

    def for_classes(self, features, classes):
        """The same maps for chosen classes only.

        Args:
            features: [B, H, W, F].
            classes: int [B, K], class indices per image.
        Returns:
            ``(cls [B, H, W, A, K], reg [B, H, W, A, K, 4])``, equal to the
            dense maps' columns ``classes[b]`` (float32 up to summation order).
        """
        if not self.built:
            self.build(tuple(features.shape))
        h = self._hidden(features)
        dtype = h.dtype
        classes = ops.cast(classes, "int32")
        f, a, c = self.in_channels, self.num_anchors, self.num_classes
        # [1, 1, F, A*C] -> [F, A, C] -> the chosen columns [F, A, B, K].
        kc = ops.take(ops.reshape(ops.cast(self.cls.kernel, dtype), (f, a, c)), classes,
                      axis=2)
        bc = ops.take(ops.reshape(ops.cast(self.cls.bias, dtype), (a, c)), classes, axis=1)
        cls = ops.einsum("bhwf,fabk->bhwak", h, kc)
        cls = cls + ops.transpose(bc, (1, 0, 2))[:, None, None]
        kr = ops.take(ops.reshape(ops.cast(self.reg.kernel, dtype), (f, a, c, 4)), classes,
                      axis=2)  # [F, A, B, K, 4]
        br = ops.take(ops.reshape(ops.cast(self.reg.bias, dtype), (a, c, 4)), classes, axis=1)
        reg = ops.einsum("bhwf,fabkd->bhwakd", h, kr)
        reg = reg + ops.transpose(br, (1, 0, 2, 3))[:, None, None]
        return cls, reg

    def compute_output_shape(self, input_shape):
        b, h, w = input_shape[:3]
        a, c = self.num_anchors, self.num_classes
        return (b, h, w, a, c), (b, h, w, a, c, 4)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, num_anchors=self.num_anchors,
                      conv_channels=self.conv_channels, weight_decay=self.weight_decay,
                      seed=self.seed)
        return config

"""Input conventions of other frameworks' ImageNet weights, and folding one
into conv1 so an imported network takes resnet-tf's own input.

resnet-tf's input (every pipeline, ``Preprocessing``): RGB pixels in
[0, 255] minus the directory's mean image, channels last. The sources:

- keras.applications ResNet50/101/152 ("caffe" mode,
  ``keras.applications.resnet.preprocess_input``): RGB -> BGR, then the
  mean pixel (103.939, 116.779, 123.68) (BGR order) subtracted; no scaling.
- torchvision ResNet-18..152 and timm ``resnet*``: RGB / 255, minus mean
  (0.485, 0.456, 0.406), divided by std (0.229, 0.224, 0.225), NCHW. A timm
  checkpoint may carry its own mean and std (``pretrained_cfg``).
- keras-hub ResNet presets: the image converter's ``scale``, ``offset``
  (or ``mean``/``std``) from the preset's config.

Source: the keras 3.15 ``keras/src/applications/imagenet_utils.py`` caffe
mode; torchvision ``ResNet50_Weights.IMAGENET1K_V1.transforms()``.
"""

import dataclasses

import numpy as np

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclasses.dataclass(frozen=True)
class InputConvention:
    """How a source network wants its input, in one normal form.

    The source computes, for its input channel ``j``,
    ``x_src[j] = (rgb[c] - mean[c]) / std[c]`` with ``c = rgb_index[j]``,
    where ``rgb`` are pixels in [0, 255].

    Attributes:
        channel_order: "RGB" or "BGR", the source's channel order.
        mean: the subtracted mean per RGB channel, in [0, 255] pixel units
            (R, G, B order whatever ``channel_order`` is).
        std: the divisor per RGB channel, in [0, 255] pixel units (so a
            torchvision std of 0.229 on pixels / 255 is 0.229 * 255 here).
        description: how the source's own documentation states it.
    """

    channel_order: str
    mean: tuple
    std: tuple
    description: str = ""

    def __post_init__(self):
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got "
                             f"{self.channel_order!r}.")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean {self.mean} and std {self.std} need 3 values each "
                             "(R, G, B).")
        if any(not np.isfinite(s) or s <= 0 for s in self.std):
            raise ValueError(f"std {self.std} must be positive and finite.")

    @property
    def rgb_index(self):
        """int [3]: the RGB channel each source input channel reads."""
        return np.array([0, 1, 2] if self.channel_order == "RGB" else [2, 1, 0])

    def to_dict(self):
        return {"channel_order": self.channel_order,
                "mean_rgb_0_255": [float(v) for v in self.mean],
                "std_rgb_0_255": [float(v) for v in self.std],
                "description": self.description}

    @classmethod
    def from_unit_range(cls, mean, std, channel_order="RGB", description=""):
        """A convention stated on pixels / 255 (torchvision, timm)."""
        return cls(channel_order, tuple(255.0 * float(m) for m in mean),
                   tuple(255.0 * float(s) for s in std), description)

    def apply(self, rgb):
        """The source's own preprocessing of float ``rgb`` [..., 3] in [0, 255],
        channels last: what the source network expects (for tests and checks)."""
        rgb = np.asarray(rgb, np.float64)
        x = (rgb - np.array(self.mean)) / np.array(self.std)
        return x[..., self.rgb_index]


KERAS_CAFFE = InputConvention(
    "BGR", mean=CAFFE_MEAN_BGR[::-1], std=(1.0, 1.0, 1.0),
    description="keras.applications.resnet.preprocess_input (caffe): RGB->BGR, "
                "minus (103.939, 116.779, 123.68) in BGR order")
TORCH_IMAGENET = InputConvention.from_unit_range(
    IMAGENET_MEAN_RGB, IMAGENET_STD_RGB,
    description="torchvision: RGB / 255, minus mean (0.485, 0.456, 0.406), divided by "
                "std (0.229, 0.224, 0.225)")


def fold_into_conv1(kernel, convention):
    """conv1's kernel for resnet-tf's input, from a source kernel.

    The source's first convolution sees ``x_src[j] = (rgb[c] - mean[c]) /
    std[c]`` (``c = rgb_index[j]``); resnet-tf feeds ``u[c] = rgb[c] -
    mean[c]``, the pixels minus a constant mean image equal to the source
    mean. The convolution is linear in its input, so

        sum_j W[..., j, :] * x_src[j] = sum_c (W[..., j(c), :] / std[c]) * u[c]

    and the new kernel is the source kernel with its input channels put in
    RGB order (the BGR -> RGB permutation) and each divided by its std. The
    bias is unchanged.

    Zero padding stays exact: conv1 pads its input with zeros, and a zero of
    ``u`` (a pixel equal to the mean) is exactly a zero of ``x_src`` (the
    source's normalised zero), so the border sees the same values in both.
    With a mean image other than the constant source mean this would not
    hold; the importer therefore writes the constant image.

    Args:
        kernel: float [kh, kw, 3, filters], channels-last (HWIO), input
            channels in the source's order.
        convention: the source's ``InputConvention``.
    Returns:
        float32 [kh, kw, 3, filters], input channels in RGB order.
    Raises:
        ValueError: the kernel does not take 3 input channels.
    """
    kernel = np.asarray(kernel, np.float64)
    if kernel.ndim != 4 or kernel.shape[2] != 3:
        raise ValueError(f"conv1 kernel has shape {kernel.shape}; a 3-channel "
                         "[kh, kw, 3, filters] kernel is needed to fold an RGB input "
                         "convention into it.")
    source_of_rgb = np.argsort(convention.rgb_index)  # j(c): source channel reading RGB c
    folded = kernel[:, :, source_of_rgb, :] / np.asarray(convention.std)[None, None, :, None]
    return folded.astype(np.float32)


def mean_image(convention, size):
    """float32 [size, size, 3]: the constant RGB image of the source mean,
    the directory's mean image (``fold_into_conv1`` explains why constant)."""
    return np.broadcast_to(np.asarray(convention.mean, np.float32),
                           (size, size, 3)).copy()

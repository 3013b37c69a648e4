"""The paper's preprocessing as one config object, saved with every model.

Two styles:

- ``imagenet`` (Sec. 3.4): shorter side resized to a random s in [256, 480],
  a random 224x224 crop, horizontal flip, AlexNet PCA colour augmentation and
  per-pixel mean subtraction; evaluation resizes the shorter side to 256 and
  takes the centre 224 crop (or 10 crops, or full images at several scales).
- ``cifar`` (Sec. 4.2): per-pixel mean subtraction, 4 pixels of zero padding
  on each side, a random 32x32 crop and a flip; evaluation uses the single
  original 32x32 view.

Pixel values stay in [0, 255] before mean subtraction, as in the paper.
"""

import dataclasses

import tensorflow as tf

from resnet_tf.data import augment, views

STYLES = ("imagenet", "cifar")


@dataclasses.dataclass
class Preprocessing:
    """Every step is configurable; the defaults are the paper's.

    Attributes:
        style: "imagenet" or "cifar".
        crop_size: network input side (224 or 32).
        scale_augmentation: ImageNet: random shorter side in ``scale_range``;
            off: shorter side ``eval_resize`` before the random crop.
        scale_range: (min, max) shorter side for scale augmentation.
        eval_resize: ImageNet evaluation: shorter side before the centre crop.
        flip: random horizontal flips in training.
        pca_std: standard deviation of AlexNet's PCA colour noise; 0 = off.
        pad: CIFAR: zero padding before the random crop.
        mean_subtraction: subtract the per-pixel mean image.
        multiscale: shorter sides for multi-scale fully-convolutional testing.
        imported_from: None for a network trained by resnet-tf; for imported
            weights, where they came from and the input convention folded
            into conv1 (``resnet_tf.weights.import_classifier``).
    """

    style: str = "imagenet"
    crop_size: int = 224
    scale_augmentation: bool = True
    scale_range: tuple = (256, 480)
    eval_resize: int = 256
    flip: bool = True
    pca_std: float = 0.1
    pad: int = 4
    mean_subtraction: bool = True
    multiscale: tuple = (224, 256, 384, 480, 640)
    imported_from: dict = None

    def __post_init__(self):
        if self.style not in STYLES:
            raise ValueError(f"Unknown preprocessing style {self.style!r}; use "
                             f"{' or '.join(STYLES)}.")
        self.scale_range = tuple(int(s) for s in self.scale_range)
        self.multiscale = tuple(int(s) for s in self.multiscale)
        lo, hi = self.scale_range
        if self.style == "imagenet" and not (self.crop_size <= lo <= hi):
            raise ValueError(
                f"scale_range {self.scale_range} must satisfy crop_size "
                f"({self.crop_size}) <= min <= max.")
        if self.style == "imagenet" and self.eval_resize < self.crop_size:
            raise ValueError(f"eval_resize {self.eval_resize} is smaller than "
                             f"crop_size {self.crop_size}.")

    @classmethod
    def for_style(cls, style, /, **overrides):
        """The paper's settings for ``style``, with ``overrides`` applied (an
        override of ``style`` itself picks that style's defaults)."""
        style = overrides.pop("style", style)
        if style == "cifar":
            base = dict(style="cifar", crop_size=32, pca_std=0.0, eval_resize=32,
                        scale_augmentation=False, scale_range=(32, 32),
                        multiscale=(32,))
        else:
            base = dict(style=style)
        base.update(overrides)
        return cls(**base)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**d)

    # --- views, uint8 [H, W, 3] -> float32 ------------------------------------
    # Every view takes any image size (H, W >= 1), with shapes unknown until
    # run time (tf.data, tf.function, the serving signatures), and has a
    # static output shape (the multi-scale views aside: whole images). Its
    # work and memory are bounded by its output, not by the input's shape or
    # aspect ratio: the crops are resampled from the source windows they
    # need (views.center_crop_view, augment.resized_crop,
    # augment.random_scale_crop), never cut from a resized whole image.

    def mean_view(self, image):
        """The view the mean image is computed on: the evaluation geometry
        without mean subtraction. float32 [crop, crop, 3] in [0, 255]."""
        if self.style == "cifar":
            return self._cifar_base(image)
        return views.center_crop_view(image, resize=self.eval_resize,
                                      crop=self.crop_size)

    def _cifar_base(self, image):
        # The original view; other sizes are brought to crop_size first
        # (shorter side crop_size, centre crop). One path for every size: a
        # crop_size image resamples to itself exactly (scale 1, no shift).
        # No tf.cond with a static-shape branch: in graph mode its untaken
        # branch's shape check failed every image of another size.
        return views.center_crop_view(image, resize=self.crop_size, crop=self.crop_size)

    def _normalize(self, x, mean_image):
        if not self.mean_subtraction or mean_image is None:
            return x
        if x.shape.rank == 4:  # a stack of crops of one size
            return tf.map_fn(lambda v: augment.subtract_mean(v, mean_image), x)
        return augment.subtract_mean(x, mean_image)

    def train_view(self, image, seed, mean_image):
        """One augmented training view, float32 [crop, crop, 3]."""
        s_scale, s_crop, s_flip, s_color = tf.unstack(augment.split_seed(seed, 4))
        if self.style == "cifar":
            x = self._normalize(self._cifar_base(image), mean_image)
            x = augment.pad_and_crop(x, s_crop, pad=self.pad, size=self.crop_size)
            return self._finish(x, s_flip, None, None)
        if self.scale_augmentation:
            x = augment.random_scale_crop(image, s_scale, s_crop, self.crop_size,
                                          *self.scale_range)
        else:
            # A random crop of the shorter-side-eval_resize image (the draw of
            # tf.image.stateless_random_crop), resampling only the crop.
            size = augment.shorter_side_size(tf.shape(image), self.eval_resize)
            offset = augment.random_resized_crop_offset(size, s_crop, self.crop_size)
            x = augment.resized_crop(image, size, offset, self.crop_size)
        return self._finish(x, s_flip, s_color, mean_image)

    def _finish(self, x, s_flip, s_color, mean_image):
        if s_color is not None and self.pca_std:
            x = augment.pca_color(x, s_color, std=self.pca_std)
        if s_color is not None:
            x = self._normalize(x, mean_image)
        if self.flip:
            x = augment.random_flip(x, s_flip)
        return tf.ensure_shape(x, [self.crop_size, self.crop_size, 3])

    def eval_view(self, image, mean_image):
        """The single evaluation view, float32 [crop, crop, 3]."""
        return self._normalize(self.mean_view(image), mean_image)

    def ten_crop(self, image, mean_image):
        """float32 [10, crop, crop, 3] (ImageNet style: from the 256 image)."""
        if self.style == "cifar":
            base = self._cifar_base(image)
            crops = tf.stack([base, tf.image.flip_left_right(base)])
        else:
            crops = views.ten_crop_views(image, resize=self.eval_resize,
                                         crop=self.crop_size)
        return self._normalize(crops, mean_image)

    def multiscale_views(self, image, mean_image, flip=False):
        """A list of float32 [h_s, w_s, 3], whole image at each scale."""
        return [self._normalize(v, mean_image) for v in
                views.multiscale_views(image, scales=self.multiscale, flip=flip)]

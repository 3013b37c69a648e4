"""The architectures of the paper: depth -> stage layout, names, and counts.

ImageNet family (Table 1): a 7x7/2 stem and 3x3/2 max pool, four stages
conv2_x..conv5_x of widths 64, 128, 256, 512 (bottleneck outputs 4x that),
strides 1, 2, 2, 2.

CIFAR family (Sec. 4.2): a 3x3 stem with 16 filters, three stages of 2n
3x3 layers each on 32x32, 16x16 and 8x8 maps with 16, 32, 64 filters; depth
is 6n + 2.

Strides are data: the stem's (``STEM_STRIDES``) times the stages' (the
fourth field of each ``StageLayout.stages`` row). ``StageLayout.stride(level)``
and ``stride_of(level, family)`` give a stage output's stride in pixels
(ImageNet C2..C5: 4, 8, 16, 32; CIFAR C2..C4: 1, 2, 4); the C4 detector and
the localizer take their anchor and RoI strides from there.

Every residual net has a plain twin (the same layers without shortcuts),
named ``plainDEPTH``.

Both families take a ``width``: the first stage's width (64 in Table 1, 16
in Sec. 4.2), doubled at every later stage, and the stem's filter count.
The paper's nets use the defaults; a narrower ResNet-18 keeps Table 1's
layout (so the C4 detector and the localizer can be built on it) at a
fraction of the cost, which is what the quick demo uses.
"""

import dataclasses

import numpy as np

IMAGENET_STAGES = {
    # depth: (block type, blocks per stage conv2_x..conv5_x)   Table 1
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
IMAGENET_WIDTHS = (64, 128, 256, 512)
IMAGENET_STRIDES = (1, 2, 2, 2)

# Sec. 4.2 / Table 6: n = 3, 5, 7, 9, 18, 200 -> depth 6n + 2.
CIFAR_N = (3, 5, 7, 9, 18, 200)
CIFAR_WIDTHS = (16, 32, 64)
CIFAR_STRIDES = (1, 2, 2)
# The stems' strides: ImageNet's 7x7/2 conv and 3x3/2 max pool (Table 1);
# CIFAR's 3x3 conv at stride 1 (Sec. 4.2).
STEM_STRIDES = {"imagenet": 4, "cifar": 1}

SHORTCUT_OPTIONS = ("A", "B", "C")
FAMILIES = ("imagenet", "cifar")


@dataclasses.dataclass(frozen=True)
class StageLayout:
    """What a (family, depth) pair builds.

    ``stages`` is one ``(name, blocks, width, stride)`` tuple per stage; the
    width is the block's inner width (bottleneck outputs ``4 * width``).
    """

    family: str
    depth: int
    block: str
    stages: tuple
    stem_filters: int
    default_shortcut: str
    default_input_size: int
    default_classes: int

    @property
    def levels(self):
        """The stage outputs' names, ``("C2", ..)``: stage ``conv{i}`` -> ``C{i}``."""
        return tuple(f"C{i + 2}" for i in range(len(self.stages)))

    def stride(self, level):
        """The stride in pixels (int) of stage output ``level`` ("C2".. the
        last stage's), from the stem's and the stages' strides.

        Raises ValueError naming the levels this layout has.
        """
        if level not in self.levels:
            raise ValueError(f"Unknown feature level {level!r}; this {self.family} "
                             f"ResNet-{self.depth} has {list(self.levels)}.")
        stride = STEM_STRIDES[self.family]
        for _, _, _, s in self.stages[:self.levels.index(level) + 1]:
            stride *= s
        return stride

    @property
    def total_stride(self):
        """The stride of the last stage output (ImageNet 32, CIFAR 4)."""
        return self.stride(self.levels[-1])

    @property
    def width(self):
        """The first stage's (inner) width; each later stage doubles it."""
        return self.stages[0][2]

    @property
    def is_default_width(self):
        return self.width == (IMAGENET_WIDTHS if self.family == "imagenet"
                              else CIFAR_WIDTHS)[0]

    @property
    def stage_names(self):
        return tuple(name for name, *_ in self.stages)


def infer_family(depth):
    """ImageNet if ``depth`` is one of Table 1's, else CIFAR (6n + 2)."""
    return "imagenet" if depth in IMAGENET_STAGES else "cifar"


def stage_layout(depth, family=None, width=None):
    """The stage layout of a depth, or a ValueError naming what is allowed.

    ``width``: the first stage's width (None: 64 for ImageNet, 16 for
    CIFAR); stage i has ``width * 2**i`` and the stem ``width`` filters.
    """
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)):
        raise ValueError(f"depth must be an integer, got {depth!r}.")
    depth = int(depth)
    family = family or infer_family(depth)
    if family not in FAMILIES:
        raise ValueError(
            f"Unknown family {family!r}; use one of {', '.join(FAMILIES)}."
        )
    if family == "imagenet":
        if depth not in IMAGENET_STAGES:
            raise ValueError(
                f"Unsupported ImageNet depth {depth}; use one of "
                f"{sorted(IMAGENET_STAGES)} (Table 1)."
            )
        block, counts = IMAGENET_STAGES[depth]
        widths = _scaled(IMAGENET_WIDTHS, width)
        stages = tuple(
            (f"conv{i + 2}", n, w, s)
            for i, (n, w, s) in enumerate(zip(counts, widths, IMAGENET_STRIDES))
        )
        return StageLayout(family, depth, block, stages, widths[0], "B", 224, 1000)
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"Unsupported CIFAR depth {depth}; CIFAR ResNets have 6n + 2 layers "
            f"(n >= 1), e.g. {', '.join(str(6 * n + 2) for n in CIFAR_N)} "
            "(Sec. 4.2)."
        )
    n = (depth - 2) // 6
    widths = _scaled(CIFAR_WIDTHS, width)
    stages = tuple(
        (f"conv{i + 2}", n, w, s)
        for i, (w, s) in enumerate(zip(widths, CIFAR_STRIDES))
    )
    # Sec. 4.2: option A on CIFAR, so residual nets add no parameters.
    return StageLayout(family, depth, "basic", stages, widths[0], "A", 32, 10)


def stride_of(level, family="imagenet"):
    """The stride in pixels of stage output ``level`` in every ``family``
    net (strides do not depend on depth or width): ImageNet C2..C5 4, 8,
    16, 32; CIFAR C2..C4 1, 2, 4. Raises ValueError for an unknown level."""
    if family not in FAMILIES:
        raise ValueError(f"Unknown family {family!r}; use one of {', '.join(FAMILIES)}.")
    any_depth = min(IMAGENET_STAGES) if family == "imagenet" else 6 * CIFAR_N[0] + 2
    return stage_layout(any_depth, family).stride(level)


def display_name(depth, width=None, residual=True, family=None):
    """"ResNet-18", "plain-20", or "ResNet-18 (width 16)" for a narrow one."""
    layout = stage_layout(depth, family, width)
    base = f"{'ResNet' if residual else 'plain'}-{layout.depth}"
    return base if layout.is_default_width else f"{base} (width {layout.width})"


def _scaled(widths, width):
    """``widths`` (the paper's, doubling per stage) starting at ``width``."""
    if width is None:
        return tuple(widths)
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(
            f"width must be a positive integer (the first stage's width; the "
            f"paper's is {widths[0]}), got {width!r}."
        )
    return tuple(int(width) * 2**i for i in range(len(widths)))


def architecture_names():
    """Every named architecture: residual and plain, ImageNet then CIFAR."""
    depths = list(IMAGENET_STAGES) + [6 * n + 2 for n in CIFAR_N]
    names = []
    for depth in depths:
        names += [f"resnet{depth}", f"plain{depth}"]
    return names


def parse_name(name):
    """``"resnet50"`` -> ``(50, True)``; ``"plain20"`` -> ``(20, False)``."""
    key = str(name).lower().replace("-", "").replace("_", "")
    for prefix, residual in (("resnet", True), ("plain", False)):
        if key.startswith(prefix) and key[len(prefix):].isdigit():
            return int(key[len(prefix):]), residual
    raise ValueError(
        f"Unknown architecture {name!r}; names look like 'resnet50' or "
        f"'plain20'. Known: {', '.join(architecture_names())}."
    )


# --- counting ---------------------------------------------------------------


def count_params(model):
    """``(total, trainable)`` parameter counts of a built model."""
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    total = trainable + sum(
        int(np.prod(w.shape)) for w in model.non_trainable_weights
    )
    return total, trainable


def count_macs(model):
    """Multiply-accumulates of one forward pass, as the paper counts FLOPs.

    Counts convolutions and fully connected layers (Table 1 counts these);
    BN, ReLU, additions and pooling are left out, as in the paper. Every
    spatial dimension of the model's input must be known: build the model
    with a fixed ``input_shape`` first.
    """
    import keras

    macs = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            out = layer.output.shape
            if any(d is None for d in out[1:3]):
                raise ValueError(
                    f"count_macs needs a fixed input size, but {layer.name} has "
                    f"output shape {out}; rebuild with input_shape=(H, W, 3)."
                )
            kh, kw, cin, cout = layer.kernel.shape
            macs += out[1] * out[2] * kh * kw * cin * cout // layer.groups
        elif isinstance(layer, keras.layers.Dense):
            cin, cout = layer.kernel.shape
            macs += cin * cout
    return int(macs)


def _all_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _all_layers(layer)
        else:
            yield layer

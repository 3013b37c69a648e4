"""The demo's sizes (``QUICK``, ``FULL``) and the models' settings."""

import dataclasses

KINDS = ("classifier", "detector", "localizer")


@dataclasses.dataclass
class DemoSettings:
    """Sizes of one demo run (``QUICK`` and ``FULL`` below)."""

    name: str
    clf_train: int
    clf_eval: int
    clf_epochs: int
    clf_batch: int
    clf_lr: float
    det_train: int
    det_eval: int
    det_epochs: int
    det_lr: float
    loc_train: int
    loc_eval: int
    loc_epochs: int
    loc_lr: float
    det_batch: int = 4
    det_size: int = 128  # the synthetic detection images' side (native, not resized)
    loc_batch: int = 32
    drawn: int = 8  # images drawn per picture
    clf_width: int = None  # the ResNet-18's first-stage width (None: Table 1's 64)


# The classifier: ImageNet-layout ResNet-18 (the detector needs a Table 1
# depth) on 32x32 images, zero-initialised residual branches so lr 0.1
# is stable from the first step; the CIFAR recipe's augmentation. The
# quick run's is width 16 (16-32-64-128 channels): each of its steps
# costs about a quarter of the full width's on 2 cores.
QUICK = DemoSettings("quick", clf_train=1920, clf_eval=300, clf_epochs=10, clf_batch=64,
                     clf_lr=0.1, det_train=64, det_eval=24, det_epochs=12, det_lr=0.04,
                     loc_train=480, loc_eval=120, loc_epochs=8, loc_lr=0.1, clf_width=16)
FULL = DemoSettings("full", clf_train=3200, clf_eval=600, clf_epochs=12, clf_batch=64,
                    clf_lr=0.1, det_train=128, det_eval=48, det_epochs=10, det_lr=0.02,
                    loc_train=1200, loc_eval=300, loc_epochs=12, loc_lr=0.1)

# ImageNet-style views at 32 px: shorter side in [32, 40], a random 32 crop,
# flip, PCA colour noise, per-pixel mean; testing uses the whole 32x32 image.
CLF_PREPROCESSING = dict(style="imagenet", crop_size=32, eval_resize=32,
                         scale_range=(32, 40), multiscale=(32, 48, 64))
# 16 RoIs per image pooled to 4x4: the per-RoI conv5 is most of a step.
DET_KWARGS = dict(anchor_scales=(16, 32, 64), roi_batch=16, rpn_batch=64, pooled_size=4,
                  proposals=dict(pre_nms_train=400, post_nms_train=64, pre_nms_test=300,
                                 post_nms_test=50))
LOC_KWARGS = dict(feature_level="C3", anchor_scales=(12, 18, 26), anchor_ratios=(1.0,),
                  head_channels=64)


def backbone_name(s):
    """The classifier's display name, e.g. "ResNet-18 (width 16)"."""
    from resnet_tf import zoo

    return zoo.display_name(18, s.clf_width)

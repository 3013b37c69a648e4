"""Classification data: sources, tolerant decoding, the paper's augmentation,
evaluation views and tf.data pipelines.

    sources.py        open_source("tfds:..." | "folder:..." | "synthetic")
    decode.py         decode_image, decode_and_filter, SkipCounter
    report.py         SkipReport: what every loader skipped, counted by reason
    augment.py        scale, crop, flip, PCA colour, CIFAR pad-crop, mean
    views.py          centre crop, 10-crop, multi-scale
    preprocessing.py  Preprocessing: the whole recipe of views, saved with models
    pipeline.py       make_dataset, compute_mean_image
    synthetic.py      the embedded shapes set
"""

from resnet_tf.data.decode import SkipCounter, decode_and_filter, decode_image
from resnet_tf.data.pipeline import compute_mean_image, make_dataset
from resnet_tf.data.preprocessing import Preprocessing
from resnet_tf.data.sources import open_source

__all__ = ["SkipCounter", "decode_and_filter", "decode_image", "compute_mean_image",
           "make_dataset", "Preprocessing", "open_source"]

"""Where the demo writes (its ``--out`` folder) and where it finds real
photos (``data_root``)."""

import os

import numpy as np

from apps.demo.settings import KINDS
from resnet_tf.folders import claim_folder

MARKER = "resnet_tf_demo.json"  # written first: a folder the demo may overwrite
OUTPUTS = ("models", "serving", "pictures", "images", "summary.json", "summary.txt")
SUBFOLDERS = ("models", "serving", "pictures", "images")
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def prepare_out(out_dir):
    """Create ``out_dir``, or clear a previous demo's outputs in it; refuse a
    non-empty folder that no demo wrote (``resnet_tf.folders.claim_folder``:
    ValueError naming the folder). Other files in a demo's folder are kept."""
    claim_folder(out_dir, MARKER, owner="`resnet-tf demo`", owned=OUTPUTS,
                 record={"written_by": "resnet-tf demo"}, label="--out ")
    for sub in SUBFOLDERS:
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)


def data_root():
    """``$RESNET_TF_DATA``, or ``../shared/data`` beside the repository; None
    if neither exists."""
    env = os.environ.get("RESNET_TF_DATA")
    path = env or os.path.join(os.path.dirname(_REPO), "shared", "data")
    return path if os.path.isdir(path) else None


def find_real_jpeg(kind):
    """A real photo for ``kind`` from the shared data (BCCD for the detector,
    an ILSVRC validation image for the localizer, hymenoptera for the
    classifier, any of them otherwise), or None."""
    root = data_root()
    if root is None:
        return None
    folders = {"classifier": ["hymenoptera/hymenoptera_data/val/ants", "cifar10-jpg/test/cat"],
               "detector": ["bccd/BCCD/JPEGImages"],
               "localizer": ["imagenet-val-loc/images"]}
    order = folders.get(kind, []) + [f for k in KINDS for f in folders[k]]
    for folder in order:
        path = os.path.join(root, folder)
        if os.path.isdir(path):
            files = sorted(f for f in os.listdir(path)
                           if f.lower().endswith((".jpg", ".jpeg")))
            if files:
                return os.path.join(path, files[0])
    return None


def save_png(array, path):
    """Write uint8 [H, W, 3] ``array`` to ``path`` (PNG); return ``path``."""
    from PIL import Image

    Image.fromarray(np.asarray(array, np.uint8)).save(path)
    return path

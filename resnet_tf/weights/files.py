"""What every weight reader shares: the result type and the checks that
name a bad file before any framework's loader sees it."""

import dataclasses
import os

LFS_PREFIX = b"version https://git-lfs"


@dataclasses.dataclass
class SourceWeights:
    """A source network's weights, renamed to resnet-tf's layer names.

    Attributes:
        weights: ``{layer name: [np.ndarray, ...]}`` in the order
            ``layer.get_weights()`` uses (Conv2D: kernel [kh, kw, in, out],
            bias; BN: gamma, beta, moving mean, moving variance; Dense:
            kernel [in, out], bias), float32. conv1's kernel still expects the
            source's input convention (``convention``).
        config: ``ResNet`` arguments that reproduce the source's layout:
            depth, stride_on, conv_bias, bn_epsilon, include_top, classes.
        convention: the source's ``InputConvention``.
        source: "keras-applications", "torchvision", "timm" or "keras-hub".
        path: the file or folder read.
        details: anything else worth recording (architecture name, class
            names a checkpoint carries, where the convention came from).
    """

    weights: dict
    config: dict
    convention: object
    source: str
    path: str
    details: dict = dataclasses.field(default_factory=dict)


def check_weight_file(path, what):
    """Refuse a missing, empty or git-lfs pointer file, naming it.

    Raises:
        ValueError: ``path`` is not a file, is empty, or is a git-lfs pointer
            (a ~130-byte text file starting ``version https://git-lfs``, which
            is what a clone without ``git lfs pull`` holds).
    """
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a folder; give the {what} file itself.")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such {what} file.")
    size = os.path.getsize(path)
    if size == 0:
        raise ValueError(f"{path}: the {what} file is empty (0 bytes); download it again.")
    with open(path, "rb") as f:
        head = f.read(len(LFS_PREFIX))
    if head == LFS_PREFIX:
        raise ValueError(
            f"{path}: this is a git-lfs pointer ({size} bytes of text), not the {what} "
            "file it stands for. Fetch the real file with `git lfs pull` in the "
            "repository it came from (or download it directly), then import that.")


def damaged(path, what, error):
    """The ValueError for a file a framework's loader could not read."""
    size = os.path.getsize(path) if os.path.exists(path) else 0
    return ValueError(
        f"{path}: could not read it as a {what} file ({size} bytes; "
        f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
        "The file is truncated, damaged or of another format; download it again, or "
        "check --from.")

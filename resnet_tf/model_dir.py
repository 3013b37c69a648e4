"""The trained-model directory: everything needed to evaluate, predict,
fine-tune detection/localization from, and export a model.

    DIR/model.keras        the model (architecture and weights)
    DIR/resnet_tf.json     kind, class names, preprocessing, recipe, results,
                           the precision policy the model was built under
    DIR/mean_image.npy     float32 [crop, crop, 3], the per-pixel mean
    DIR/checkpoints/       best.keras (by validation top-1), last.keras
    DIR/backup/            BackupAndRestore state while a run is unfinished
    DIR/logs/              TensorBoard;  DIR/history.csv: one row per epoch

Every file is written atomically (``resnet_tf.atomic``): a run killed while
it saves leaves the previous complete file. Every model file is read
through ``load_keras_file`` or ``load_weights_file``: ``.keras`` files with
Keras' ``safe_mode=True`` (a file holding Python code, such as a ``Lambda``
layer's bytecode, is refused), and a missing, truncated or corrupt file is a
ValueError that names it and says what to do, not a traceback from zipfile
or h5py.

The detector's and the localizer's directories are written and read by
``detection.model_dir`` and ``localization.model_dir``, on top of this
module: both rebuild their models with ``build_and_load``.

Precision: ``resnet_tf.json`` records the Keras dtype policy the model was
built under ("policy": float32, mixed_bfloat16 or mixed_float16; older
directories have it only under "training"). Keras gives each layer its
policy when the layer is created, and the files hold the models' configs
(constructor arguments) without it, so every loader rebuilds the model
inside ``resnet_tf.precision.policy_scope(recorded_policy(...))``: a
mixed_bfloat16 directory loads as mixed_bfloat16, and exports serve it with
bfloat16 weights (``resnet_tf.fold.serving_dtype``). Loading the model
file alone (``keras.saving.load_model("DIR/model.keras")``) builds it under
the global policy instead.
"""

import dataclasses
import json
import os
import zipfile
from typing import Optional

import numpy as np

from resnet_tf.atomic import atomic_write, write_json

FORMAT = "resnet-tf"
FORMAT_VERSION = 1
META = "resnet_tf.json"
MODEL = "model.keras"
MEAN = "mean_image.npy"


@dataclasses.dataclass
class Classifier:
    """A loaded classifier directory."""

    model: object
    class_names: list
    mean_image: Optional[np.ndarray]
    preprocessing: object
    meta: dict
    directory: str
    policy: str = "float32"


def save_classifier(directory, model, class_names, mean_image, preprocessing,
                    recipe=None, results=None, extra=None):
    """Write ``model`` and its metadata to ``directory`` (created if needed);
    the metadata records the dtype policy ``model`` was built under."""
    from resnet_tf.precision import model_policy

    os.makedirs(directory, exist_ok=True)
    if len(class_names) != model.output.shape[-1]:
        raise ValueError(f"{len(class_names)} class names for a model with "
                         f"{model.output.shape[-1]} outputs.")
    atomic_write(os.path.join(directory, MODEL), lambda p: model.save(p))
    if mean_image is not None:
        write_mean_image(directory, mean_image)
    return write_meta(
        directory, "classifier",
        architecture=_jsonable(model.get_config()),
        policy=model_policy(model),
        class_names=list(class_names),
        preprocessing=preprocessing.to_dict(),
        mean_image=MEAN if mean_image is not None else None,
        recipe=recipe.to_dict() if recipe is not None else None,
        results=results or {},
        **(extra or {}))


def write_meta(directory, kind, **fields):
    """Write ``resnet_tf.json`` for a model directory of ``kind``
    ("classifier", "detector", "localizer") atomically. ``fields`` should
    hold ``policy``, the dtype policy the model was built under
    (``resnet_tf.precision.model_policy``), which the loaders honour."""
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind}
    meta.update(_jsonable(fields))
    write_json(os.path.join(directory, META), meta, indent=1)
    return directory


def read_meta(directory, kind=None):
    path = os.path.join(directory, META)
    if not os.path.isdir(directory):
        raise ValueError(f"{directory}: no such model directory. Train one with "
                         "`resnet-tf train classifier ... --out DIR`.")
    if not os.path.exists(path):
        raise ValueError(f"{path} is missing: {directory} is not a resnet-tf model "
                         "directory (written by `resnet-tf train`).")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable model metadata ({e}).") from e
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a resnet-tf model directory "
                         f"(format {meta.get('format')!r}).")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path}: format version {meta['format_version']} is newer "
                         f"than this resnet-tf reads ({FORMAT_VERSION}); upgrade.")
    if kind and meta.get("kind") != kind:
        raise ValueError(f"{directory} holds a {meta.get('kind')}, not a {kind}.")
    return meta


def recorded_policy(directory, meta):
    """The dtype policy a model directory's metadata records: "policy", else
    "training"/"policy" (directories written before "policy" existed), else
    "float32".

    Raises:
        ValueError naming ``resnet_tf.json``: a policy this resnet-tf does
        not know.
    """
    from resnet_tf.precision import check_policy

    policy = meta.get("policy") or (meta.get("training") or {}).get("policy") or "float32"
    return check_policy(policy, os.path.join(directory, META))


def load_classifier(directory, compile=False):
    """Load a classifier directory written by ``save_classifier``, the model
    built under the dtype policy the directory records (``recorded_policy``)."""
    from resnet_tf.data.preprocessing import Preprocessing
    from resnet_tf.precision import policy_scope

    meta = read_meta(directory, kind="classifier")
    model_path = os.path.join(directory, MODEL)
    if not os.path.exists(model_path):
        raise ValueError(f"{model_path} is missing from the model directory.")
    policy = recorded_policy(directory, meta)
    with policy_scope(policy):
        model = load_keras_file(model_path, "classifier", compile=compile,
                                hint="copy checkpoints/best.keras over it, or retrain")
    mean = read_mean_image(directory, meta)
    return Classifier(model=model, class_names=meta["class_names"], mean_image=mean,
                      preprocessing=Preprocessing.from_dict(meta["preprocessing"]),
                      meta=meta, directory=directory, policy=policy)


_SAFE_MODE_HINT = ("resnet-tf never saves Python code in a model, so the file was not "
                   "written by resnet-tf, or was changed since. Load it yourself with "
                   "keras.saving.load_model(path, safe_mode=False) only if you trust "
                   "where it came from.")


def _corrupt(path, what, hint, detail):
    size = os.path.getsize(path)
    state = "empty (0 bytes)" if not size else f"truncated or corrupt ({size} bytes; {detail})"
    return ValueError(f"{path}: the {what} file is {state}. {hint[:1].upper()}{hint[1:]}.")


def load_keras_file(path, what="model", compile=False, hint="restore it from a backup"):
    """Load a ``.keras`` (or legacy ``.h5``) model file with ``safe_mode=True``.

    Args:
        path: the file.
        what: what it is, for messages ("classifier", "keras.applications model").
        hint: what to do about a damaged file, e.g. "retrain".
    Raises:
        ValueError naming ``path``: missing; not a zip archive (``.keras``),
        i.e. empty, truncated or not a model; holding Python code (refused by
        safe mode); or failing to load for any other reason.
    """
    import keras

    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such {what} file.")
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        raise _corrupt(path, what, hint, "not a zip archive, which a .keras file is")
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as e:
        message = str(e)
        if "safe_mode" in message:
            raise ValueError(f"{path}: refused to load the {what}: it contains Python "
                             f"code that loading would run ({message.split('.')[0]}). "
                             f"{_SAFE_MODE_HINT}") from e
        if isinstance(e, (zipfile.BadZipFile, EOFError, OSError)) or "truncated" in message:
            raise _corrupt(path, what, hint, f"{type(e).__name__}: {e}") from e
        raise ValueError(f"{path}: could not load the {what} ({type(e).__name__}: {e}). "
                         f"The file may be damaged: {hint}.") from e


def build_and_load(cls, directory, meta, weights_name, kind, build_args=(),
                   hint="retrain, or restore it from a backup"):
    """Rebuild a model from a directory's recorded config and load its
    weights file: the loading steps every ``.weights.h5`` model directory
    shares (``detection.model_dir``, ``localization.model_dir``).

    The model is built as ``cls.from_config(meta["config"])`` and
    ``model.ensure_built(*build_args)`` inside
    ``resnet_tf.precision.policy_scope(recorded_policy(directory, meta))``
    (module docstring: Keras fixes each layer's dtype policy when the layer
    is created), then ``load_weights_file(model, DIR/weights_name, kind)``.

    Args:
        cls: a Keras model class with ``from_config`` and ``ensure_built``
            (``FasterRCNN``, ``Localizer``, ``RegionClassifier``).
        directory: the model directory.
        meta: its ``resnet_tf.json`` dict (``read_meta``); ``meta["config"]``
            holds the model's constructor arguments.
        weights_name: the weights file's name inside ``directory``, e.g.
            "detector.weights.h5".
        kind: what the directory holds, for messages ("detector",
            "localizer").
        build_args: passed to ``ensure_built`` (the localizer's crop size).
        hint: what to do about a missing or damaged weights file.
    Returns:
        the built model, weights loaded, under the recorded dtype policy.
    Raises:
        ValueError naming the file: "DIR/NAME is missing from the KIND
        directory" (with ``hint``); a policy this resnet-tf does not know
        (``recorded_policy``); a damaged weights file or weights that don't
        fit the config (``load_weights_file``).
    """
    from resnet_tf.precision import policy_scope

    weights = os.path.join(directory, weights_name)
    if not os.path.exists(weights):
        raise ValueError(f"{weights} is missing from the {kind} directory; {hint}.")
    with policy_scope(recorded_policy(directory, meta)):
        model = cls.from_config(meta["config"])
        model.ensure_built(*build_args)
    return load_weights_file(model, weights, kind, hint=hint)


def save_weights_file(model, path):
    """``model.save_weights(path)`` (a ``.weights.h5`` file), atomically;
    returns ``path``. The detector and localizer directories hold their
    weights this way (``detection.model_dir``, ``localization.model_dir``)."""
    return atomic_write(path, lambda p: model.save_weights(p))


def load_weights_file(model, path, what="model", hint="retrain, or restore it from a backup"):
    """``model.load_weights(path)`` for a ``.weights.h5`` file, with errors
    that name the file (missing, empty, truncated, not HDF5, or weights that
    don't fit ``model``) and say what to do."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such {what} weights file.")
    with open(path, "rb") as f:
        signature = f.read(8)
    if path.endswith(".h5") and signature != b"\x89HDF\r\n\x1a\n":
        raise _corrupt(path, f"{what} weights", hint, "no HDF5 signature at its start")
    try:
        model.load_weights(path)
    except Exception as e:
        if isinstance(e, (OSError, EOFError)) or "truncated" in str(e):
            raise _corrupt(path, f"{what} weights", hint, f"{type(e).__name__}: {e}") from e
        raise ValueError(f"{path}: could not load the {what}'s weights "
                         f"({type(e).__name__}: {e}); {hint}.") from e
    return model


def update_results(directory, **results):
    """Merge ``results`` into the directory's metadata."""
    meta = read_meta(directory)
    meta.setdefault("results", {}).update(results)
    write_json(os.path.join(directory, META), meta, indent=1)


def write_mean_image(directory, mean_image, name=MEAN):
    """Write ``directory/name``: float32 [H, W, 3], the per-pixel mean image
    (an ``.npy`` file), atomically."""
    array = np.asarray(mean_image, np.float32)

    def write(path):
        with open(path, "wb") as f:
            np.save(f, array)
    return atomic_write(os.path.join(directory, name), write)


def _jsonable(x):
    return json.loads(json.dumps(x, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def read_mean_image(directory, meta):
    """The per-pixel mean image a model directory's meta names, or None."""
    if not meta.get("mean_image"):
        return None
    path = os.path.join(directory, meta["mean_image"])
    try:
        return np.load(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: could not read the mean image ({e}).") from e

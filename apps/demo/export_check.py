"""Step 6: export each model for TF Serving and call each export once
through its ``serving_default`` signature, on a real JPEG where one is found
and on a synthetic one."""

import os

import numpy as np

from apps.demo.folders import data_root, find_real_jpeg
from apps.demo.settings import KINDS


def _headline(kind, out):
    """One line describing the first image's outputs of a served model."""
    def first(name):
        v = out[name][0]
        return v.decode() if isinstance(v, bytes) else v

    if kind == "classifier":
        return f"{first('top_k_labels')[0].decode()} ({first('top_k_scores')[0]:.2f})"
    if kind == "detector":
        n = int(out["num_detections"][0])
        if not n:
            return "no detections"
        return (f"{n} detections, best {out['detection_labels'][0][0].decode()} "
                f"({out['detection_scores'][0][0]:.2f})")
    strings = [k for k, v in out.items() if v.dtype == object]
    if strings:
        v = np.asarray(out[strings[0]][0]).reshape(-1)[:1]
        return f"{strings[0]}: {v[0].decode() if isinstance(v[0], bytes) else v[0]}"
    return ", ".join(f"{k} {tuple(v.shape)}" for k, v in sorted(out.items()))


def export_and_serve(out_dir, data, models, verbose):
    """Export every trained model whose kind ``EXPORTERS`` knows; call each
    export's ``serving_default`` with [a real JPEG, a synthetic JPEG], or
    with the synthetic JPEG alone where no real photo is found (a note says
    so).

    Returns:
        ``(results, notes)``: per kind ``export`` (the version folder),
        ``files`` (the JPEGs sent, in order), ``real_photo`` (the real
        photo's path or None), ``outputs`` (name -> shape), ``real`` (the
        headline answer for the real photo, or None) and ``synthetic``.
    """
    import keras
    import tensorflow as tf

    from apps.export import EXPORTERS, export_model
    from resnet_tf.export import BYTES_INPUT, BYTES_SIGNATURE

    def synthetic_image(kind):
        source = data["sources"][kind]
        if kind == "classifier":
            return source.arrays("eval")[0][0]
        return source.split("eval").images[0]

    results, notes = {}, []
    kinds = [k for k in KINDS if k in models]
    bar = keras.utils.Progbar(len(kinds), verbose=1 if verbose else 0,
                              stateful_metrics=["model"])
    for i, kind in enumerate(kinds):
        if kind not in EXPORTERS:
            notes.append(f"{kind}: not exported (this resnet-tf has no {kind} exporter "
                         "in apps.export.EXPORTERS)")
            bar.update(i + 1)
            continue
        base = os.path.join(out_dir, "serving", kind)
        path = export_model(kind, models[kind]["directory"], base, version=1)
        jpeg = os.path.join(out_dir, "images", f"serving_{kind}.jpg")
        from PIL import Image

        Image.fromarray(synthetic_image(kind)).save(jpeg, quality=95)
        real = find_real_jpeg(kind)
        if real is None:
            root = data_root()
            why = ("no $RESNET_TF_DATA or ../shared/data folder" if root is None
                   else f"no JPEG in its photo folders under {root}")
            notes.append(f"{kind}: no real photo found ({why}); called on the "
                         "synthetic JPEG only")
        files = [real, jpeg] if real else [jpeg]
        loaded = tf.saved_model.load(path)
        fn = loaded.signatures[BYTES_SIGNATURE]
        payload = tf.constant([open(f, "rb").read() for f in files])
        out = {k: v.numpy() for k, v in fn(**{BYTES_INPUT: payload}).items()}
        results[kind] = {"export": path, "files": files, "real_photo": real,
                         "outputs": {k: list(v.shape) for k, v in out.items()},
                         "real": _headline(kind, {k: v[:1] for k, v in out.items()})
                         if real else None,
                         "synthetic": _headline(kind, {k: v[-1:] for k, v in out.items()})}
        bar.update(i + 1)
    return results, notes


def serving_report(serving, notes):
    """The lines the demo prints about ``export_and_serve``'s results: each
    export, what it answered for the real photo (only where one was sent)
    and for the synthetic JPEG, then the notes."""
    lines = []
    for kind, r in serving.items():
        lines.append(f"  {kind}: {r['export']}")
        if r["real_photo"]:
            lines.append(f"    real photo {r['real_photo']}: {r['real']}")
        lines.append(f"    synthetic {r['files'][-1]}: {r['synthetic']}")
    return lines + [f"  NOTE: {note}" for note in notes]

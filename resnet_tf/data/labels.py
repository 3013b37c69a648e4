"""Class labels across data sets and models."""

import json
import os

import numpy as np


def label_map_for(source_names, model_names, what):
    """int32 [len(source_names)]: the model's index of each class of a data
    source, matched by name (e.g. WordNet IDs), for a source whose classes
    are a subset of the model's, in any order.

    Args:
        source_names: the source's class names, in its label order.
        model_names: the model's class names, in its output order.
        what: the source (a data spec), named in the error.
    Raises:
        ValueError naming ``what`` and up to five source classes the model
        does not have.
    """
    index = {n: i for i, n in enumerate(model_names)}
    missing = [n for n in source_names if n not in index]
    if missing:
        raise ValueError(f"{what}: classes {missing[:5]} are not among the model's "
                         f"{len(model_names)} classes (e.g. {model_names[:5]}).")
    return np.array([index[n] for n in source_names], np.int32)


def read_class_index(path):
    """Class names from a Keras ``imagenet_class_index.json`` or a
    ``LOC_synset_mapping.txt`` file.

    Returns ``(names, synsets)``: human-readable names and WordNet IDs, in
    class-index order.
    """
    if not os.path.exists(path):
        raise ValueError(f"{path}: class index file not found.")
    if path.endswith(".json"):
        with open(path) as f:
            try:
                index = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e}).") from e
        try:
            rows = [index[str(i)] for i in range(len(index))]
        except KeyError as e:
            raise ValueError(f"{path}: expected keys '0'..'{len(index) - 1}' mapping "
                             "to [wnid, name] (Keras format).") from e
        return [r[1] for r in rows], [r[0] for r in rows]
    names, synsets = [], []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            wnid, _, name = line.partition(" ")
            if not name:
                raise ValueError(f"{path}:{i}: expected 'WNID name, ...', got {line!r}.")
            synsets.append(wnid)
            names.append(name.split(",")[0].strip())
    return names, synsets

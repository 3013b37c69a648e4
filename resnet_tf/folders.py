"""Output folders a tool owns: it replaces its own earlier outputs there and
never touches anything else.

    claim_folder(out_dir, "crops.json", owner="write_object_crops",
                 listed_key="splits", exclusive=True,
                 record={"written_by": "...", "splits": ["train", "val"]})

A tool that writes into a folder the user names (``resnet-tf demo --out``,
``write_object_crops``) first writes a marker file there. A later run may
clear what the marker says an earlier run wrote; a non-empty folder without
the marker holds someone else's files and is refused, so a mistyped path
never deletes the user's work.
"""

import json
import os
import shutil


def _entry_name(name):
    """True for a name of one entry directly inside a folder (no path
    separator, not ``.``/``..``, no leading dot): the only names removed."""
    return (isinstance(name, str) and bool(name) and not name.startswith(".")
            and "/" not in name and "\\" not in name and "\0" not in name
            and os.path.basename(name) == name)


def _listed(marker_path, path, key):
    try:
        with open(marker_path) as f:
            return [n for n in json.load(f)[key] if isinstance(n, str)]
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{marker_path} is unreadable; delete {path} or give a new "
                         "folder.") from None


def write_marker(path, marker, record, indent=None):
    """Write ``record`` (a JSON-serialisable dict) as ``path/marker``."""
    with open(os.path.join(path, marker), "w") as f:
        json.dump(record, f, indent=indent)


def claim_folder(path, marker, *, owner, owned=(), listed_key=None, exclusive=False,
                 record=None, label=""):
    """Make ``path`` a folder ``owner`` may write into, clearing only what an
    earlier run of ``owner`` wrote there, and mark it.

    - missing, or an empty folder: created;
    - a non-empty folder without ``marker``: refused;
    - a folder holding ``marker``: its entries named in ``owned`` and those
      the marker's JSON lists under ``listed_key`` are removed (files or
      folders; only plain entry names, never a path). With ``exclusive``,
      a marked folder that also holds anything else is refused, and nothing
      is removed.

    Then ``marker`` is written with ``record`` (default
    ``{"written_by": owner}``) before the caller writes any output.

    Args:
        path: str, the folder.
        marker: the marker's file name inside ``path``.
        owner: the writer, as the messages name it (e.g. "`resnet-tf demo`").
        owned: entry names every run writes.
        listed_key: the marker's key listing further entry names a run wrote
            (e.g. the crops' split folders), or None.
        exclusive: refuse entries neither owned nor listed.
        record: the marker's JSON (a dict).
        label: how the user gave ``path``, put before it in messages
            (e.g. "--out ").
    Returns:
        ``path``, absolute.
    Raises:
        ValueError: ``path`` is a file; non-empty and not marked; marked but
        holding entries ``owner`` did not write (``exclusive``); or its
        marker unreadable (``listed_key``). Each names the folder and says
        to give a new or empty one.
    """
    path = os.path.abspath(path)
    marker_path = os.path.join(path, marker)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{label}{path} is a file; give a new or empty folder.")
    if os.path.isdir(path) and os.listdir(path):
        if not os.path.isfile(marker_path):
            raise ValueError(f"{label}{path} is not empty and was not written by {owner} "
                             f"(no {marker}); give a new or empty folder.")
        previous = list(owned) + (_listed(marker_path, path, listed_key)
                                  if listed_key else [])
        if exclusive:
            others = sorted(set(os.listdir(path)) - set(previous) - {marker})
            if others:
                more = f" and {len(others) - 5} more" if len(others) > 5 else ""
                raise ValueError(f"{label}{path} holds {others[:5]}{more}, which {owner} "
                                 "did not write; give a new or empty folder.")
        for name in previous:
            entry = os.path.join(path, name)
            if not _entry_name(name) or name == marker:
                continue
            if os.path.isdir(entry) and not os.path.islink(entry):
                shutil.rmtree(entry)
            elif os.path.lexists(entry):
                os.remove(entry)
    os.makedirs(path, exist_ok=True)
    write_marker(path, marker, {"written_by": owner} if record is None else record)
    return path

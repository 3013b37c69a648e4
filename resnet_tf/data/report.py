"""What every loader skipped, counted by reason: one structure for all.

Image files that can't be decoded (``decode.SkipCounter``, filled from
tf.data's threads) and annotation files, rows and boxes that can't be used
(``detection.data.annotations.LoadReport``, which the VOC, COCO, TFDS and
ILSVRC readers fill) are both counted in a ``SkipReport``: a warning naming
the item and saying why as it happens, and a count per reason key for the
report at the end of a run. The rule for each case, loader by loader, is
tabled in docs/reliability.md ("Bad data").

Reason keys are plain strings, each named where it is counted: the image
files' keys below (the decoder's, this package's own); the annotation and
box keys in ``detection.data.reasons``; the ILSVRC keys in
``localization.data.reasons``. Each of those modules re-exports the keys of
the layers below it, so a reader imports its own layer's ``reasons`` and
finds every key it may count; this module knows nothing of the layers above.
"""

import collections
import logging
import threading

log = logging.getLogger("resnet_tf.data")

# --- reason keys: image files (decode.check_image_bytes, header reads) ------------
EMPTY = "empty"
NOT_AN_IMAGE = "not_an_image"
TRUNCATED_JPEG = "truncated_jpeg"
TRUNCATED_PNG = "truncated_png"
TRUNCATED_GIF = "truncated_gif"
TRUNCATED_BMP = "truncated_bmp"
UNSUPPORTED_BMP = "unsupported_bmp"
TOO_LARGE = "too_large"  # header claims more than decode.MAX_PIXELS pixels
UNREADABLE_IMAGE = "unreadable_image"  # any other failure to read an image header
# passes the header and end-marker checks, but neither TF nor PIL decodes it
CORRUPT = "corrupt_image"

OTHER = "other"  # anything else (``SkipReport.add``'s default)


class SkipReport:
    """Skipped items, counted by reason; thread-safe.

    ``add`` logs one warning per call (on the ``resnet_tf.data`` logger) and
    counts the item once per reason however often it comes back (a bad file
    is met again every epoch). ``count`` counts every call and is what
    ``reset`` returns and zeroes (per-epoch reports); ``by_reason`` and
    ``total`` are distinct items since creation.

    Attributes:
        by_reason: ``{reason key: distinct items}``, a copy.
        total: distinct items skipped, all reasons.
        count: ``add`` calls since creation or the last ``reset()``.
        paths: the most recent ``max_paths`` items, oldest first (kept
            across ``reset()``).
    """

    def __init__(self, max_paths=100):
        self._lock = threading.Lock()
        self._count = 0
        self._seen = set()
        self._by_reason = collections.Counter()
        self._paths = collections.deque(maxlen=max_paths)

    def add(self, where, message, reason=OTHER, key=None):
        """Record one skipped item and warn.

        Args:
            where: str naming the item (a file, "file:line", a TFDS id).
            message: what is wrong and what to do, for the warning.
            reason: a reason key (module constants).
            key: what makes the item distinct (default ``where``), e.g.
                ``(file, box index)``.
        """
        key = (reason, where if key is None else key)
        with self._lock:
            self._count += 1
            self._paths.append(where)
            if key not in self._seen:
                self._seen.add(key)
                self._by_reason[reason] += 1
        self._warn(where, message)

    def _warn(self, where, message):
        log.warning("%s: %s", where, message)

    @property
    def count(self):
        with self._lock:
            return self._count

    @property
    def paths(self):
        with self._lock:
            return list(self._paths)

    @property
    def by_reason(self):
        with self._lock:
            return dict(self._by_reason)

    @property
    def total(self):
        with self._lock:
            return sum(self._by_reason.values())

    def reset(self):
        """Return ``count`` and set it to zero (e.g. once per epoch)."""
        with self._lock:
            count, self._count = self._count, 0
            return count

    def reason_summary(self):
        """``"3 (2 truncated_jpeg, 1 empty)"``, or ``"0"``."""
        return format_reasons(self.by_reason)


def format_reasons(by_reason):
    """``{reason: n}`` -> ``"3 (2 truncated_jpeg, 1 empty)"``; ``"0"`` if empty."""
    total = sum(by_reason.values())
    if not total:
        return "0"
    parts = ", ".join(f"{n} {r}" for r, n in sorted(by_reason.items(),
                                                    key=lambda kv: (-kv[1], kv[0])))
    return f"{total} ({parts})"


def skip_summary(reports):
    """One line per named report: ``{"annotations": LoadReport or SkipReport,
    "train images": SkipCounter}`` -> ``"Skipped: annotations 2 (...); ..."``.
    What a run prints at its end."""
    parts = []
    for name, report in reports.items():
        by_reason = report.by_reason if report is not None else {}
        parts.append(f"{name} {format_reasons(by_reason)}")
    return "Skipped: " + "; ".join(parts) + "."


class BadItem(ValueError):
    """One item (an annotation file, a row, an image) that a reader skips.

    Raised by per-item parsers such as ``detection.data.voc.parse_voc_xml``
    (so calling one directly still gives a clear error naming the file);
    the dataset readers catch it, skip the item and count ``reason``.
    """

    def __init__(self, where, detail, reason):
        super().__init__(f"{where}: {detail}")
        self.where, self.detail, self.reason = where, detail, reason

"""Balanced sampling of positives and negatives for a minibatch.

RPN: 256 anchors per image, at most half positive (Ren et al. Sec. 3.1.3);
head: 128 RoIs per image by default, at most a quarter foreground (the
original Faster R-CNN code's ``TRAIN.BATCH_SIZE = 128``, ``FG_FRACTION =
0.25``; Fast R-CNN Sec. 2.3 samples 64 per image, two images a batch;
detectron2 and torchvision sample 512, ``--roi-batch 512``).
Fixed-size: random priorities, then ``top_k``, so the graph has static
shapes. The randomness comes from ``seed``: a ``keras.random.SeedGenerator``
advances its state on every call (also inside a compiled train step), so
each step draws a new sample; an int seed gives the same sample every call.
"""

from keras import ops, random

from detection.matcher import NEGATIVE, POSITIVE


def sample_balanced(labels, num_samples, positive_fraction, seed):
    """Choose up to ``num_samples`` per row: positives first (at most
    ``positive_fraction`` of them), negatives filling the rest.

    Args:
        labels: int [B, M]: ``POSITIVE`` (1), ``NEGATIVE`` (0), anything
            else (``IGNORE``) never sampled.
        num_samples: Python int, samples per row.
        positive_fraction: float in [0, 1].
        seed: an int (the same sample every call) or a
            ``keras.random.SeedGenerator`` (a new sample every call).
    Returns:
        bool [B, M], True for the sampled entries. Each row has
        ``min(P, floor(num_samples * positive_fraction))`` positives and
        ``min(N, num_samples - positives)`` negatives, P and N being the
        row's available counts.
    Raises:
        ValueError: ``positive_fraction`` outside [0, 1].
    """
    if not 0 <= positive_fraction <= 1:
        raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}.")
    labels = ops.convert_to_tensor(labels)
    pos = ops.equal(labels, POSITIVE)
    neg = ops.equal(labels, NEGATIVE)
    m = labels.shape[-1]
    # Static where the count is (one canvas); a tensor where batches change
    # canvas (aspect-ratio grouped batches, detection.data.pipeline).
    k = min(int(num_samples), m) if m is not None else ops.minimum(
        int(num_samples), ops.shape(labels)[-1])
    num_pos = ops.minimum(ops.sum(ops.cast(pos, "int32"), axis=-1),
                          int(num_samples * positive_fraction))
    num_neg = ops.minimum(ops.sum(ops.cast(neg, "int32"), axis=-1), k - num_pos)
    noise = random.uniform(ops.shape(labels), seed=seed)
    return ops.logical_or(_take_top(pos, noise, num_pos, k),
                          _take_top(neg, noise, num_neg, k))


def _take_top(mask, noise, count, k):
    """bool [B, M]: ``count[b]`` random True entries of ``mask[b]``."""
    prio = ops.where(mask, noise, -1.0)
    _, idx = ops.top_k(prio, k=k)  # [B, k]
    keep = ops.arange(k)[None, :] < count[:, None]  # first count of them
    chosen = ops.one_hot(idx, ops.shape(mask)[-1], dtype="int32")  # [B, k, M]
    chosen = ops.sum(chosen * ops.cast(keep, "int32")[..., None], axis=1)
    return ops.logical_and(chosen > 0, mask)

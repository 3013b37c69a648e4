"""Balanced sampling of positives and negatives for a minibatch.

RPN: 256 anchors per image, at most half positive (Ren et al. Sec. 3.1.3);
head: 512 RoIs per image, at most a quarter foreground. Fixed-size and
stateless: random priorities from a seed, then ``top_k``, so the graph has
static shapes.
"""

from keras import ops, random


def sample_balanced(labels, num_samples, positive_fraction, seed):
    """Choose up to ``num_samples`` per row: positives first (at most
    ``positive_fraction`` of them), negatives filling the rest.

    Args:
        labels: int [B, M]: 1 positive, 0 negative, anything else ignored.
        num_samples: Python int, samples per row.
        positive_fraction: float in [0, 1].
        seed: an int or a ``keras.random.SeedGenerator``.
    Returns:
        bool [B, M], True for the sampled entries. Each row has
        ``min(P, floor(num_samples * positive_fraction))`` positives and
        ``min(N, num_samples - positives)`` negatives, P and N being the
        row's available counts.
    """
    if not 0 <= positive_fraction <= 1:
        raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}.")
    labels = ops.convert_to_tensor(labels)
    pos = ops.equal(labels, 1)
    neg = ops.equal(labels, 0)
    m = labels.shape[-1]
    k = min(int(num_samples), m)
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

"""Switches for resnet-tf's backend fast paths, precision policies, and
precision advice.

``fast_paths(False)`` makes the model's layers take the plain Keras code
(e.g. ``keras.layers.BatchNormalization`` instead of the fused TF kernel), so
that tests and ``benchmarks/train_throughput.py --numerics`` can check that
the fast paths train to the same losses. Layers read the switch when they
are called, i.e. when a step function is traced: build, compile and train
inside the context.

A model's precision is the Keras dtype policy it was built under
(``POLICIES``). Keras fixes each layer's policy when the layer is created,
from the global policy, and a model directory's files do not carry it (the
models' configs are their constructors' arguments), so every model
directory records it in ``resnet_tf.json`` ("policy", ``model_policy``)
and its loader rebuilds the model inside ``policy_scope`` of it.
"""

import contextlib

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")

_FAST_PATHS = True


def fast_paths_enabled():
    """Whether layers may take backend-specific fast paths (default True)."""
    return _FAST_PATHS


@contextlib.contextmanager
def fast_paths(enabled):
    """Enable or disable the backend fast paths inside a ``with`` block."""
    global _FAST_PATHS
    old, _FAST_PATHS = _FAST_PATHS, bool(enabled)
    try:
        yield
    finally:
        _FAST_PATHS = old


def check_policy(policy, where="precision policy"):
    """``policy`` if it is one of ``POLICIES``, else a ValueError naming it
    and ``where`` it came from."""
    if policy not in POLICIES:
        raise ValueError(f"{where}: unknown precision policy {policy!r}; use one of "
                         f"{', '.join(POLICIES)}.")
    return policy


@contextlib.contextmanager
def policy_scope(policy):
    """Build (or load) models under the Keras dtype policy ``policy`` (one of
    ``POLICIES``) inside a ``with`` block; the previous global policy is
    restored afterwards. Layers keep the policy they were created with."""
    import keras

    check_policy(policy)
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.config.set_dtype_policy(old)


def model_policy(model):
    """The name of the dtype policy ``model`` was built under: the policy of
    the model object itself, which Keras takes from the global policy when
    the model is created, as it does for the model's layers (a layer built
    with an explicit dtype, such as the float32 classifier of a mixed
    model, does not change it)."""
    return model.dtype_policy.name


def slow_bfloat16_reason(policy, cpu_flags=None, has_gpu=None):
    """Why ``policy`` will train slower than float32 here, or None.

    ``mixed_bfloat16`` on a CPU without AMX: oneDNN then runs bfloat16
    convolutions with AVX-512 BF16 instructions, measured 1.4-2.2x slower
    than its float32 ones on the benchmark machine (benchmarks/RESULTS.md).

    Args:
        policy: a Keras dtype policy name.
        cpu_flags: the CPU's flags (default: read from /proc/cpuinfo; None
            where that cannot be read, and then no reason is given).
        has_gpu: whether TensorFlow sees a GPU (default: ask TensorFlow).
    """
    if policy != "mixed_bfloat16":
        return None
    if has_gpu is None:
        import tensorflow as tf

        has_gpu = bool(tf.config.list_physical_devices("GPU"))
    if has_gpu:
        return None
    if cpu_flags is None:
        cpu_flags = _cpu_flags()
        if cpu_flags is None:
            return None
    if "amx_bf16" in cpu_flags:
        return None
    return ("mixed_bfloat16 on a CPU without AMX (no amx_bf16 in "
            "/proc/cpuinfo): bfloat16 convolutions run slower than float32 "
            "ones here, so training is slower; use --precision float32.")


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None

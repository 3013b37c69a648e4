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

``--precision auto`` (the CLI's default) picks the policy that trains
fastest on the machine (``choose_precision``, a pure function of the
machine's /proc/cpuinfo and GPUs; ``resolve_precision`` reads this
machine), from what benchmarks/RESULTS.md measured: mixed_bfloat16 on a GPU
of compute capability 8.0 or more, on a CPU with AMX (``amx_bf16``:
ResNet-50 trained 1.72x faster there), and on an AMD CPU with AVX-512 BF16
(``avx512_bf16``, AuthenticAMD: ResNet-50 1.69x, CIFAR ResNet-20 1.48x
faster on a Zen 4 EPYC); float32 elsewhere (on a Sapphire Rapids VM with
AVX-512 BF16 but no AMX exposed, oneDNN's bfloat16 convolutions ran
1.4-2.2x slower than its float32 ones). The trainers resolve it once, in
``resnet_tf.runner.TrainingRun``, print the choice and its reason, and the
model directory's ``training`` record keeps both ("requested_policy":
"auto", "policy": the one used).
"""

import contextlib

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
AUTO = "auto"
PRECISIONS = (AUTO,) + POLICIES  # what ``--precision`` accepts
# bfloat16 matrix units (tensor cores) start with Ampere, compute capability 8.0.
BF16_MIN_COMPUTE_CAPABILITY = (8, 0)

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


def parse_cpu_flags(cpuinfo):
    """The CPU flags in ``cpuinfo`` (the text of /proc/cpuinfo): a set of
    str from its first "flags" line, or None where it has none (another
    OS's format, or no text)."""
    for line in (cpuinfo or "").splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def parse_cpu_vendor(cpuinfo):
    """The CPU vendor in ``cpuinfo`` (the text of /proc/cpuinfo): the first
    "vendor_id" value as a str (e.g. "GenuineIntel", "AuthenticAMD"), or
    None where it has none."""
    for line in (cpuinfo or "").splitlines():
        if line.startswith("vendor_id"):
            return line.split(":", 1)[1].strip()
    return None


def cpu_bfloat16_reason(flags, vendor):
    """Why bfloat16 trains faster than float32 on a CPU with ``flags`` (a
    set of str) from ``vendor`` (str or None), or None where it does not
    (measured in benchmarks/RESULTS.md): AMX (``amx_bf16``), or AVX-512
    BF16 (``avx512_bf16``) on an AMD CPU. Intel's AVX-512 BF16 without AMX
    measured slower than float32."""
    if "amx_bf16" in flags:
        return "the CPU has AMX (amx_bf16 in /proc/cpuinfo)"
    if "avx512_bf16" in flags and vendor == "AuthenticAMD":
        return ("an AMD CPU with AVX-512 BF16 (avx512_bf16 in /proc/cpuinfo): bfloat16 "
                "trained ResNet-50 1.7x faster than float32 on one")
    return None


def choose_precision(cpuinfo, gpus):
    """What ``--precision auto`` resolves to on a machine, and why.

    Args:
        cpuinfo: str, the text of /proc/cpuinfo, or None where it cannot be
            read.
        gpus: the GPUs TensorFlow sees: a list of ``(name, compute
            capability)``, the capability a ``(major, minor)`` tuple or None
            where unknown.
    Returns:
        ``(policy, reason)``: "mixed_bfloat16" with GPUs that all have
        bfloat16 tensor cores (capability >= 8.0, or unknown), or on a CPU
        where bfloat16 measured faster (``cpu_bfloat16_reason``: AMX, or
        AMD's AVX-512 BF16); "float32" otherwise. The reason is one line
        for the user.
    Source: the measurements in benchmarks/RESULTS.md ("--precision auto").
    """
    if gpus:
        names = ", ".join(str(name) for name, _ in gpus)
        old = [f"{name} (compute capability {cc[0]}.{cc[1]})" for name, cc in gpus
               if cc is not None and tuple(cc) < BF16_MIN_COMPUTE_CAPABILITY]
        if old:
            return "float32", (f"GPU without bfloat16 tensor cores: {', '.join(old)} "
                               "(they start at compute capability 8.0)")
        return "mixed_bfloat16", f"{len(gpus)} GPU(s) with bfloat16 tensor cores: {names}"
    flags = parse_cpu_flags(cpuinfo)
    if flags is None:
        return "float32", "no GPU, and the CPU's flags are unknown (no /proc/cpuinfo)"
    fast = cpu_bfloat16_reason(flags, parse_cpu_vendor(cpuinfo))
    if fast:
        return "mixed_bfloat16", f"no GPU; {fast}"
    if "avx512_bf16" in flags:
        return "float32", ("no GPU, and the CPU has no AMX (no amx_bf16 in /proc/cpuinfo): "
                           "bfloat16 would train slower here (its AVX-512 BF16 measured "
                           "slower than float32 on Intel CPUs without AMX)")
    return "float32", ("no GPU, and the CPU has no AMX (no amx_bf16 in /proc/cpuinfo): "
                       "bfloat16 would train slower here")


def machine_precision():
    """``choose_precision`` for this machine: /proc/cpuinfo and the GPUs
    TensorFlow sees (with their compute capability)."""
    return choose_precision(_read_cpuinfo(), _visible_gpus())


def _visible_gpus():
    import tensorflow as tf

    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(device)
        except (ValueError, RuntimeError):
            details = {}
        gpus.append((details.get("device_name", device.name),
                     details.get("compute_capability")))
    return gpus


def resolve_precision(requested, where="--precision"):
    """The dtype policy to train with for ``requested`` (one of
    ``PRECISIONS``): ``(policy, reason)``, reason None for an explicit
    policy, ``machine_precision``'s for "auto".

    Raises:
        ValueError naming ``where``: neither "auto" nor one of ``POLICIES``.
    """
    if requested == AUTO:
        return machine_precision()
    if requested not in POLICIES:
        raise ValueError(f"{where}: unknown precision {requested!r}; use one of "
                         f"{', '.join(PRECISIONS)}.")
    return requested, None


def slow_bfloat16_reason(policy, cpu_flags=None, has_gpu=None, vendor=None):
    """Why ``policy`` will train slower than float32 here, or None.

    ``mixed_bfloat16`` on a CPU where ``cpu_bfloat16_reason`` gives none:
    oneDNN's bfloat16 convolutions measured 1.4-2.2x slower than its
    float32 ones on an Intel CPU without AMX (benchmarks/RESULTS.md).

    Args:
        policy: a Keras dtype policy name.
        cpu_flags: the CPU's flags (default: read from /proc/cpuinfo, with
            the vendor; None where that cannot be read, and then no reason
            is given).
        has_gpu: whether TensorFlow sees a GPU (default: ask TensorFlow).
        vendor: the CPU's vendor_id with ``cpu_flags`` (default: None).
    """
    if policy != "mixed_bfloat16":
        return None
    if has_gpu is None:
        import tensorflow as tf

        has_gpu = bool(tf.config.list_physical_devices("GPU"))
    if has_gpu:
        return None
    flags = cpu_flags
    if flags is None:
        cpuinfo = _read_cpuinfo()
        flags, vendor = parse_cpu_flags(cpuinfo), parse_cpu_vendor(cpuinfo)
        if flags is None:
            return None
    if cpu_bfloat16_reason(flags, vendor):
        return None
    return ("mixed_bfloat16 on a CPU without AMX (no amx_bf16 in "
            "/proc/cpuinfo): bfloat16 convolutions run slower than float32 "
            "ones here, so training is slower; use --precision float32.")


def _read_cpuinfo():
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return None

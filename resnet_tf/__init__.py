"""resnet-tf: the networks of "Deep Residual Learning for Image Recognition"
(He, Zhang, Ren, Sun, 2015) as Keras 3 functional models.

Importing the package registers every Keras object resnet-tf serializes
(``ResNet``, its layers ``BatchNorm`` and ``ZeroPadShortcut``, the loss
``SparseCrossEntropy``, ``FoldedBatchNorm``), so that
``keras.saving.load_model`` reads the ``.keras`` files resnet-tf writes
after a plain ``import resnet_tf``; ``import detection`` and ``import
localization`` do the same for their models.

Imported before TensorFlow, it also turns on TensorFlow's oneDNN kernels on
x86 CPUs where TF would not (AVX2-only ones), unless ``TF_ENABLE_ONEDNN_OPTS``
is set (``_prefer_onednn``; docs/performance.md).
"""

import os
import sys

# The ``resnet-tf`` command: TensorFlow's C++ log lines are hidden unless
# asked for (--verbose, or TF_CPP_MIN_LOG_LEVEL set by the user). This must
# run before anything imports TensorFlow, and the command's module
# (``apps.cli``, named here, never imported) imports this package first.
_CLI_NAME = "resnet-tf"
_CLI_MODULE = "apps.cli"
# TF_CPP_MIN_LOG_LEVEL: 0 all, 1 no INFO, 2 no INFO or WARNING, 3 no ERROR
# either. 3, because TF 2.21's oneDNN logs harmless ERROR lines too ("oneDNN
# supports DT_INT64 only on platforms with AVX-512. Falling back ...", for
# the localizer and bfloat16 models), and a real failure reaches resnet-tf
# as an exception, which the command reports.
_QUIET_TF_LOG_LEVEL = "3"
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}

# TensorFlow's oneDNN kernels. TF 2.21 turns them on by itself only on x86
# CPUs with AVX-512 VNNI/BF16 or AMX, and runs Eigen's kernels on AVX2-only
# ones. Measured on a 2-core AVX2 AMD EPYC (Zen 2), float32, with
# benchmarks/onednn_kernels.py: training 2.03x faster for ResNet-20 and 1.53x
# for ResNet-50, ResNet-50 inference 0.93x (benchmarks/RESULTS.md); the test
# suite's learning paths were set on oneDNN. So resnet-tf asks for it on every x86 CPU,
# unless the user set TF_ENABLE_ONEDNN_OPTS (0 keeps Eigen) or TensorFlow
# was imported before resnet_tf (then TF has already chosen).
_ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
_X86 = ("x86_64", "amd64", "i386", "i686")


def _prefer_onednn(environ=None, modules=None, machine=None):
    """Set ``TF_ENABLE_ONEDNN_OPTS=1`` in ``environ`` (default
    ``os.environ``) when TensorFlow is not in ``modules`` yet (default
    ``sys.modules``), the variable is unset, and ``machine`` (default
    ``platform.machine()``) is x86. Returns True when it set it."""
    import platform

    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    machine = platform.machine() if machine is None else machine
    if "tensorflow" in modules or _ONEDNN_VARIABLE in environ \
            or machine.lower() not in _X86:
        return False
    environ[_ONEDNN_VARIABLE] = "1"
    return True


def _cli_arguments(orig_argv=None):
    """The arguments of the ``resnet-tf`` command this process runs (the
    console script or ``python -m apps.cli``), or None when the process
    is something else (a notebook, pytest, a script importing resnet_tf).

    Args:
        orig_argv: the interpreter's command line (default ``sys.orig_argv``).
    """
    argv = list(getattr(sys, "orig_argv", sys.argv) if orig_argv is None else orig_argv)
    args = argv[1:]
    while args:
        arg = args.pop(0)
        if arg in ("-W", "-X"):  # interpreter options that take a value
            args[:1] = []
        elif arg.startswith("-m"):
            module = arg[2:] or (args.pop(0) if args else "")
            return args if module == _CLI_MODULE else None
        elif arg.startswith("-c") or arg == "-":
            return None
        elif not arg.startswith("-"):
            name = os.path.basename(arg)
            return args if name.split(".")[0] in (_CLI_NAME, f"{_CLI_NAME}-script") else None
    return None


def _tf_log_level(args, environ=None):
    """The C++ log level (``TF_CPP_MIN_LOG_LEVEL``) for a ``resnet-tf`` run
    with ``args``, and whether resnet-tf must set it: 0 (everything) with
    ``--verbose``; else the user's own setting of the variable; else
    ``_QUIET_TF_LOG_LEVEL`` (errors only)."""
    environ = os.environ if environ is None else environ
    if "--verbose" in args[:args.index("--") if "--" in args else len(args)]:
        return 0, environ.get("TF_CPP_MIN_LOG_LEVEL") != "0"
    user = environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip()
    if user:
        return (int(user) if user.isdigit() else 0), False
    return int(_QUIET_TF_LOG_LEVEL), True


def _filter_cpp_log(text, level):
    """``text`` (what TensorFlow's C++ side wrote to stderr while it was
    imported) without the log records below ``level`` (0 INFO, 1 WARNING,
    2 ERROR, 3 FATAL), their indented continuation lines, and absl's
    "WARNING: All log messages before absl::InitializeLog() ..." line (for
    ``level`` > 0). A record looks like ``I0000 00:00:1796017015.557271
    10207 port.cc:153] text``; every other line is kept."""
    import re

    # absl's format (TF >= 2.16), then the older "2023-08-29 12:35:30.89: I file:110] ".
    record = re.compile(r"^(?:([IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ "
                        r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ([IWEF]) )[^\]\s]+:\d+\] ")
    kept, hiding = [], False
    for line in text.splitlines(keepends=True):
        m = record.match(line)
        if m:
            hiding = _SEVERITY[m.group(1) or m.group(2)] < level
        elif line.startswith("WARNING: All log messages before absl::InitializeLog()"):
            hiding = level > 0
        elif not line[:1].isspace():
            hiding = False
        if not hiding:
            kept.append(line)
    return "".join(kept)


def _import_tensorflow_quietly(level):
    """Import TensorFlow with fd 2 sent to a temporary file, then write back
    what ``_filter_cpp_log`` keeps. Its import-time banners (oneDNN's in
    port.cc, absl's) ignore TF_CPP_MIN_LOG_LEVEL, and they come from C++,
    so redirecting ``sys.stderr`` would not catch them."""
    import importlib.util
    import tempfile

    if importlib.util.find_spec("tensorflow") is None:
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to filter
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            sys.stderr.write(_filter_cpp_log(text, level))
            sys.stderr.flush()


def _quiet_tensorflow_for_the_cli():
    args = _cli_arguments()
    if args is None or "tensorflow" in sys.modules:
        return
    level, ours = _tf_log_level(args)
    if ours:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = str(level)
    if level > 0:
        _import_tensorflow_quietly(level)


_prefer_onednn()
_quiet_tensorflow_for_the_cli()

from resnet_tf.backbone import ResNet, build  # noqa: E402
from resnet_tf.zoo import architecture_names, count_macs, count_params  # noqa: E402

# Registered Keras objects (keras.saving.register_keras_serializable), so a
# saved model or its compile config loads after `import resnet_tf` alone.
from resnet_tf import fold as _fold, layers as _layers, losses as _losses  # noqa: E402,F401

__version__ = "0.1.0"

__all__ = [
    "ResNet",
    "build",
    "architecture_names",
    "count_macs",
    "count_params",
    "__version__",
]

"""TensorFlow Serving's loader, outside the server: build and run
``load_and_run.cc``.

The ``tensorflow_model_server`` binary is not installable from PyPI or
Debian, but the TensorFlow pip wheel ships the C++ loader it uses
(``tensorflow/cc/saved_model/loader.h``, ``libtensorflow_cc.so.2``). The
small program here loads an export with ``tensorflow::LoadSavedModel`` and
the ``serve`` tag, as the server does, and runs a signature on image files;
tests compare its outputs with Python's and the serving benchmark times it.

    binary = build_loader("/tmp/build")            # g++, ~15 s
    outputs = run_loader(binary, "BASE/1", ["a.jpg", "b.jpg"])
    outputs["top_k_labels"]                        # numpy arrays by output name
"""

import os
import shutil
import subprocess

import numpy as np

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "load_and_run.cc")

_DTYPES = {"float": np.float32, "int32": np.int32, "int64": np.int64}


def compiler():
    """The C++ compiler to use (``$CXX`` or g++), or None if there is none."""
    return shutil.which(os.environ.get("CXX", "g++"))


def build_command(output, source=SOURCE):
    """The g++ command line that builds ``source`` against the TensorFlow wheel."""
    import tensorflow as tf

    sp = os.path.dirname(os.path.abspath(tf.__file__))
    return [compiler() or "g++", "-std=c++17", "-O2", "-D_GLIBCXX_USE_CXX11_ABI=1",
            "-DEIGEN_MAX_ALIGN_BYTES=64", "-Wno-deprecated-declarations",
            f"-I{sp}/include", source, "-o", output, f"-L{sp}",
            # Without --no-as-needed the linker drops libtensorflow_cc's session
            # factory registration: "No session factory registered".
            "-Wl,--no-as-needed", "-l:libtensorflow_cc.so.2",
            "-l:libtensorflow_framework.so.2", f"-Wl,-rpath,{sp}"]


def build_loader(directory):
    """Compile ``load_and_run`` into ``directory`` (unless an up-to-date build
    is there); return the binary's path.

    Raises RuntimeError with the compiler's output if the build fails, and
    if no compiler is found.
    """
    if compiler() is None:
        raise RuntimeError("no C++ compiler (g++ or $CXX) found; install g++ to "
                           "build the TF Serving loader check.")
    os.makedirs(directory, exist_ok=True)
    output = os.path.join(directory, "load_and_run")
    if os.path.exists(output) and os.path.getmtime(output) >= os.path.getmtime(SOURCE):
        return output  # built before (e.g. by another test module)
    # Built under a private name and renamed into place: a process that
    # finds ``output`` finds a whole binary, even while another builds.
    partial = f"{output}.{os.getpid()}.partial"
    proc = subprocess.run(build_command(partial), capture_output=True, text=True)
    if proc.returncode != 0:
        if os.path.exists(partial):
            os.remove(partial)
        raise RuntimeError(f"building {SOURCE} failed:\n{proc.stderr[-4000:]}")
    os.replace(partial, output)
    return output


class LoaderError(RuntimeError):
    """``load_and_run`` exited with an error (its message is the ``str``)."""


def run_loader(binary, export_dir, files, signature="serving_default", batch=None,
               repeat=None, timeout=600):
    """Run ``signature`` of ``export_dir`` on image ``files`` with the C++ loader.

    Returns ``{output name: numpy array}`` (strings as ``bytes`` objects);
    with ``repeat``, also ``"latency_ms"``: float64 [repeat], the time of
    each ``Session::Run``. Raises ``LoaderError`` with the program's error
    (e.g. TF's ``INVALID_ARGUMENT: ...``) when loading or running fails.
    """
    cmd = [binary, export_dir, signature, *map(str, files)]
    if batch:
        cmd += ["--batch", str(batch)]
    if repeat:
        cmd += ["--repeat", str(repeat)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
        raise LoaderError(errors[-1][len("error: "):] if errors else proc.stderr[-2000:])
    return parse_loader_output(proc.stdout)


def parse_loader_output(text):
    """``load_and_run``'s stdout -> ``{name: numpy array}``."""
    outputs = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if parts[0] == "latency_ms":
            outputs["latency_ms"] = np.array(parts[1].split(), np.float64)
            continue
        if len(parts) != 4:
            continue
        name, dtype, dims, values = parts
        shape = [int(d) for d in dims.split(",")] if dims else []
        items = values.split()
        if dtype == "string":
            array = np.array([bytes.fromhex(v[1:]) for v in items], dtype=object)
        elif dtype in _DTYPES:
            array = np.array(items, dtype=np.float64).astype(_DTYPES[dtype])
        else:
            raise ValueError(f"load_and_run printed an output {name} of unsupported "
                             f"dtype {dtype}.")
        outputs[name] = array.reshape(shape)
    return outputs

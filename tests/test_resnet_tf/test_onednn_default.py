"""``import resnet_tf`` before TensorFlow turns TF's oneDNN kernels on on x86
CPUs where TF 2.21 would not (AVX2-only ones), and leaves every explicit
choice alone (resnet_tf._prefer_onednn)."""

import os
import platform
import subprocess
import sys

import pytest

import resnet_tf

ONEDNN = "TF_ENABLE_ONEDNN_OPTS"
# The package's own list of x86 machine names, not a copy of it.
X86 = platform.machine().lower() in resnet_tf._X86


def test_the_rule():
    env = {}
    assert resnet_tf._prefer_onednn(env, {}, "x86_64") and env == {ONEDNN: "1"}
    # The user's own setting, either way, is kept.
    for value in ("0", "1"):
        env = {ONEDNN: value}
        assert not resnet_tf._prefer_onednn(env, {}, "x86_64") and env == {ONEDNN: value}
    # TensorFlow already imported: it has chosen; setting the variable now
    # would only mislead a child process's reader.
    env = {}
    assert not resnet_tf._prefer_onednn(env, {"tensorflow": object()}, "x86_64")
    assert env == {}
    # Not x86 (aarch64's oneDNN is a different backend, not measured here).
    env = {}
    assert not resnet_tf._prefer_onednn(env, {}, "aarch64") and env == {}
    assert resnet_tf._prefer_onednn(env, {}, "AMD64")


def _onednn_in_a_fresh_process(code, **env):
    base = {k: v for k, v in os.environ.items() if k != ONEDNN}
    r = subprocess.run([sys.executable, "-c", code + (
        "\nfrom tensorflow.python.util import _pywrap_util_port as p"
        "\nprint('ONEDNN', p.IsMklEnabled())")],
        capture_output=True, text=True, timeout=240, env=dict(base, **env))
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.split("ONEDNN ")[-1].strip()


@pytest.mark.skipif(not X86, reason="the rule applies to x86 CPUs")
def test_a_fresh_process_runs_onednn_after_import_resnet_tf():
    """On every x86 machine kind, AVX2-only included (where TF alone says
    False); the user's TF_ENABLE_ONEDNN_OPTS=0 still turns it off."""
    assert _onednn_in_a_fresh_process("import resnet_tf") == "True"
    assert _onednn_in_a_fresh_process("import resnet_tf", **{ONEDNN: "0"}) == "False"


def test_the_suite_runs_what_users_run():
    """conftest imports resnet_tf before keras, so the tests' own process
    runs the kernels a user's does."""
    if X86:
        assert os.environ.get(ONEDNN) in ("1", "0")
        from tensorflow.python.util import _pywrap_util_port as p

        assert p.IsMklEnabled() == (os.environ[ONEDNN] == "1")

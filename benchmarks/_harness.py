"""Shared plumbing for the benchmarks: one fresh process per measurement.

Each (peer, setting) is measured in its own Python process so that one
peer's graph caches, thread pools and allocator state never help or hurt
another's; peers are run alternately, repetition by repetition, and the
median of the repetitions is reported.
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import time


def shared_data(*parts):
    """A path under the shared data: ``$RESNET_TF_DATA`` if set, else
    ``../shared/data`` beside the repository."""
    root = os.environ.get("RESNET_TF_DATA") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")
    return os.path.join(root, *parts)


def machine_summary():
    cpu = platform.processor() or "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def run_child(script, args, timeout=1800, env=None):
    """Run ``script --child args...`` and return the JSON it prints last.
    ``env``: variables set for the child on top of this process's."""
    cmd = [sys.executable, script, "--child", *args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    # Every TensorFlow peer (tf_keras too) gets the kernels that `import
    # resnet_tf` asks for on x86 (oneDNN; resnet_tf._prefer_onednn), so a
    # ratio measures the code, not the setting. The user's own value is kept.
    if platform.machine().lower() in ("x86_64", "amd64"):
        env.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(
            f"benchmark child {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stderr[-4000:]}"
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"benchmark child {' '.join(args)} printed no result")
    return json.loads(lines[-1])


def alternate(script, peers, settings, repeats, make_args):
    """Measure every (setting, peer) ``repeats`` times, alternating peers.

    Returns {(setting, peer): [result, ...]}.
    """
    results = {}
    for rep in range(repeats):
        for setting in settings:
            for peer in peers:
                t0 = time.time()
                r = run_child(script, make_args(peer, setting))
                results.setdefault((setting, peer), []).append(r)
                print(f"  rep {rep + 1}/{repeats} {setting:>15} {peer:<20} "
                      f"{r['value']:8.2f} {r['unit']}  ({time.time() - t0:.0f} s)",
                      flush=True)
    return results


def median(results, key):
    return statistics.median(r["value"] for r in results[key])

"""ResNet training throughput: resnet-tf against tf_keras, PyTorch and
keras.applications, and the numerics check of resnet-tf's fast paths.

Trains each model for a few steps on synthetic data (batch 32, 224x224,
SGD with momentum 0.9, sparse categorical cross-entropy) in float32 and in
bfloat16 mixed precision, each (peer, policy) in its own process, peers
alternating repetition by repetition, and prints the median images/s and
the ratio ours / the fastest peer.

    .venv/bin/python benchmarks/train_throughput.py --repeats 3
    .venv/bin/python benchmarks/train_throughput.py --peers ours,tf_keras --policies float32
    .venv/bin/python benchmarks/train_throughput.py --arch resnet20 --size 32 --batch 128
    .venv/bin/python benchmarks/train_throughput.py --numerics --steps 50

Peers (the same network and batch everywhere):
- ``ours``: ``resnet_tf.build("resnet50")``, the default model users get
  (paper settings: no conv bias, weight decay 1e-4, fused BN on TF), under
  the Keras dtype policy as ``resnet-tf train --precision`` sets it;
- ``tf_keras``: ``tf_keras.applications.ResNet50`` (Keras 2, package
  tf-keras, in requirements-nodeps.txt), policy via
  ``tf_keras.mixed_precision``;
- ``torch``: a plain PyTorch ResNet (benchmarks/_torch_resnet.py),
  channels_last, bfloat16 via ``torch.autocast("cpu")``;
- ``keras_applications``: ``keras.applications.ResNet50(weights=None)``.

``--numerics`` trains ours from one seed on one fixed batch stream with the
fast paths (``resnet_tf.precision.fast_paths(True)``), with plain Keras
layers (``fast_paths(False)``) and, as the control for rounding alone, with
plain Keras layers on one intra-op thread, each in its own process, and
prints the relative loss differences against the plain run.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402

PEERS = ("ours", "tf_keras", "torch", "keras_applications")
POLICIES = ("float32", "mixed_bfloat16")
KERAS_APPS = {"resnet50": "ResNet50", "resnet101": "ResNet101",
              "resnet152": "ResNet152"}


def load_average():
    """The 1/5/15-minute load averages, as ``uptime`` shows them."""
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def print_table(results, peers, settings, unit, higher_is_better=True):
    """A markdown table of medians, with each of ours (``ours``,
    ``ours_serving``) / the best other peer."""
    ours = [peer for peer in peers if peer.startswith("ours")]
    others = [peer for peer in peers if peer not in ours]
    ratios = ours if others else []
    print()
    print(f"| setting | {' | '.join(peers)}"
          + "".join(f" | {o} / best other" for o in ratios) + " |")
    print(f"|---|{'---|' * (len(peers) + len(ratios))}")
    for setting in settings:
        meds = {peer: _harness.median(results, (setting, peer)) for peer in peers}
        row = f"| {setting} | " + " | ".join(f"{meds[p]:.2f} {unit}" for p in peers)
        for o in ratios:
            pick = max if higher_is_better else min
            best = pick(others, key=meds.get)
            r = meds[o] / meds[best]
            row += f" | {r if higher_is_better else 1 / r:.2f}x ({best})"
        print(row + " |")


def _batch(args, classes):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, args.size, args.size, 3)).astype("float32")
    y = rng.integers(0, classes, size=(args.batch,)).astype("int32")
    return x, y


def _classes(arch):
    # Not through resnet_tf.zoo: importing TensorFlow into the PyTorch child
    # makes the two runtimes' thread pools fight (PyTorch ran 7x slower).
    return 1000 if arch in KERAS_APPS or arch in ("resnet18", "resnet34") else 10


def _time_steps(step, args):
    for _ in range(args.warmup):
        loss = step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    return args.batch * args.steps / (time.perf_counter() - t0), loss


def _keras3_model(args):
    import keras

    keras.config.set_dtype_policy(args.policy)
    keras.utils.set_random_seed(0)
    shape = (args.size, args.size, 3)
    if args.peer.startswith("ours"):
        import resnet_tf

        return resnet_tf.build(args.arch, input_shape=shape)
    return getattr(keras.applications, KERAS_APPS[args.arch])(
        weights=None, input_shape=shape)


def _tf_keras_model(args):
    import tf_keras

    tf_keras.mixed_precision.set_global_policy(args.policy)
    tf_keras.utils.set_random_seed(0)
    if args.arch in KERAS_APPS:
        model = getattr(tf_keras.applications, KERAS_APPS[args.arch])(
            weights=None, input_shape=(args.size, args.size, 3))
    else:
        model = _tf_keras_cifar(int(args.arch.removeprefix("resnet")), args.size)
    return model, tf_keras.optimizers.SGD(0.1, momentum=0.9)


def _tf_keras_cifar(depth, size, classes=10):
    """The paper's CIFAR ResNet-(6n+2) in tf_keras layers (keras.applications
    has none): 16/32/64 filters, option A shortcuts, as ours builds it."""
    import tensorflow as tf
    import tf_keras
    from tf_keras import layers

    def conv_bn(x, width, stride):
        x = layers.Conv2D(width, 3, stride, padding="same", use_bias=False,
                          kernel_initializer="he_normal")(x)
        return layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)

    def option_a(pad, stride):
        return layers.Lambda(lambda t: tf.pad(
            t[:, ::stride, ::stride, :], [[0, 0], [0, 0], [0, 0], [0, pad]]))

    inputs = tf_keras.Input((size, size, 3))
    x = layers.ReLU()(conv_bn(inputs, 16, 1))
    cin = 16
    for i, width in enumerate((16, 32, 64)):
        for b in range((depth - 2) // 6):
            stride = 2 if (b == 0 and i > 0) else 1
            y = conv_bn(layers.ReLU()(conv_bn(x, width, stride)), width, 1)
            short = option_a(width - cin, stride)(x) if width != cin else x
            x = layers.ReLU()(layers.Add()([y, short]))
            cin = width
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(classes, activation="softmax", dtype="float32")(x)
    return tf_keras.Model(inputs, outputs)


def child(args):
    import numpy as np

    classes = _classes(args.arch)
    x, y = _batch(args, classes)
    if args.peer == "torch":
        value, loss = _torch_child(args, x, y, classes)
    else:
        if args.peer == "tf_keras":
            model, optimizer = _tf_keras_model(args)
        else:
            import keras

            model = _keras3_model(args)
            optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
        value, loss = _time_steps(lambda: model.train_on_batch(x, y), args)
        loss = float(np.ravel(loss)[0])
    print(json.dumps({"value": value, "unit": "img/s", "loss": float(loss)}))


def _torch_child(args, x, y, classes):
    import torch

    from _torch_resnet import build

    torch.manual_seed(0)
    depth = int(args.arch.removeprefix("resnet"))
    model = build(depth, classes).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(
        memory_format=torch.channels_last)
    yt = torch.from_numpy(y).long()
    bf16 = args.policy == "mixed_bfloat16"

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(xt), yt)
        loss.backward()
        optimizer.step()
        return loss.item()

    return _time_steps(step, args)


def numerics_child(args):
    """Train ours ``args.steps`` steps on a seeded batch stream; print losses."""
    import numpy as np
    import keras

    import resnet_tf
    from resnet_tf import precision

    if args.peer == "plain_1thread":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
    keras.config.set_dtype_policy(args.policy)
    keras.utils.set_random_seed(0)
    classes = _classes(args.arch)
    with precision.fast_paths(args.peer == "fast"):
        model = resnet_tf.build(args.arch, input_shape=(args.size, args.size, 3))
        # A small lr (--lr): at the paper's 0.1 a random-label run from a
        # random init is chaotic, so rounding differences grow to O(1) and
        # the comparison says nothing.
        model.compile(optimizer=keras.optimizers.SGD(args.lr, momentum=0.9),
                      loss="sparse_categorical_crossentropy")
        rng = np.random.default_rng(1)
        losses = []
        for _ in range(args.steps):
            x = rng.normal(size=(args.batch, args.size, args.size, 3))
            y = rng.integers(0, classes, size=(args.batch,))
            out = model.train_on_batch(x.astype("float32"), y.astype("int32"))
            losses.append(float(np.ravel(out)[0]))
    print(json.dumps({"value": losses[-1], "unit": "loss", "losses": losses}))


def numerics(args):
    print(f"machine: {_harness.machine_summary()}")
    print(f"numerics: {args.arch}, batch {args.batch}, {args.size}x{args.size}, "
          f"{args.steps} SGD steps (lr {args.lr:g}, momentum 0.9) from seed 0, "
          "fast paths against plain Keras layers, each in its own process")
    for policy in args.policies.split(","):
        runs = {}
        for peer in ("fast", "plain", "plain_1thread"):
            runs[peer] = _harness.run_child(__file__, [
                "--numerics", "--peer", peer, "--policy", policy, "--arch",
                args.arch, "--batch", str(args.batch), "--size", str(args.size),
                "--steps", str(args.steps), "--lr", str(args.lr)])["losses"]
        # The control: the plain model on 1 thread instead of 2 (only the
        # summation order changes) shows how far rounding alone drifts.
        for other in ("fast", "plain_1thread"):
            rel = [abs(a - b) / max(abs(b), 1e-6)
                   for a, b in zip(runs[other], runs["plain"])]
            worst = max(range(len(rel)), key=rel.__getitem__)
            print(f"| {policy} | {other} vs plain | first loss "
                  f"{runs[other][0]:.4f} / {runs['plain'][0]:.4f} | last loss "
                  f"{runs[other][-1]:.4f} / {runs['plain'][-1]:.4f} | max rel. "
                  f"diff {rel[worst]:.2e} (step {worst + 1}) | rel. diff at "
                  f"steps 1/10/25/50: "
                  + "/".join(f"{rel[i - 1]:.1e}" for i in (1, 10, 25, 50)
                             if i <= len(rel)) + " |", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--numerics", action="store_true",
                   help="compare ours' losses with and without the fast paths")
    p.add_argument("--peer", default="ours")
    p.add_argument("--policy", default="float32")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lr", type=float, default=0.01, help="--numerics' SGD lr")
    args = p.parse_args(argv)
    if args.child:
        return numerics_child(args) if args.numerics else child(args)
    if args.numerics:
        return numerics(args)

    peers = args.peers.split(",")
    if args.arch not in KERAS_APPS:  # keras.applications has no CIFAR nets
        peers = [peer for peer in peers if peer != "keras_applications"]
    policies = args.policies.split(",")
    print(f"machine: {_harness.machine_summary()}")
    print(f"{args.arch} training, batch {args.batch}, {args.size}x{args.size}, "
          f"{args.steps} timed steps after {args.warmup} warm-up, "
          f"{args.repeats} repetition(s), median reported; "
          f"load average before: {load_average()}")

    def make_args(peer, policy):
        return ["--peer", peer, "--policy", policy, "--arch", args.arch,
                "--batch", str(args.batch), "--size", str(args.size),
                "--steps", str(args.steps), "--warmup", str(args.warmup)]

    results = _harness.alternate(__file__, peers, policies, args.repeats,
                                 make_args)
    print(f"load average after: {load_average()}")
    print_table(results, peers, policies, "img/s")


if __name__ == "__main__":
    main()

"""Per-class RPN localizer: per-image time of fully convolutional testing.

ResNet-50, C = 1000, 9 anchors per cell at conv5_x (stride 32), random
weights (speed does not depend on them). One 375 x 500 image (the typical
ILSVRC shape) is tested whole, at shorter side 224 and at the multi-scale
set {224, 256, 384, 480, 640}, in float32 and mixed_bfloat16, each in its
own process, alternating with a peer doing the same views:
``keras.applications.ResNet50(weights=None)`` (its conv trunk with global
average pooling and a 1000-way softmax, since its own top needs a fixed
size) classifying the whole image at the same sizes, scores averaged.

    .venv/bin/python benchmarks/localizer_speed.py
    .venv/bin/python benchmarks/localizer_speed.py --iters 3 --policies float32

Also printed: the memory the dense C x 4 regression output would take at
each scale (measured from the tensor the dense 1x1 convolution returns);
the localizer's test path never materialises it (it gathers the top-k
classes' kernel columns), which the "dense" setting times for comparison.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _harness  # noqa: E402

PEERS = ("localizer", "keras_applications")
POLICIES = ("float32", "mixed_bfloat16")
SETTINGS = ("224", "multiscale")
MULTISCALE = (224, 256, 384, 480, 640)
IMAGE_HW = (375, 500)


def _build_localizer(classes=1000):
    import resnet_tf
    from localization.model import Localizer

    clf = resnet_tf.build("resnet50", classes=classes)
    loc = Localizer(clf.get_config())
    loc.ensure_built(64)
    return loc


def child(args):
    import numpy as np
    import keras
    import tensorflow as tf

    keras.config.set_dtype_policy(args.policy)
    keras.utils.set_random_seed(0)
    scales = (224,) if args.setting in ("224", "dense224") else MULTISCALE
    image = tf.constant(np.random.default_rng(0).integers(0, 255, IMAGE_HW + (3,),
                                                          dtype=np.uint8))
    if args.peer == "localizer":
        from localization.evaluate import Tester
        from resnet_tf.data.preprocessing import Preprocessing

        loc = _build_localizer()
        prep = Preprocessing.for_style("imagenet", multiscale=MULTISCALE)
        tester = Tester(loc, prep, np.zeros((224, 224, 3), np.float32), scales=scales)
        if args.setting == "dense224":
            dense = tf.function(lambda x: loc.head(loc.features(x)), reduce_retracing=True)
            cls_fn = tf.function(loc.classify, reduce_retracing=True)

            def run():
                from resnet_tf.data.augment import resize_shorter_side

                x = resize_shorter_side(image, 224)[None]
                probs = cls_fn(x)
                cls, reg = dense(x)
                top = tf.math.top_k(probs[0], 5).indices
                flat = tf.gather(tf.reshape(cls, [-1, 1000]), top, axis=1)
                return tf.argmax(flat, axis=0), reg
        else:
            def run():
                return tester(image)
    elif args.peer == "keras_applications":
        from resnet_tf.data.augment import resize_shorter_side

        # include_top needs a static size; the same head on any size instead.
        base = keras.applications.ResNet50(weights=None, include_top=False, pooling="avg",
                                           input_shape=(None, None, 3))
        model = keras.Model(base.input, keras.layers.Dense(
            1000, activation="softmax", dtype="float32")(base.output))
        fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

        def run():
            probs = [fn(resize_shorter_side(image, s)[None]) for s in scales]
            return np.mean([np.asarray(p) for p in probs], axis=0)
    else:
        raise SystemExit(f"unknown peer {args.peer}")
    for _ in range(args.warmup):
        run()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        run()
    dt = (time.perf_counter() - t0) / args.iters
    print(json.dumps({"value": dt * 1000, "unit": "ms/img"}))


def dense_reg_memory(policy):
    """Bytes of the dense reg output [1, H, W, A, C, 4] at each scale."""
    import numpy as np
    import keras
    import tensorflow as tf

    keras.config.set_dtype_policy(policy)
    loc = _build_localizer()
    rows = []
    for s in MULTISCALE:
        h = s
        w = round(IMAGE_HW[1] * s / IMAGE_HW[0])
        _, reg = loc.head(loc.features(tf.zeros([1, h, w, 3])))
        rows.append({"scale": s, "input": f"{h}x{w}", "shape": list(reg.shape),
                     "dtype": str(reg.dtype.name),
                     "mib": int(np.prod(reg.shape)) * reg.dtype.size / 2**20})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--peer", default="localizer")
    p.add_argument("--policy", default="float32")
    p.add_argument("--setting", default="224")
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--dense", action="store_true",
                   help="also time the dense head (all C x 4 outputs) at 224")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args(argv)
    if args.child:
        if args.memory:
            print(json.dumps({"value": 0, "unit": "", "rows": dense_reg_memory(args.policy)}))
            return
        return child(args)

    peers, policies = args.peers.split(","), args.policies.split(",")
    settings = args.settings.split(",")
    print(f"machine: {_harness.machine_summary()}")
    print(f"ResNet-50, C = 1000, one {IMAGE_HW[0]}x{IMAGE_HW[1]} image, {args.iters} timed "
          f"iterations after {args.warmup} warm-up, {args.repeats} repetition(s), median")

    def make_args(peer, key):
        policy, setting = key.split("|")
        return ["--peer", peer, "--policy", policy, "--setting", setting,
                "--iters", str(args.iters), "--warmup", str(args.warmup)]

    keys = [f"{pol}|{s}" for pol in policies for s in settings]
    results = _harness.alternate(__file__, peers, keys, args.repeats, make_args)
    if args.dense:
        for pol in policies:
            key = f"{pol}|dense224"
            results[(key, "localizer")] = [_harness.run_child(
                __file__, make_args("localizer", key)) for _ in range(args.repeats)]
    print()
    print(f"| policy | views | {' | '.join(peers)} | ratio {peers[0]}/{peers[-1]} |")
    print(f"|---|---|{'---|' * len(peers)}---|")
    for key in keys:
        pol, setting = key.split("|")
        meds = [_harness.median(results, (key, peer)) for peer in peers]
        views = "224" if setting == "224" else "{" + ",".join(map(str, MULTISCALE)) + "}"
        print(f"| {pol} | {views} | " + " | ".join(f"{m:.0f} ms/img" for m in meds)
              + f" | {meds[0] / meds[-1]:.2f}x |")
    if args.dense:
        for pol in policies:
            m = _harness.median(results, (f"{pol}|dense224", "localizer"))
            print(f"| {pol} | 224, dense head (all C x 4 outputs) | {m:.0f} ms/img | | |")
    print()
    print("| policy | scale | input | dense reg output shape | memory |")
    print("|---|---|---|---|---|")
    for pol in policies:
        rows = _harness.run_child(__file__, ["--memory", "--policy", pol])["rows"]
        for r in rows:
            print(f"| {pol} | {r['scale']} | {r['input']} | {r['shape']} {r['dtype']} | "
                  f"{r['mib']:.1f} MiB |")


if __name__ == "__main__":
    main()

"""Faster R-CNN (ResNet C4) speed: inference per image and training steps.

Inference: one image at shorter side 600 (a 600x1000 image, padded to
608x1008 as the pipeline pads to the stride), 300 proposals, timed as a
whole and split into the backbone trunk (conv1..conv4), RPN + proposals
(RPN head, decoding, top-k, NMS) and the per-RoI head (RoIAlign, conv5 on
every RoI, per-class NMS). Each part is its own ``tf.function`` timed on the
previous part's outputs, so the shares add up to about the whole.
Training: ``train_on_batch`` at batch 2 (the RPN and head losses, SGD).
``--train-only`` times training steps alone, of the default model and of the
same model with the fast paths off (``resnet_tf.precision.fast_paths(False)``:
plain Keras layers, the unoptimised model), in each precision.

The peer, in the same run and at the same input: ``keras.applications.
ResNet50`` forward (classification, ``include_top=False``) on the same
608x1008 image, i.e. what one plain ResNet-50 pass costs here. The ratio
says how many such passes one detection costs. detectron2's R50-C4 takes
0.102 s/image on a V100 (its model zoo): context, not a CPU target.

    .venv/bin/python benchmarks/detector_speed.py
    .venv/bin/python benchmarks/detector_speed.py --depths 18 --policies float32 --iters 3
    .venv/bin/python benchmarks/detector_speed.py --train-only --depths 50 --repeats 3
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402

H, W, PAD_H, PAD_W = 600, 1000, 608, 1008


def _time(fn, iters, warmup=1):
    for _ in range(warmup):
        out = fn()
    t0 = time.perf_counter()
    for _ in range(iters):
        out = fn()
    return (time.perf_counter() - t0) / iters, out


def child(args):
    if args.peer == "plain_train":
        from resnet_tf import precision

        with precision.fast_paths(False):
            return _child(argparse.Namespace(**{**vars(args), "peer": "ours_train"}))
    return _child(args)


def _child(args):
    import numpy as np
    import keras
    import tensorflow as tf

    keras.config.set_dtype_policy(args.policy)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    image = np.zeros((1, PAD_H, PAD_W, 3), np.float32)
    image[:, :H, :W] = rng.normal(0, 50, (1, H, W, 3))
    image = tf.constant(image)
    if args.peer == "keras_applications":
        model = keras.applications.ResNet50(weights=None, include_top=False,
                                            input_shape=(PAD_H, PAD_W, 3))
        fwd = tf.function(lambda x: model(x, training=False))
        sec, _ = _time(lambda: fwd(image).numpy(), args.iters)
        print(json.dumps({"value": sec, "unit": "s/image"}))
        return

    from detection.model import FasterRCNN
    from detection.proposals import generate_proposals

    model = FasterRCNN(20, depth=args.depth, proposals=dict(post_nms_test=300))
    model.ensure_built()
    sizes = tf.constant([[H, W]], tf.float32)
    if args.peer == "ours_train":
        model.compile(keras.optimizers.SGD(0.001, momentum=0.9))
        x = {"images": tf.concat([image, image[:, :, ::-1]], 0),
             "image_sizes": tf.concat([sizes, sizes], 0)}
        boxes = np.full((2, 8, 4), -1, np.float32)
        boxes[:, :5] = [[50, 60, 250, 300], [100, 400, 300, 700], [300, 100, 550, 350],
                        [10, 700, 200, 990], [350, 500, 590, 800]]
        classes = np.full((2, 8), -1, np.int32)
        classes[:, :5] = [0, 3, 7, 11, 19]
        y = {"boxes": tf.constant(boxes), "classes": tf.constant(classes)}
        sec, loss = _time(lambda: model.train_on_batch(x, y), args.iters)
        print(json.dumps({"value": sec, "unit": "s/step (batch 2)",
                          "loss": float(np.ravel(loss)[0])}))
        return

    x = {"images": image, "image_sizes": sizes}
    whole = tf.function(lambda x: model(x, training=False))
    total, det = _time(lambda: {k: v.numpy() for k, v in whole(x).items()}, args.iters)
    trunk = tf.function(lambda im: model.trunk(im, training=False))
    t_trunk, c4 = _time(lambda: trunk(image), args.iters)

    @tf.function
    def rpn(c4):
        out = model.rpn_head(c4, training=False)
        shape = tf.shape(c4)
        anchors = model.anchor_generator(shape[1], shape[2])
        rois, _, _ = generate_proposals(out["objectness"], out["deltas"], anchors, sizes,
                                        model.proposal_config, training=False)
        return out, anchors, rois

    t_rpn, (rpn_out, anchors, rois) = _time(lambda: rpn(c4), args.iters)
    # _detect repeats the proposal step; subtract it to leave the per-RoI head.
    head = tf.function(lambda c4: model._detect(c4, rpn_out, anchors, sizes))
    t_head_and_rpn, _ = _time(lambda: head(c4), args.iters)
    t_head = max(t_head_and_rpn - t_rpn, 0.0)
    print(json.dumps({"value": total, "unit": "s/image", "trunk": t_trunk,
                      "rpn_proposals": t_rpn, "roi_head": t_head,
                      "rois": int(rois.shape[1]),
                      "detections": int(det["num_detections"][0])}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--peer", default="ours")
    p.add_argument("--policy", default="float32")
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--depths", default="50,18")
    p.add_argument("--policies", default="float32,mixed_bfloat16")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--train-only", action="store_true",
                   help="time training steps only, fast paths on and off")
    args = p.parse_args(argv)
    if args.child:
        return child(args)

    depths = [int(d) for d in args.depths.split(",")]
    policies = args.policies.split(",")
    print(f"machine: {_harness.machine_summary()}")
    if args.train_only:
        return train_only(args, depths, policies)
    print(f"Faster R-CNN C4, one {H}x{W} image (padded {PAD_H}x{PAD_W}), 300 proposals; "
          f"{args.iters} timed iterations after 1 warm-up, {args.repeats} repetition(s), "
          "median reported")
    peers = [f"ours{d}" for d in depths] + [f"train{d}" for d in depths] + ["keras_apps"]

    def make_args(peer, policy):
        kind = ("keras_applications" if peer == "keras_apps" else
                "ours_train" if peer.startswith("train") else "ours")
        depth = peer[5:] if peer.startswith("train") else peer[4:] if kind == "ours" else "50"
        return ["--peer", kind, "--policy", policy, "--depth", depth,
                "--iters", str(args.iters)]

    results = _harness.alternate(__file__, peers, policies, args.repeats, make_args)
    print()
    print("| model | policy | s/image | trunk | RPN + proposals | per-RoI head | "
          "ratio to keras.applications ResNet-50 forward | train s/step (batch 2) |")
    print("|---|---|---|---|---|---|---|---|")
    for policy in policies:
        ref = _harness.median(results, (policy, "keras_apps"))
        for d in depths:
            rs = results[(policy, f"ours{d}")]
            med = _harness.median(results, (policy, f"ours{d}"))
            r = min(rs, key=lambda r: abs(r["value"] - med))
            parts = [r["trunk"], r["rpn_proposals"], r["roi_head"]]
            s = sum(parts)
            train = _harness.median(results, (policy, f"train{d}"))
            print(f"| ResNet-{d}-C4 | {policy} | {med:.3f} | "
                  + " | ".join(f"{v:.3f} s ({100 * v / s:.0f}%)" for v in parts)
                  + f" | {med / ref:.2f}x | {train:.2f} |")
        print(f"| keras.applications ResNet50 (include_top=False) | {policy} | "
              f"{ref:.3f} | | | | 1.00x | |")


def train_only(args, depths, policies):
    print(f"Faster R-CNN C4 training, batch 2 of {H}x{W} images (padded {PAD_H}x{PAD_W}); "
          f"{args.iters} timed steps after 1 warm-up, {args.repeats} repetition(s), "
          "median reported")
    peers = [f"{kind}{d}" for d in depths for kind in ("train", "plain")]

    def make_args(peer, policy):
        kind = "ours_train" if peer.startswith("train") else "plain_train"
        return ["--peer", kind, "--policy", policy, "--depth", peer[5:],
                "--iters", str(args.iters)]

    results = _harness.alternate(__file__, peers, policies, args.repeats, make_args)
    print()
    print("| model | policy | default model s/step | fast paths off s/step | "
          "speed-up |")
    print("|---|---|---|---|---|")
    for policy in policies:
        for d in depths:
            ours = _harness.median(results, (policy, f"train{d}"))
            plain = _harness.median(results, (policy, f"plain{d}"))
            print(f"| ResNet-{d}-C4 | {policy} | {ours:.2f} | {plain:.2f} | "
                  f"{plain / ours:.2f}x |")


if __name__ == "__main__":
    main()

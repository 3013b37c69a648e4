"""Build a torchvision or timm ResNet with random weights and realistic BN
statistics, save it in that framework's real file format, and write its
logits on given pixels under the framework's own preprocessing.

Run as a separate process (``python tests/torch_source.py ...``): the CUDA
build of torch that torchvision needs here crashes when its triton
extension loads into a process that has already imported TensorFlow.

    python tests/torch_source.py ARCH PIXELS.npy OUT_FILE LOGITS.npy [--config-json]

ARCH: "torchvision:resnet18", "timm:resnet50", ... . PIXELS: float32
[N, H, W, 3] RGB in [0, 255]. OUT_FILE: ``.pth`` (torch.save of the state
dict) or ``.safetensors`` (safetensors.torch.save_file). With
``--mean/--std`` (comma lists, unit range) the model is calibrated and run
on that normalisation, and (timm) a hub-style ``config.json`` with that
``pretrained_cfg`` is written beside OUT_FILE.
"""

import argparse
import json
import os

import numpy as np
import torch

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build(arch, seed):
    torch.manual_seed(seed)
    framework, name = arch.split(":")
    if framework == "torchvision":
        import torchvision

        return getattr(torchvision.models, name)(weights=None)
    import timm

    return timm.create_model(name, pretrained=False)


def normalise(pixels, mean, std):
    """The published torchvision normalisation, in torch, NCHW."""
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2) / 255.0
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("arch")
    p.add_argument("pixels")
    p.add_argument("out")
    p.add_argument("logits")
    p.add_argument("--mean", default=",".join(map(str, MEAN)))
    p.add_argument("--std", default=",".join(map(str, STD)))
    p.add_argument("--config-json", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    mean = tuple(float(v) for v in args.mean.split(","))
    std = tuple(float(v) for v in args.std.split(","))
    model = build(args.arch, args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.empty_like(m.weight).uniform_(0.5, 1.5, generator=gen))
                m.bias.copy_(torch.empty_like(m.bias).normal_(0, 0.2, generator=gen))
                m.momentum = None  # cumulative average: the exact statistics
                m.reset_running_stats()
        x = normalise(np.load(args.pixels).astype(np.float32), mean, std)
        model.train()
        model(x)  # BN statistics of the real images
        model.eval()
        logits = model(x).numpy()
    np.save(args.logits, logits)
    state = {k: v for k, v in model.state_dict().items()}
    if args.out.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, args.out)
    else:
        torch.save(state, args.out)
    if args.config_json:
        name = args.arch.split(":")[1]
        with open(os.path.join(os.path.dirname(args.out), "config.json"), "w") as f:
            json.dump({"architecture": name, "num_classes": int(logits.shape[1]),
                       "pretrained_cfg": {"mean": list(mean), "std": list(std),
                                          "input_size": [3, 224, 224]}}, f)


if __name__ == "__main__":
    main()

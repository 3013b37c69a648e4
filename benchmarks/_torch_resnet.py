"""A plain PyTorch ResNet (the paper's, as torchvision builds it) for the
benchmark peers: torchvision has no CPU wheel here, and only the speed of
the same network matters, so it is written out in full.

Bottleneck blocks with the stride on the 3x3 (torchvision's v1.5), no conv
biases, BN momentum 0.1 (= Keras 0.9), eps 1e-5, He-normal conv init.
"""

import torch
from torch import nn

STAGES = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
          50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3)),
          152: ("bottleneck", (3, 8, 36, 3))}


def _conv_bn(cin, cout, k, stride):
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout, momentum=0.1, eps=1e-5))


class Basic(nn.Module):
    expansion = 1

    def __init__(self, cin, width, stride):
        super().__init__()
        self.a = _conv_bn(cin, width, 3, stride)
        self.b = _conv_bn(width, width, 3, 1)
        self.short = (_conv_bn(cin, width, 1, stride)
                      if stride != 1 or cin != width else nn.Identity())

    def forward(self, x):
        y = self.b(torch.relu(self.a(x)))
        return torch.relu(y + self.short(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, width, stride):
        super().__init__()
        cout = 4 * width
        self.a = _conv_bn(cin, width, 1, 1)
        self.b = _conv_bn(width, width, 3, stride)
        self.c = _conv_bn(width, cout, 1, 1)
        self.short = (_conv_bn(cin, cout, 1, stride)
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        y = torch.relu(self.a(x))
        y = torch.relu(self.b(y))
        y = self.c(y)
        return torch.relu(y + self.short(x))


class _Net(nn.Module):
    """stem -> stages -> global average pool -> fc, He-initialised convs;
    subclasses set ``self.stem`` and call ``_finish``."""

    def _finish(self, layers, cin, classes):
        self.stages = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class ResNet(_Net):
    """ResNet-18..152 for 224x224 ImageNet inputs, NCHW (use channels_last)."""

    def __init__(self, depth=50, classes=1000):
        super().__init__()
        kind, counts = STAGES[depth]
        block = Bottleneck if kind == "bottleneck" else Basic
        self.stem = nn.Sequential(_conv_bn(3, 64, 7, 2), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for i, n in enumerate(counts):
            width = 64 * 2 ** i
            for b in range(n):
                layers.append(block(cin, width, 2 if (b == 0 and i > 0) else 1))
                cin = width * block.expansion
        self._finish(layers, cin, classes)


class CifarBasic(nn.Module):
    """A CIFAR basic block with the paper's option A shortcut (stride-2
    subsampling and zero channels where the shape changes)."""

    def __init__(self, cin, width, stride):
        super().__init__()
        self.a = _conv_bn(cin, width, 3, stride)
        self.b = _conv_bn(width, width, 3, 1)
        self.stride, self.pad = stride, width - cin

    def forward(self, x):
        y = self.b(torch.relu(self.a(x)))
        short = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.pad:
            short = nn.functional.pad(short, (0, 0, 0, 0, 0, self.pad))
        return torch.relu(y + short)


class CifarResNet(_Net):
    """The paper's CIFAR-10 ResNet-(6n+2) (Sec. 4.2): 16/32/64 filters."""

    def __init__(self, depth=20, classes=10):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"A CIFAR ResNet has depth 6n+2, not {depth}.")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(_conv_bn(3, 16, 3, 1), nn.ReLU())
        layers, cin = [], 16
        for i, width in enumerate((16, 32, 64)):
            for b in range(n):
                layers.append(CifarBasic(cin, width, 2 if (b == 0 and i > 0) else 1))
                cin = width
        self._finish(layers, cin, classes)


def build(depth, classes):
    """ResNet-``depth``: an ImageNet one for Table 1 depths, else CIFAR."""
    return ResNet(depth, classes) if depth in STAGES else CifarResNet(depth, classes)

"""The building blocks every zoo model is made of.

Models are a flat sequence of these units so that three later stages can walk them
without tracing: pruning (which channels are coupled), quantization wrapping (which
activation slot feeds which layer), and lowering to the integer IR (one IR node or
two per unit). A unit type the lowering does not know is refused by name.

Every point where an activation is stored between layers is an `act` slot
(`nn.Identity` in FP32, a `QuantAct` after `compress.quant.wrap`), so a tensor that
feeds two consumers (a block input feeding conv1 and the shortcut) is quantized once.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvUnit(nn.Module):
    """conv (no bias) -> batch norm -> optional ReLU -> act slot."""

    def __init__(self, cin, cout, kernel=3, stride=1, padding=1, relu=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = relu
        self.act = nn.Identity()

    def forward(self, x):
        x = self.bn(self.conv(x))
        if self.relu:
            x = F.relu(x)
        return self.act(x)


class ShortcutA(nn.Module):
    """Option-A shortcut: subsample by `stride`, then place input channels by `src`.

    Output channel j is input channel src[j], or zero where src[j] == -1. The CIFAR
    ResNet option A (zero-pad half the new channels on each side) is one such map;
    after physical pruning the map is whatever survives, so it lives in a buffer.
    """

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        pad = (cout - cin) // 2
        src = torch.full((cout,), -1, dtype=torch.long)
        src[pad:pad + cin] = torch.arange(cin)
        self.register_buffer("src", src)

    def forward(self, x):
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        zero = torch.zeros_like(x[:, :1])
        x = torch.cat([x, zero], dim=1)  # index -1 picks the zero channel
        return x[:, self.src]


class ShortcutB(nn.Module):
    """Option-B shortcut: 1x1 conv with stride, then batch norm."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.conv(x))


class BasicBlock(nn.Module):
    """ResNet basic block: conv-bn-relu-act, conv-bn, + shortcut, relu, act.

    `mid` is conv1's output width (pruned independently); `cout` is the block output,
    coupled through the residual add with the shortcut's output.
    """

    def __init__(self, cin, mid, cout, stride=1, shortcut=None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act1 = nn.Identity()
        self.conv2 = nn.Conv2d(mid, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if shortcut is None:
            assert stride == 1 and cin == cout, "an identity shortcut needs equal widths"
            self.shortcut = None
        elif shortcut == "A":
            self.shortcut = ShortcutA(cin, cout, stride)
        elif shortcut == "B":
            self.shortcut = ShortcutB(cin, cout, stride)
        else:
            raise ValueError(f"shortcut must be None, 'A' or 'B', not {shortcut!r}")
        self.act = nn.Identity()

    def forward(self, x):
        h = self.act1(F.relu(self.bn1(self.conv1(x))))
        h = self.bn2(self.conv2(h))
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.act(F.relu(h + skip))


class MaxPool(nn.Module):
    def __init__(self, kernel=2):
        super().__init__()
        self.kernel = kernel

    def forward(self, x):
        return F.max_pool2d(x, self.kernel)


class GlobalAvgPool(nn.Module):
    """Global average pooling and flatten, then an act slot (the head's input)."""

    def __init__(self):
        super().__init__()
        self.act = nn.Identity()

    def forward(self, x):
        return self.act(x.mean(dim=(2, 3)))


class Flatten(nn.Module):
    def forward(self, x):
        return x.flatten(1)


class LinearUnit(nn.Module):
    """linear (with bias) -> optional ReLU -> act slot."""

    def __init__(self, cin, cout, relu=False):
        super().__init__()
        self.linear = nn.Linear(cin, cout)
        self.relu = relu
        self.act = nn.Identity()

    def forward(self, x):
        x = self.linear(x)
        if self.relu:
            x = F.relu(x)
        return self.act(x)

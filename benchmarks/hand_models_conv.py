"""Hand-written convolutional models for ``coverage.py``'s ``hand`` source: one small model per
layer kind or pattern (sequence kinds are in ``hand_models_seq``).

``CONV_MODELS`` maps an entry name of ``coverage_models.json`` to its constructor; the entry
gives the input (``make_input``). Widths are small so that both tools prune each in seconds.

Example:
    >>> import torch
    >>> model = CONV_MODELS["groupnorm_cnn"]().eval()
    >>> tuple(model(torch.zeros(1, 3, 16, 16)).shape)
    (1, 10)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrizations


def conv_block(cin: int, cout: int, norm: Callable[[int], nn.Module], stride: int = 1) -> list:
    """Conv 3x3 -> norm -> ReLU, as a list of modules."""
    return [nn.Conv2d(cin, cout, 3, stride, 1), norm(cout), nn.ReLU()]


def classifier(features: int, classes: int = 10) -> list:
    """Global average pool -> flatten -> Linear."""
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(features, classes)]


def groupnorm_cnn() -> nn.Module:
    """Convolutions feeding ``nn.GroupNorm(8, 64)``."""
    norm = lambda c: nn.GroupNorm(8, c)
    return nn.Sequential(*conv_block(3, 64, norm), *conv_block(64, 64, norm, 2),
                         *classifier(64))


class StyleNet(nn.Module):
    """A style-transfer-like net: InstanceNorm everywhere, a residual block, upsampling back."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        norm = lambda c: nn.InstanceNorm2d(c, affine=True)
        self.down = nn.Sequential(nn.Conv2d(3, width, 9, 1, 4), norm(width), nn.ReLU(),
                                  *conv_block(width, 2 * width, norm, 2))
        self.res = nn.Sequential(*conv_block(2 * width, 2 * width, norm),
                                 nn.Conv2d(2 * width, 2 * width, 3, 1, 1), norm(2 * width))
        self.up = nn.Sequential(nn.ConvTranspose2d(2 * width, width, 4, 2, 1), norm(width),
                                nn.ReLU(), nn.Conv2d(width, 3, 9, 1, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.down(x)
        return self.up(y + self.res(y))


def weightnorm_cnn() -> nn.Module:
    """Convolutions and a Linear under ``parametrizations.weight_norm``."""
    wn = parametrizations.weight_norm
    return nn.Sequential(wn(nn.Conv2d(3, 32, 3, 1, 1)), nn.ReLU(),
                         wn(nn.Conv2d(32, 32, 3, 2, 1)), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), wn(nn.Linear(32, 10)))


def spectralnorm_discriminator() -> nn.Module:
    """A DCGAN/PatchGAN discriminator under ``parametrizations.spectral_norm``."""
    sn = parametrizations.spectral_norm
    return nn.Sequential(sn(nn.Conv2d(3, 32, 4, 2, 1)), nn.LeakyReLU(0.2),
                         sn(nn.Conv2d(32, 64, 4, 2, 1)), nn.LeakyReLU(0.2),
                         sn(nn.Conv2d(64, 1, 4, 1, 0)))


class Siamese(nn.Module):
    """One encoder applied to two images (shared layers), then |a - b| -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(*conv_block(3, 32, nn.BatchNorm2d),
                                     *conv_block(32, 32, nn.BatchNorm2d, 2),
                                     nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(32, 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.head((self.encoder(a) - self.encoder(b)).abs())


class LoopNet(nn.Module):
    """One residual block applied three times in a Python loop (weights reused per step)."""

    def __init__(self, width: int = 32, steps: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_block(3, width, nn.BatchNorm2d))
        self.block = nn.Sequential(*conv_block(width, 16, nn.BatchNorm2d),
                                   nn.Conv2d(16, width, 3, 1, 1))
        self.head, self.steps = nn.Sequential(*classifier(width)), steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for _ in range(self.steps):
            x = torch.relu(x + self.block(x))
        return self.head(x)


class SuperResolution(nn.Module):
    """ESPCN-like: convolutions, then ``F.pixel_shuffle`` to twice the resolution."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 32, 5, 1, 2), nn.Tanh(),
                                  nn.Conv2d(32, 16, 3, 1, 1), nn.Tanh(),
                                  nn.Conv2d(16, 3 * scale**2, 3, 1, 1))
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.pixel_shuffle(self.body(x), self.scale)


class CSPBlock(nn.Module):
    """YOLOv8's C2f pattern: ``x.split((self.c, self.c), 1)``, a bottleneck, concatenation."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.c = c
        self.stem = nn.Sequential(*conv_block(3, 2 * c, nn.BatchNorm2d))
        self.bottleneck = nn.Sequential(*conv_block(c, c, nn.BatchNorm2d),
                                        *conv_block(c, c, nn.BatchNorm2d))
        self.fuse = nn.Sequential(nn.Conv2d(3 * c, 2 * c, 1), nn.BatchNorm2d(2 * c), nn.ReLU())
        self.head = nn.Sequential(*classifier(2 * c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.stem(x).split((self.c, self.c), 1)
        return self.head(self.fuse(torch.cat([a, b, self.bottleneck(b)], 1)))


CONV_MODELS: dict[str, Callable[[], nn.Module]] = {
    "groupnorm_cnn": groupnorm_cnn,
    "instancenorm_style": StyleNet,
    "weightnorm_cnn": weightnorm_cnn,
    "spectralnorm_discriminator": spectralnorm_discriminator,
    "siamese_cnn": Siamese,
    "loop_block": LoopNet,
    "pixel_shuffle_sr": SuperResolution,
    "csp_split": CSPBlock,
}

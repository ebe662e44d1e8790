"""Small seeded data sets for the examples (no downloads): Gaussian blobs and the forum's integer regression."""

from __future__ import annotations

import torch


def blobs(n: int = 256, n_classes: int = 3, n_features: int = 2, separation: float = 3.0, seed: int = 0):
    """`n` points around `n_classes` centres `separation` apart (unit std), with integer labels."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, n_features, generator=g) * separation
    labels = torch.arange(n) % n_classes
    x = centres[labels] + torch.randn(n, n_features, generator=g)
    return x, labels


def integers(n: int = 100, seed: int = 0):
    """x integers in [0, 100), y = x + 1: the forum's ReLU regression data, unnormalized on purpose."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 100, (n, 1), generator=g).to(torch.float32)
    return x, x + 1


def spirals(n: int = 300, n_classes: int = 3, noise: float = 0.2, seed: int = 0):
    """The classic 2-D spiral set (CS231n): `n_classes` arms that no linear model separates."""
    g = torch.Generator().manual_seed(seed)
    per = n // n_classes
    r = torch.linspace(0.0, 1.0, per).repeat(n_classes)
    labels = torch.arange(n_classes).repeat_interleave(per)
    t = labels * 4.0 + r * 4.0 + torch.randn(per * n_classes, generator=g) * noise
    x = torch.stack([r * torch.sin(t), r * torch.cos(t)], dim=1)
    return x, labels

"""Toy 2-D classification datasets for the training examples.

Every point lies in the unit square [0, 1) x [0, 1) and is labelled 0 or 1.
Points come from Python's ``random``, so ``random.seed`` makes them repeatable.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Graph:
    """N points ``X`` with their 0/1 labels ``y``."""

    N: int
    X: list[tuple[float, float]]
    y: list[int]


def make_pts(N: int) -> list[tuple[float, float]]:
    """N points drawn uniformly from the unit square."""
    return [(random.random(), random.random()) for _ in range(N)]


def _labelled(N: int, rule: Callable[[float, float], bool]) -> Graph:
    """Random points, labelled 1 where ``rule`` holds."""
    X = make_pts(N)
    return Graph(N, X, [1 if rule(x1, x2) else 0 for x1, x2 in X])


def simple(N: int) -> Graph:
    """1 on the left half: a vertical split."""
    return _labelled(N, lambda x1, x2: x1 < 0.5)


def diag(N: int) -> Graph:
    """1 below the anti-diagonal x1 + x2 = 0.5."""
    return _labelled(N, lambda x1, x2: x1 + x2 < 0.5)


def split(N: int) -> Graph:
    """1 in the outer strips: needs two boundaries."""
    return _labelled(N, lambda x1, x2: x1 < 0.2 or x1 > 0.8)


def xor(N: int) -> Graph:
    """1 where exactly one coordinate is below 0.5: not linearly separable."""
    return _labelled(N, lambda x1, x2: (x1 < 0.5) != (x2 < 0.5))


def circle(N: int) -> Graph:
    """1 outside a circle around the centre."""
    return _labelled(N, lambda x1, x2: (x1 - 0.5) ** 2 + (x2 - 0.5) ** 2 > 0.1)


def spiral(N: int) -> Graph:
    """Two interleaved spirals around the centre, labels 0 and 1.

    Class 1 is class 0 turned by half a revolution. The radius stays below
    0.45, so every point lies in the unit square. For odd N class 0 gets the
    extra point.
    """
    counts = (N - N // 2, N // 2)
    X: list[tuple[float, float]] = []
    y: list[int] = []
    for label, count in enumerate(counts):
        for i in range(count):
            t = 1.0 + 9.0 * i / count  # angle in radians, ~1.6 turns
            r = 0.045 * t
            angle = t + math.pi * label
            X.append((0.5 + r * math.cos(angle), 0.5 + r * math.sin(angle)))
            y.append(label)
    return Graph(N, X, y)


datasets: dict[str, Callable[[int], Graph]] = {
    "Simple": simple,
    "Diag": diag,
    "Split": split,
    "Xor": xor,
    "Circle": circle,
    "Spiral": spiral,
}

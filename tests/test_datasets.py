"""Toy datasets (contract section 9)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from minitorch.datasets import Graph, circle, datasets, diag, make_pts, simple, spiral, split, xor

RULES: dict[str, tuple[Callable[[int], Graph], Callable[[float, float], bool]]] = {
    "Simple": (simple, lambda x1, x2: x1 < 0.5),
    "Diag": (diag, lambda x1, x2: x1 + x2 < 0.5),
    "Split": (split, lambda x1, x2: x1 < 0.2 or x1 > 0.8),
    "Xor": (xor, lambda x1, x2: (x1 < 0.5) != (x2 < 0.5)),
    "Circle": (circle, lambda x1, x2: (x1 - 0.5) ** 2 + (x2 - 0.5) ** 2 > 0.1),
}


def assert_in_unit_square(g: Graph, n: int) -> None:
    assert g.N == n and len(g.X) == n and len(g.y) == n
    for x1, x2 in g.X:
        assert 0.0 <= x1 < 1.0 and 0.0 <= x2 < 1.0
    assert set(g.y) <= {0, 1}
    assert all(isinstance(label, int) for label in g.y)


def test_registry() -> None:
    assert list(datasets) == ["Simple", "Diag", "Split", "Xor", "Circle", "Spiral"]
    for name, (fn, _) in RULES.items():
        assert datasets[name] is fn
    assert datasets["Spiral"] is spiral


def test_make_pts_uses_python_random() -> None:
    random.seed(3)
    first = make_pts(20)
    random.seed(3)
    assert make_pts(20) == first
    assert len(first) == 20 and len(set(first)) == 20
    assert all(0.0 <= v < 1.0 for pt in first for v in pt)


@pytest.mark.parametrize("name", list(RULES))
@pytest.mark.parametrize("n", [1, 50, 200])
def test_labels_follow_rule(name: str, n: int) -> None:
    fn, rule = RULES[name]
    random.seed(n)
    g = fn(n)
    assert_in_unit_square(g, n)
    assert g.y == [1 if rule(x1, x2) else 0 for x1, x2 in g.X]


@pytest.mark.parametrize("name", list(RULES))
def test_both_classes_appear(name: str) -> None:
    random.seed(0)
    assert set(datasets[name](500).y) == {0, 1}


@pytest.mark.parametrize("n", [2, 50, 51, 300])
def test_spiral(n: int) -> None:
    g = spiral(n)
    assert_in_unit_square(g, n)
    zeros, ones = g.y.count(0), g.y.count(1)
    assert zeros + ones == n and abs(zeros - ones) <= 1
    assert len(set(g.X)) == n


def test_spiral_arms_interleave() -> None:
    g = spiral(200)
    # Class 1 is class 0 turned by half a revolution around the centre.
    arm0 = [p for p, label in zip(g.X, g.y) if label == 0]
    arm1 = [p for p, label in zip(g.X, g.y) if label == 1]
    for (a1, a2), (b1, b2) in zip(arm0, arm1):
        assert a1 + b1 == pytest.approx(1.0) and a2 + b2 == pytest.approx(1.0)

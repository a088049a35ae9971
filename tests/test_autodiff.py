"""Graph ordering and backpropagation (contract section 4, autodiff)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minitorch.autodiff import backpropagate, central_difference, topological_sort
from minitorch.scalar import Scalar

_ids = count()


@dataclass(eq=False)
class Node:
    """A bare Variable: a sum node (every local derivative is 1) or a leaf."""

    inputs: tuple[Node, ...] = ()
    constant: bool = False
    derivative: float | None = None
    unique_id: int = field(default_factory=lambda: next(_ids))

    def is_leaf(self) -> bool:
        return not self.inputs

    def is_constant(self) -> bool:
        return self.constant

    @property
    def parents(self) -> Iterable[Node]:
        return self.inputs

    def accumulate_derivative(self, x: float) -> None:
        self.derivative = (self.derivative or 0.0) + x

    def chain_rule(self, d_output: float) -> Iterable[tuple[Node, Any]]:
        return [(p, d_output) for p in self.inputs]


def diamond() -> tuple[Node, Node, Node, Node]:
    """leaf -> (left, right) -> top"""
    leaf = Node()
    left, right = Node((leaf,)), Node((leaf,))
    return leaf, left, right, Node((left, right))


def assert_output_first(order: list[Any]) -> None:
    """Every node comes before all of its parents."""
    position = {node.unique_id: i for i, node in enumerate(order)}
    for node in order:
        if not node.is_leaf():
            for p in node.parents:
                if not p.is_constant():
                    assert position[node.unique_id] < position[p.unique_id]


def test_topological_sort_diamond() -> None:
    leaf, left, right, top = diamond()
    order = topological_sort(top)
    assert order[0] is top and order[-1] is leaf
    assert {n.unique_id for n in order} == {n.unique_id for n in (leaf, left, right, top)}
    assert len(order) == 4
    assert_output_first(order)


def test_topological_sort_skips_constants() -> None:
    leaf, const = Node(), Node(constant=True)
    top = Node((leaf, const))
    assert [n.unique_id for n in topological_sort(top)] == [top.unique_id, leaf.unique_id]
    assert topological_sort(const) == []


def test_topological_sort_deep_chain() -> None:
    # Deeper than the default recursion limit.
    node = leaf = Node()
    for _ in range(5000):
        node = Node((node,))
    order = topological_sort(node)
    assert len(order) == 5001 and order[0] is node and order[-1] is leaf


def test_topological_sort_scalar_graph() -> None:
    x, y = Scalar(1.0), Scalar(2.0)
    h = x * y
    out = (h + x) * h
    order = topological_sort(out)
    assert order[0] is out
    assert_output_first(order)
    assert {id(n) for n in order if n.is_leaf()} == {id(x), id(y)}
    assert len(order) == 5  # x, y, h, h + x, out


def test_backpropagate_diamond_sums_paths() -> None:
    leaf, _, _, top = diamond()
    backpropagate(top, 2.0)
    assert leaf.derivative == 4.0


def test_backpropagate_stacked_diamonds() -> None:
    # Each diamond doubles the number of paths to the leaf.
    node = leaf = Node()
    for _ in range(10):
        node = Node((Node((node,)), Node((node,))))
    backpropagate(node, 1.0)
    assert leaf.derivative == 2.0**10


def test_backpropagate_reaches_every_leaf_once() -> None:
    a, b, c = Node(), Node(), Node()
    top = Node((Node((a, b)), Node((b, c)), c))
    backpropagate(top, 1.0)
    assert (a.derivative, b.derivative, c.derivative) == (1.0, 2.0, 2.0)


def test_backpropagate_scalar_diamond() -> None:
    x = Scalar(3.0)
    top = x.exp() * x.log()
    backpropagate(top, 1.0)
    expected = math.exp(3.0) * math.log(3.0) + math.exp(3.0) / 3.0
    assert x.derivative == pytest.approx(expected, rel=1e-5)


@given(st.floats(min_value=-10, max_value=10))
def test_central_difference_on_floats(x: float) -> None:
    assert central_difference(lambda v: v * v, x) == pytest.approx(2 * x, abs=1e-4)
    assert central_difference(math.sin, x) == pytest.approx(math.cos(x), abs=1e-4)


def test_central_difference_picks_argument() -> None:
    def f(a: float, b: float, c: float) -> float:
        return a * b + c * c

    assert central_difference(f, 2.0, 3.0, 4.0, arg=0) == pytest.approx(3.0, abs=1e-4)
    assert central_difference(f, 2.0, 3.0, 4.0, arg=1) == pytest.approx(2.0, abs=1e-4)
    assert central_difference(f, 2.0, 3.0, 4.0, arg=2) == pytest.approx(8.0, abs=1e-4)
    assert central_difference(f, 2.0, 3.0, 4.0, arg=2, epsilon=1e-3) == pytest.approx(8.0)


def test_central_difference_on_scalars_returns_scalar() -> None:
    x = Scalar(2.0)
    d = central_difference(lambda v: v * v * v, x)
    assert isinstance(d, Scalar)
    assert d.data == pytest.approx(12.0, abs=1e-4)


def test_context_accepts_attributes_like_the_course() -> None:
    # Course code often stores extra state on ctx (ctx.dim = ...); Context must allow it.
    from minitorch.autodiff import Context

    ctx = Context()
    ctx.dim = 1
    ctx.save_for_backward(2.0, 3.0)
    assert ctx.dim == 1 and ctx.saved_tensors == (2.0, 3.0)

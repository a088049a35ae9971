"""Module and Parameter (contract section 3)."""

from __future__ import annotations

import pytest

from minitorch.module import Module, Parameter
from minitorch.scalar import Scalar


class Leaf(Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = Parameter(1.0)
        self.b = self.add_parameter("b", 2.0)
        self.hidden = 3  # plain attribute
        self.sizes = [1, 2]  # plain attribute

    def forward(self, x: float) -> float:
        return self.w.value * x + self.b.value


class Middle(Module):
    def __init__(self) -> None:
        super().__init__()
        self.grand = Leaf()
        self.v = Parameter(4.0)


class Root(Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = Parameter(5.0)
        self.child = Middle()
        self.other = Leaf()


def test_registration() -> None:
    m = Leaf()
    assert set(m._parameters) == {"w", "b"}
    assert m._modules == {}
    assert isinstance(m.w, Parameter) and m.w.value == 1.0
    assert m.hidden == 3 and m.sizes == [1, 2]
    assert "hidden" not in m._parameters and "hidden" not in m._modules
    assert m.training is True


def test_children_are_registered() -> None:
    r = Root()
    assert set(r._modules) == {"child", "other"}
    assert r.child is r._modules["child"]
    assert r.modules() == [r.child, r.other]
    assert r.child.modules() == [r.child.grand]


def test_add_parameter_returns_registered_parameter() -> None:
    m = Module()
    p = m.add_parameter("scale", 7.0)
    assert isinstance(p, Parameter)
    assert p.name == "scale" and p.value == 7.0
    assert m.scale is p
    assert m.parameters() == [p]


def test_named_parameters_use_dotted_paths() -> None:
    named = dict(Root().named_parameters())
    assert set(named) == {
        "w",
        "child.v",
        "child.grand.w",
        "child.grand.b",
        "other.w",
        "other.b",
    }
    assert named["child.grand.b"].value == 2.0
    assert named["child.v"].value == 4.0


def test_parameters_count_and_indexing() -> None:
    r = Root()
    params = r.parameters()
    assert len(params) == 6
    assert all(isinstance(params[i], Parameter) for i in range(len(params)))
    assert [p for _, p in r.named_parameters()] == params


def test_shared_parameter_counted_once() -> None:
    r = Root()
    r.other.w = r.child.grand.w
    assert len(r.parameters()) == 5
    assert sum(1 for p in r.parameters() if p is r.other.w) == 1


def test_shared_child_counted_once() -> None:
    r = Root()
    r.other = r.child.grand
    names = [n for n, _ in r.named_parameters()]
    assert len(r.parameters()) == 4
    assert names == ["w", "child.v", "child.grand.w", "child.grand.b"]


def test_deep_nesting() -> None:
    top = Module()
    node = top
    for _ in range(6):
        node.inner = Module()
        node.inner.p = Parameter(0.0)
        node = node.inner
    names = [n for n, _ in top.named_parameters()]
    assert len(names) == 6
    assert names[-1] == ".".join(["inner"] * 6) + ".p"


def test_reassigning_replaces_registration() -> None:
    m = Leaf()
    m.w = 10
    assert "w" not in m._parameters and m.w == 10
    m.w = Parameter(11.0)
    assert m.w.value == 11.0 and "w" in m._parameters
    m.w = Leaf()
    assert "w" in m._modules and "w" not in m._parameters


def test_assigning_before_init_raises() -> None:
    class Broken(Module):
        def __init__(self) -> None:
            self.w = Parameter(1.0)

    with pytest.raises(AttributeError):
        Broken()


def test_missing_attribute_raises_attribute_error() -> None:
    m = Leaf()
    assert not hasattr(m, "nope")
    with pytest.raises(AttributeError):
        _ = m.nope


def test_train_eval_recurse() -> None:
    r = Root()
    everything = [r, r.child, r.child.grand, r.other]
    r.eval()
    assert [m.training for m in everything] == [False] * 4
    r.child.train()
    assert [m.training for m in everything] == [False, True, True, False]
    r.train()
    assert all(m.training for m in everything)


def test_call_runs_forward() -> None:
    m = Leaf()
    assert m(3.0) == 5.0
    assert m(x=1.0) == 3.0


def test_call_without_forward_raises_type_error() -> None:
    with pytest.raises(TypeError, match="forward"):
        Root()(1.0)


def test_repr_of_nested_modules() -> None:
    text = repr(Root())
    assert text == "\n".join(
        [
            "Root(",
            "  (child): Middle(",
            "    (grand): Leaf()",
            "  )",
            "  (other): Leaf()",
            ")",
        ]
    )
    assert str(Root()) == text
    assert repr(Module()) == "Module()"


class Tracked:
    """Stands in for a Tensor: something with ``requires_grad_``."""

    def __init__(self) -> None:
        self.requires = False
        self.name = "unset"

    def requires_grad_(self, flag: bool) -> None:
        self.requires = flag

    def __repr__(self) -> str:
        return "Tracked()"


def test_parameter_tracks_and_names_values() -> None:
    t = Tracked()
    p = Parameter(t, "weight")
    assert p.value is t and p.name == "weight"
    assert t.requires and t.name == "weight"
    anonymous = Tracked()
    Parameter(anonymous)
    assert anonymous.requires and anonymous.name == "unset"


def test_parameter_update() -> None:
    p = Parameter(Tracked(), "weight")
    t = Tracked()
    p.update(t)
    assert p.value is t and t.requires and t.name == "weight"
    p.update(Scalar(3.0))
    assert p.value.data == 3.0


def test_parameter_repr_delegates() -> None:
    assert repr(Parameter(Tracked())) == "Tracked()"
    assert str(Parameter(2.5)) == "2.5"
    assert repr(Parameter(Scalar(1.0))) == repr(Scalar(1.0))

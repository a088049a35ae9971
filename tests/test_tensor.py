"""The user-facing Tensor: construction, indexing, autodiff protocol, training idioms.

Contract sections 6, 9, 10 and 12. Functions against NumPy live in
``test_tensor_functions.py``. Values (indexing, numbers on either side, expand) are
also checked in float32, in which a number operand keeps the tensor's dtype.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import assume
from hypothesis import strategies as st
from strategies import (
    NEAR_KINK,
    assert_close,
    assert_dtype,
    assert_exact,
    backend_shapes,
    run_property,
    small_floats,
    tensor_arrays,
)

import minitorch
from minitorch import (
    IndexingError,
    MathTestVariable,
    Parameter,
    Tensor,
    TensorBackend,
    TensorData,
    grad_check,
)
from minitorch.tensor_functions import Function, History

one_arg, two_arg, red_arg = MathTestVariable._comp_testing()


def near_kink(name: str, *arrays: np.ndarray) -> bool:
    test = NEAR_KINK.get(name)
    if test is None:
        return False
    return any(test(*values) for values in zip(*(a.reshape(-1) for a in arrays)))


# Construction ---------------------------------------------------------------------


def test_tensor_from_nested_lists_and_tuples(backend: TensorBackend) -> None:
    t = minitorch.tensor([[1, 2, 3], [4, 5, 6]], backend=backend)
    assert t.shape == (2, 3)
    assert t.backend is backend and t.f is backend
    assert t[1, 2] == 6.0
    u = minitorch.tensor(((1.0, 2.0), (3.0, 4.0), (5.0, 6.0)), backend=backend)
    assert u.shape == (3, 2)
    assert_exact(u, [[1, 2], [3, 4], [5, 6]])
    v = minitorch.tensor([[[0.5]], [[1.5]]], backend=backend)
    assert v.shape == (2, 1, 1)
    w = minitorch.tensor([1.0, 2.0, 3.0])
    assert w.backend is minitorch.SimpleBackend
    assert w.shape == (3,)


def test_tensor_ragged_raises() -> None:
    with pytest.raises(ValueError):
        minitorch.tensor([[1.0, 2.0], [3.0]])


def test_tensor_round_trip_is_exact(backend: TensorBackend, dtype: np.dtype) -> None:
    def check(pair: tuple[Tensor, np.ndarray]) -> None:
        t, a = pair
        u = minitorch.tensor(t.to_numpy().tolist(), backend=backend, dtype=dtype)
        assert u.shape == t.shape
        for idx in t._tensor.indices():
            assert u[idx] == t[idx]
        assert_exact(u, a, dtype)

    width = np.finfo(dtype).bits
    values = st.floats(allow_nan=False, allow_infinity=False, width=width)
    run_property(backend, check, tensor_arrays(backend, elements=values, dtype=dtype))


def test_tensor_from_numpy_and_to_numpy(backend: TensorBackend) -> None:
    a = np.arange(12, dtype=np.int64).reshape(3, 4)
    t = minitorch.tensor_from_numpy(a, backend=backend)
    assert t.shape == (3, 4)
    assert t._tensor._storage.dtype == np.float64
    a[0, 0] = 100  # the tensor holds a copy
    assert t[0, 0] == 0.0
    out = t.to_numpy()
    assert out.dtype == np.float64 and out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, np.arange(12.0).reshape(3, 4))
    out[0, 1] = -5.0  # and to_numpy returns a copy
    assert t[0, 1] == 1.0
    transposed = t.permute(1, 0).to_numpy()
    assert transposed.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(transposed, np.arange(12.0).reshape(3, 4).T)


def test_factories(backend: TensorBackend) -> None:
    z = minitorch.zeros((2, 3), backend=backend)
    assert z.shape == (2, 3) and z.backend is backend
    assert_exact(z, np.zeros((2, 3)))
    random.seed(3)
    r = minitorch.rand((4, 5), backend=backend)
    values = r.to_numpy()
    assert r.shape == (4, 5)
    assert np.all(values >= 0.0) and np.all(values < 1.0)
    assert len(set(values.reshape(-1).tolist())) == 20
    random.seed(3)
    np.testing.assert_array_equal(minitorch.rand((4, 5), backend=backend).to_numpy(), values)
    m = Tensor.make([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], (3, 2), backend=backend)
    assert_exact(m, [[1, 2], [3, 4], [5, 6]])
    m2 = Tensor.make(np.arange(6.0), (2, 3), (1, 2), backend=backend)
    assert_exact(m2, np.arange(6.0).reshape(3, 2).T)


def test_tensor_and_rand_track_gradients() -> None:
    # Contract section 6: requires_grad_ ignores its flag, so these are leaves.
    for t in (minitorch.tensor([1.0, 2.0]), minitorch.rand((2,))):
        assert t.requires_grad() and t.is_leaf() and not t.is_constant()
    x = minitorch.tensor([1.0, 2.0, 3.0])
    (x * x).sum().backward()
    assert x.grad is not None
    assert_close(x.grad, [2.0, 4.0, 6.0])


def test_op_history_and_context_are_complete(backend: TensorBackend) -> None:
    # Function.apply makes both without their __init__: every field must still be set,
    # to what the constructors would give (a new field would fail here).
    a = minitorch.tensor([1.0, 2.0], backend=backend)
    b = minitorch.tensor([3.0, 4.0], backend=backend)
    c = a + b
    h = c.history
    assert h == History(minitorch.tensor_functions.Add, minitorch.Context(False), (a, b))
    assert (h.last_fn, h.inputs[0], h.inputs[1]) == (minitorch.tensor_functions.Add, a, b)
    d = a * b
    assert d.history.ctx == minitorch.Context(False, (a, b))
    assert d.history.ctx.needs_input_grad == ()


def test_make_like_builds_what_trusted_data_and_wrap_build(backend: TensorBackend) -> None:
    # Tensor._make_like (every op's result) writes out TensorData._trusted and
    # tensor._wrap: a slot added to either class and not set there would fail here.
    from minitorch.tensor import _wrap

    a = minitorch.tensor([1.0, 2.0], backend=backend)
    storage = a._tensor._storage
    made = a._make_like(storage, (2, 1), 2)
    twin = _wrap(TensorData._trusted(storage, (2, 1), (1, 1), 2), a.backend)
    assert made._tensor._storage is twin._tensor._storage
    for slot in TensorData.__slots__:
        if slot != "_storage":
            assert getattr(made._tensor, slot) == getattr(twin._tensor, slot), slot
    for slot in Tensor.__slots__:
        if slot not in ("_tensor", "unique_id"):
            assert getattr(made, slot) is getattr(twin, slot), slot
    assert twin.unique_id > made.unique_id


def test_properties() -> None:
    td = TensorData(np.arange(24.0), (2, 3, 4))
    t = Tensor(td)
    assert t._tensor is td
    assert t.backend is minitorch.SimpleBackend
    assert t.shape == (2, 3, 4) and isinstance(t.shape, tuple)
    assert t.size == 24 and isinstance(t.size, int)
    assert t.dims == 3 and isinstance(t.dims, int)
    assert t.view(t.size).shape == (24,)
    assert t.grad is None
    assert isinstance(t.unique_id, int)
    assert Tensor(td).unique_id != t.unique_id
    assert Tensor(td, name="w").name == "w"
    assert t.tuple()[0] is td._storage
    # SGD chooses the Scalar update by hasattr(value, "derivative").
    assert not hasattr(t, "derivative")
    assert isinstance(repr(t), str) and "23" in repr(t)


def test_repr_with_nan_and_inf() -> None:
    t = minitorch.tensor([float("nan"), float("inf"), 1.0])
    text = repr(t).lower()
    assert "nan" in text and "inf" in text


# Indexing -------------------------------------------------------------------------


def test_getitem_setitem(backend: TensorBackend, dtype: np.dtype) -> None:
    t = minitorch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], backend=backend, dtype=dtype)
    assert t[0, 1] == 2.0
    assert type(t[0, 1]) is float
    assert t[np.int64(1), np.int32(2)] == 6.0
    assert t[(1, 0)] == 4.0
    t[1, 1] = 50.0
    t[np.int64(0), np.int64(0)] = -1.0
    assert_exact(t, [[-1.0, 2.0, 3.0], [4.0, 50.0, 6.0]], dtype)
    v = minitorch.tensor([7.0, 8.0, 9.0], backend=backend, dtype=dtype)
    assert v[2] == 9.0
    assert v[np.int64(1)] == 8.0
    v[0] = 1.5
    assert v[0] == 1.5
    # A written number is rounded to the tensor's dtype, and read back as that value.
    v[1] = 0.1
    assert v[1] == float(dtype.type(0.1))
    assert_dtype(v, dtype)
    # Indexing a permuted view goes through its strides.
    assert t.permute(1, 0)[2, 0] == 3.0


# Negative ints and fewer ints than dims are valid since issue 10 (PyTorch's indexing);
# see tests/test_tensor_api.py.
@pytest.mark.parametrize("key", [(2, 0), (0, 3), (-3, 0), (0, 0, 0), 5, 1.5, (0, 1.0)])
def test_bad_keys_raise(key: Any) -> None:
    t = minitorch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    with pytest.raises(IndexingError):
        t[key]
    with pytest.raises(IndexingError):
        t[key] = 1.0


@pytest.mark.parametrize("key", [3, -4, (0, 0), np.int64(7)])
def test_bad_keys_raise_1d(key: Any) -> None:
    v = minitorch.tensor([7.0, 8.0, 9.0])
    with pytest.raises(IndexingError):
        v[key]


def test_item(backend: TensorBackend, dtype: np.dtype) -> None:
    assert minitorch.tensor([2.5], backend=backend, dtype=dtype).item() == 2.5
    assert minitorch.tensor([[[4.0]]], backend=backend, dtype=dtype).item() == 4.0
    assert minitorch.tensor([0.1], backend=backend, dtype=dtype).item() == float(dtype.type(0.1))
    t = minitorch.tensor([1.0, 2.0, 3.0], backend=backend, dtype=dtype)
    assert t.sum().item() == 6.0
    assert type(t.sum().item()) is float
    with pytest.raises(ValueError):
        t.item()


# Arithmetic with numbers and mixed backends ------------------------------------------

NUMBER_OPS: dict[str, tuple[Callable[[Any], Any], Callable[[np.ndarray], np.ndarray]]] = {
    "5*t": (lambda t: 5 * t, lambda a: 5 * a),
    "t*5": (lambda t: t * 5, lambda a: a * 5),
    "t+2.5": (lambda t: t + 2.5, lambda a: a + 2.5),
    "2.5+t": (lambda t: 2.5 + t, lambda a: 2.5 + a),
    "t-0.5": (lambda t: t - 0.5, lambda a: a - 0.5),
    "0.5-t": (lambda t: 0.5 - t, lambda a: 0.5 - a),
    "t/4": (lambda t: t / 4, lambda a: a / 4),
    "1.0/(t+200)": (lambda t: 1.0 / (t + 200), lambda a: 1.0 / (a + 200)),
    "-t": (lambda t: -t, lambda a: -a),
    "t*np.float64": (lambda t: t * np.float64(3.0), lambda a: a * 3.0),
    "t<1": (lambda t: t < 1, lambda a: (a < 1).astype(a.dtype)),
    "t>1": (lambda t: t > 1, lambda a: (a > 1).astype(a.dtype)),
    "t==0": (lambda t: t == 0, lambda a: (a == 0).astype(a.dtype)),
}
# The simulator runs few float32 cases: a number on the left, a NumPy float64 number
# (which must not promote a float32 tensor), and a comparison.
CUDA_FLOAT32_NUMBER_OPS = {"1.0/(t+200)", "t*np.float64", "t<1"}


@pytest.mark.parametrize("name", list(NUMBER_OPS))
def test_number_on_either_side(backend: TensorBackend, dtype: np.dtype, name: str) -> None:
    if backend.cuda and dtype == minitorch.float32 and name not in CUDA_FLOAT32_NUMBER_OPS:
        pytest.skip("float32 on the CUDA simulator: representative cases only")
    fn, ref = NUMBER_OPS[name]

    def check(pair: tuple[Tensor, np.ndarray]) -> None:
        t, a = pair
        out = fn(t)
        assert isinstance(out, Tensor)
        assert out.backend is backend
        # NumPy, like PyTorch, keeps an array's float32 with a Python number.
        expected = ref(a)
        assert expected.dtype == dtype
        assert_close(out, expected, dtype)

    run_property(backend, check, tensor_arrays(backend, dtype=dtype))


def test_number_arithmetic_is_differentiable(backend: TensorBackend) -> None:
    x = minitorch.tensor([1.0, 2.0, 4.0], backend=backend)
    (5 * x - 1.0 / x + (2 - x) / 4).sum().backward()
    assert x.grad is not None
    expected = 5 + 1 / np.array([1.0, 2.0, 4.0]) ** 2 - 0.25
    assert_close(x.grad, expected)


def test_mixed_backends_use_the_left_operand() -> None:
    fast = minitorch.TensorBackend(minitorch.FastOps)
    a = minitorch.tensor([1.0, 2.0], backend=minitorch.SimpleBackend)
    b = minitorch.tensor([10.0, 20.0], backend=fast)
    left = a + b
    assert left.backend is minitorch.SimpleBackend
    assert_exact(left, [11.0, 22.0])
    right = b * a
    assert right.backend is fast
    assert_exact(right, [10.0, 40.0])


# The autodiff protocol --------------------------------------------------------------


def test_backward_without_argument_needs_one_element(backend: TensorBackend) -> None:
    x = minitorch.tensor([1.0, 2.0], backend=backend).requires_grad_(True)
    with pytest.raises(ValueError, match="one-element"):
        (x * 2).backward()
    # Any one-element shape seeds 1.0, as in PyTorch.
    y = minitorch.tensor([[3.0]], backend=backend).requires_grad_(True)
    (y * 2).sum(0).backward()
    assert y.grad is not None
    assert_exact(y.grad, [[2.0]])
    (x * 2).sum().backward()
    assert x.grad is not None
    assert_exact(x.grad, [2.0, 2.0])


def test_backward_with_grad_output(backend: TensorBackend) -> None:
    x = minitorch.tensor([[1.0, 2.0], [3.0, 4.0]], backend=backend).requires_grad_(True)
    y = x * x
    y.backward(minitorch.tensor([[1.0, 0.0], [2.0, 0.5]], backend=backend))
    assert x.grad is not None
    assert_close(x.grad, [[2.0, 0.0], [12.0, 4.0]])


def test_gradient_accumulates_when_used_twice(backend: TensorBackend) -> None:
    x = minitorch.tensor([1.0, -2.0, 3.0], backend=backend).requires_grad_(True)
    y = x * x + x  # x appears three times
    z = y + y.sigmoid()  # and y twice
    z.sum().backward()
    xs = np.array([1.0, -2.0, 3.0])
    ys = xs * xs + xs
    s = 1 / (1 + np.exp(-ys))
    assert x.grad is not None
    assert_close(x.grad, (2 * xs + 1) * (1 + s * (1 - s)))


def test_grad_accumulates_across_backward_calls(backend: TensorBackend) -> None:
    x = minitorch.tensor([1.0, 2.0], backend=backend).requires_grad_(True)
    (x * 3).sum().backward()
    (x * 4).sum().backward()
    assert x.grad is not None
    assert_exact(x.grad, [7.0, 7.0])
    x.zero_grad_()
    assert x.grad is None


@pytest.mark.parametrize("op", ["lt", "gt", "eq"])
def test_zero_grads_through_comparisons(backend: TensorBackend, op: str) -> None:
    x = minitorch.tensor([[1.0, 2.0], [3.0, 4.0]], backend=backend).requires_grad_(True)
    y = minitorch.tensor([2.0, 2.0], backend=backend).requires_grad_(True)
    out = {"lt": x < y, "gt": x > y, "eq": x == y}[op]
    (out * 5.0).sum().backward()
    assert x.grad is not None and y.grad is not None
    assert_exact(x.grad, np.zeros((2, 2)))
    assert_exact(y.grad, np.zeros(2))


def test_requires_grad_releafs(backend: TensorBackend) -> None:
    a = minitorch.tensor([1.0, 2.0], backend=backend).requires_grad_(True)
    b = a * 3
    assert not b.is_leaf() and b.requires_grad()
    assert a in b.parents
    returned = b.requires_grad_(True)
    assert returned is b
    assert b.is_leaf() and b.requires_grad() and not b.is_constant()
    assert b.history is not None and b.history.last_fn is None
    # The flag is ignored, as in the course.
    c = minitorch.zeros((2,), backend=backend)
    assert c.is_constant()
    c.requires_grad_(False)
    assert c.requires_grad() and c.is_leaf()
    # Gradients stop at the new leaf.
    (b * b).sum().backward()
    assert b.grad is not None
    assert_exact(b.grad, [6.0, 12.0])
    assert a.grad is None


def test_detach(backend: TensorBackend) -> None:
    a = minitorch.tensor([1.0, 2.0], backend=backend).requires_grad_(True)
    b = a * 2
    d = b.detach()
    assert d.history is None and d.is_constant()
    assert d.backend is backend
    assert_exact(d, [2.0, 4.0])
    assert d._tensor._storage is b._tensor._storage
    (d * a).sum().backward()
    assert a.grad is not None
    assert_exact(a.grad, [2.0, 4.0])


def test_function_apply_records_history_only_when_needed(backend: TensorBackend) -> None:
    c = minitorch.zeros((2,), backend=backend) + minitorch.zeros((2,), backend=backend)
    assert c.history is None and c.is_constant()
    x = minitorch.tensor([1.0, 2.0], backend=backend).requires_grad_(True)
    y = x + minitorch.zeros((2,), backend=backend)
    assert isinstance(y.history, History)
    assert y.history.last_fn is minitorch.tensor_functions.Add
    assert y.history.ctx is not None
    assert len(y.history.inputs) == 2
    pairs = list(y.chain_rule(minitorch.tensor([1.0, 1.0], backend=backend)))
    # Constant inputs get no pair; the tracked one gets a same-shape gradient.
    assert [p[0] for p in pairs] == [x]
    assert pairs[0][1].shape == (2,)


def test_leaf_grad_is_not_shared_with_upstream(backend: TensorBackend) -> None:
    x = minitorch.tensor([1.0, 2.0], backend=backend).requires_grad_(True)
    y = minitorch.tensor([3.0, 4.0], backend=backend).requires_grad_(True)
    (x + y).sum().backward()
    assert x.grad is not None and y.grad is not None
    x.grad[0] = 100.0
    assert y.grad[0] == 1.0


def test_grad_check_detects_wrong_gradient(backend: TensorBackend) -> None:
    class WrongSquare(Function):
        @staticmethod
        def forward(ctx: Any, a: Tensor) -> Tensor:
            ctx.save_for_backward(a)
            return a.f.mul_zip(a, a)

        @staticmethod
        def backward(ctx: Any, grad_output: Tensor) -> Tensor:
            (a,) = ctx.saved_values
            return grad_output.f.mul_zip(grad_output, a)  # missing the factor 2

    x = minitorch.tensor([1.0, 2.0, 3.0], backend=backend)
    with pytest.raises(AssertionError):
        grad_check(WrongSquare.apply, x)
    grad_check(lambda a: a * a, x)


def test_grad_check_accepts_inputs_with_history(backend: TensorBackend) -> None:
    x = minitorch.tensor([1.0, 2.0], backend=backend).requires_grad_(True)
    y = x * 2  # has history; grad_check re-leafs it
    grad_check(lambda a: a.sigmoid(), y)
    assert y.is_leaf()
    assert y.grad is not None and y.grad.shape == (2,)


def test_grad_central_difference(backend: TensorBackend) -> None:
    x = minitorch.tensor([[1.0, 2.0], [3.0, 4.0]], backend=backend)
    d = minitorch.tensor_functions.grad_central_difference(lambda a: a * a * a, x, ind=(1, 0))
    assert abs(d - 27.0) < 1e-2


def test_ensure_tensor_and_expand(backend: TensorBackend, dtype: np.dtype) -> None:
    t = minitorch.tensor([[1.0, 2.0, 3.0]], backend=backend, dtype=dtype)
    n = t._ensure_tensor(3)
    assert isinstance(n, Tensor) and n.shape == (1,) and n.item() == 3.0
    assert_dtype(n, dtype)
    assert t._ensure_tensor(t) is t
    g = minitorch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], backend=backend, dtype=dtype)
    assert_exact(t.expand(g), [[5.0, 7.0, 9.0]], dtype)
    col = minitorch.tensor([[1.0], [2.0]], backend=backend, dtype=dtype)
    assert_exact(col.expand(g), [[6.0], [15.0]], dtype)
    one = minitorch.tensor([1.0], backend=backend, dtype=dtype)
    assert_exact(one.expand(g), [21.0], dtype)
    # A gradient with fewer dims is broadcast up, in the gradient's dtype.
    assert_exact(g.expand(t.view(3)), [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], dtype)


# MathTestVariable: tensors against the float references --------------------------------


@pytest.mark.parametrize("fn", one_arg, ids=[f[0] for f in one_arg])
def test_math_one_arg(backend: TensorBackend, fn: tuple[str, Any, Any]) -> None:
    name, base_fn, tensor_fn = fn

    def check(pair: tuple[Tensor, np.ndarray]) -> None:
        t, a = pair
        out = tensor_fn(t)
        assert out.shape == t.shape
        for idx in t._tensor.indices():
            assert abs(out[idx] - base_fn(t[idx])) < 1e-2, (name, idx)
        assume(not near_kink(name, a))
        grad_check(tensor_fn, t)
        assert t.grad is not None and t.grad.shape == t.shape

    run_property(backend, check, tensor_arrays(backend), heavy=True)


@pytest.mark.parametrize("fn", two_arg, ids=[f[0] for f in two_arg])
def test_math_two_arg(backend: TensorBackend, fn: tuple[str, Any, Any]) -> None:
    name, base_fn, tensor_fn = fn

    def check(shape: tuple[int, ...], data: st.DataObject) -> None:
        ta, na = data.draw(tensor_arrays(backend, shape))
        tb, nb = data.draw(tensor_arrays(backend, shape))
        out = tensor_fn(ta, tb)
        assert out.shape == shape
        for idx in ta._tensor.indices():
            assert abs(out[idx] - base_fn(ta[idx], tb[idx])) < 1e-2, (name, idx)
        assume(not near_kink(name, na, nb))
        grad_check(tensor_fn, ta, tb)
        assert ta.grad is not None and ta.grad.shape == shape
        assert tb.grad is not None and tb.grad.shape == shape

    run_property(backend, check, backend_shapes(backend), st.data(), heavy=True)


@pytest.mark.parametrize("fn", red_arg, ids=[f[0] for f in red_arg])
def test_math_reduce(backend: TensorBackend, fn: tuple[str, Any, Any]) -> None:
    name, base_fn, tensor_fn = fn

    def check(values: list[float], pair: tuple[Tensor, np.ndarray]) -> None:
        out = tensor_fn(minitorch.tensor(values, backend=backend))
        assert out.shape == (1,)
        assert abs(out[0] - base_fn(values)) < 1e-2, name
        t, _ = pair
        grad_check(tensor_fn, t)
        assert t.grad is not None and t.grad.shape == t.shape

    run_property(
        backend,
        check,
        st.lists(small_floats, min_size=1, max_size=8),
        tensor_arrays(backend),
        heavy=True,
    )


# Contract section 9: the idioms training code uses -------------------------------------


def test_training_idioms(backend: TensorBackend) -> None:
    random.seed(1)
    batch, d_in, d_out = 6, 2, 3
    points = tuple((random.random(), random.random()) for _ in range(batch))
    labels = [1.0 if x1 < 0.5 else 0.0 for x1, _ in points]
    x = minitorch.tensor(points, backend=backend)
    y = minitorch.tensor(labels, backend=backend)
    w1 = Parameter(minitorch.rand((d_in, d_out), backend=backend) - 0.5)
    b1 = Parameter(minitorch.rand((d_out,), backend=backend) - 0.5)
    w2 = Parameter(minitorch.rand((d_out, 1), backend=backend) - 0.5)
    b2 = Parameter(minitorch.rand((1,), backend=backend) - 0.5)
    params = [w1, b1, w2, b2]
    for p in params:
        assert p.value.requires_grad() and p.value.is_leaf()

    def forward() -> tuple[Tensor, Tensor]:
        hidden = (x.view(batch, d_in) @ w1.value + b1.value).relu()
        assert hidden.shape == (batch, d_out)
        out = (hidden @ w2.value + b2.value).sigmoid().view(batch)
        prob = out * y + (out - 1.0) * (y - 1.0)
        loss = -prob.log()
        return out, loss

    # The same forward pass in NumPy, for the loss and the gradients' sanity.
    nx, ny = np.array(points), np.array(labels)
    nw1, nb1, nw2, nb2 = (p.value.to_numpy() for p in params)
    nh = np.maximum(nx @ nw1 + nb1, 0.0)
    nout = 1 / (1 + np.exp(-(nh @ nw2 + nb2).reshape(batch)))
    nloss = -np.log(nout * ny + (nout - 1) * (ny - 1) + 1e-6)

    out, loss = forward()
    assert_close(out, nout)
    assert abs(loss.sum().view(1)[0] - nloss.sum()) < 1e-2
    correct = int(((out.detach() > 0.5) == y).sum()[0])
    assert correct == int(((nout > 0.5) == ny).sum())
    (loss / batch).sum().view(1).backward()
    for p in params:
        assert p.value.grad is not None
        assert p.value.grad.shape == p.value.shape
    # d loss / d b2 = mean(out - y) for a sigmoid with log loss (up to log's EPS).
    assert_close(b2.value.grad, [np.mean(nout - ny)])

    before = float(loss.sum().view(1)[0])
    optim = minitorch.SGD(params, 0.5)
    for _ in range(1 if backend.cuda else 5):
        optim.zero_grad()
        _, loss = forward()
        (loss / batch).sum().view(1).backward()
        optim.step()
    _, loss = forward()
    assert float(loss.sum().view(1)[0]) < before

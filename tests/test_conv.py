"""1-D and 2-D convolution against a NumPy reference (contract section 8)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import assert_close, assert_exact, tensor_arrays

import minitorch
from minitorch import IndexingError, Tensor, TensorBackend, fast_conv
from minitorch.fast_conv import tensor_conv1d, tensor_conv2d

ROOT = Path(__file__).resolve().parents[1]

# NumPy references ------------------------------------------------------------


def conv1d_ref(x: np.ndarray, w: np.ndarray, reverse: bool = False) -> np.ndarray:
    """``out[b,o,j] = sum_c sum_k w[o,c,k] x[b,c,j+k]`` (``j-k`` when reversed), zero outside."""
    batch, _, width = x.shape
    out = np.zeros((batch, w.shape[0], width))
    for j in range(width):
        for k in range(w.shape[2]):
            p = j - k if reverse else j + k
            if 0 <= p < width:
                out[:, :, j] += x[:, :, p] @ w[:, :, k].T
    return out


def conv2d_ref(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``out[b,o,y,x] = sum_c sum_{i,j} w[o,c,i,j] in[b,c,y+i,x+j]``, zero past the edges."""
    batch, _, height, width = x.shape
    kh, kw = w.shape[2:]
    padded = np.pad(x, ((0, 0), (0, 0), (0, kh - 1), (0, kw - 1)))
    out = np.zeros((batch, w.shape[0], height, width))
    for y in range(height):
        for xx in range(width):
            window = padded[:, :, y : y + kh, xx : xx + kw]
            out[:, :, y, xx] = np.einsum("bcij,ocij->bo", window, w)
    return out


def linear_grads(
    ref: Callable[[np.ndarray, np.ndarray], np.ndarray],
    x: np.ndarray,
    w: np.ndarray,
    g: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of ``sum(ref(x, w) * g)``: conv is linear in each argument, so
    the gradient at an element is the output for a unit impulse there."""
    grad_x = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[idx] = 1.0
        grad_x[idx] = np.sum(ref(e, w) * g)
    grad_w = np.zeros_like(w)
    for idx in np.ndindex(*w.shape):
        e = np.zeros_like(w)
        e[idx] = 1.0
        grad_w[idx] = np.sum(ref(x, e) * g)
    return grad_x, grad_w


# Shapes --------------------------------------------------------------------------


@st.composite
def conv1d_shapes(draw: st.DrawFn) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    batch = draw(st.integers(1, 2))
    cin, cout = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    width = draw(st.integers(1, 6))
    k = draw(st.integers(1, width))
    return (batch, cin, width), (cout, cin, k)


@st.composite
def conv2d_shapes(
    draw: st.DrawFn,
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    batch = draw(st.integers(1, 2))
    cin, cout = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    height, width = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, height)), draw(st.integers(1, width))
    return (batch, cin, height, width), (cout, cin, kh, kw)


def run(backend: TensorBackend, check: Callable[..., None], *strategies: object) -> None:
    """Run ``check`` as a small hypothesis property (fewer examples on CUDA)."""
    configured = settings(
        max_examples=2 if backend.cuda else 15,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    configured(given(*strategies)(check))()


def pair(backend: TensorBackend, shapes: st.SearchStrategy) -> st.SearchStrategy:
    """(input, input array, weight, weight array), usually non-contiguous."""

    @st.composite
    def draw_pair(draw: st.DrawFn) -> tuple[Tensor, np.ndarray, Tensor, np.ndarray]:
        x_shape, w_shape = draw(shapes)
        x, nx = draw(tensor_arrays(backend, x_shape))
        w, nw = draw(tensor_arrays(backend, w_shape))
        return x, nx, w, nw

    return draw_pair()


# Forward -------------------------------------------------------------------------


def test_conv1d_contract_example(backend: TensorBackend) -> None:
    x = minitorch.tensor([0, 1, 2, 3], backend=backend).view(1, 1, 4)
    w = minitorch.tensor([[[1, 2, 3]]], backend=backend)
    assert_exact(minitorch.conv1d(x, w), [[[8, 14, 8, 3]]])
    assert_exact(minitorch.Conv1dFun.apply(x, w), [[[8, 14, 8, 3]]])


def test_conv2d_small_example(backend: TensorBackend) -> None:
    x = minitorch.tensor([[[[1, 2, 3], [4, 5, 6]]]], backend=backend)
    w = minitorch.tensor([[[[1, 10], [100, 1000]]]], backend=backend)
    # Each output adds the window anchored at its top-left; the rest is zero.
    expected = [[[[5421, 6532, 603], [54, 65, 6]]]]
    assert_exact(minitorch.conv2d(x, w), expected)


def test_conv1d_matches_numpy(backend: TensorBackend) -> None:
    def check(data: tuple[Tensor, np.ndarray, Tensor, np.ndarray]) -> None:
        x, nx, w, nw = data
        assert_close(minitorch.conv1d(x, w), conv1d_ref(nx, nw))

    run(backend, check, pair(backend, conv1d_shapes()))


def test_conv2d_matches_numpy(backend: TensorBackend) -> None:
    def check(data: tuple[Tensor, np.ndarray, Tensor, np.ndarray]) -> None:
        x, nx, w, nw = data
        assert_close(minitorch.conv2d(x, w), conv2d_ref(nx, nw))

    run(backend, check, pair(backend, conv2d_shapes()))


@pytest.mark.kernels
def test_conv1d_reverse_kernel_anchors_right() -> None:
    """The raw kernel with ``reverse=True`` reads ``x[j-k]``, zeros before the left edge."""
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(2, 3, 5)), rng.normal(size=(2, 3, 3))
    out = np.zeros((2, 2, 5))
    tensor_conv1d(*_triple(out), out.size, *_triple(x), *_triple(w), True)
    np.testing.assert_allclose(out, conv1d_ref(x, w, reverse=True))


@pytest.mark.kernels
def test_kernels_write_through_output_strides() -> None:
    """Outputs may be non-contiguous views: the backward pass writes through one."""
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=(2, 2, 3, 4)), rng.normal(size=(3, 2, 2, 2))
    out = np.zeros((3, 2, 3, 4))  # stored (Cout, B, H, W), viewed as (B, Cout, H, W)
    storage, shape, strides = _triple(out)
    order = [1, 0, 2, 3]
    tensor_conv2d(storage, shape[order], strides[order], out.size, *_triple(x), *_triple(w), False)
    np.testing.assert_allclose(out.transpose(1, 0, 2, 3), conv2d_ref(x, w))


def _triple(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A contiguous array as the kernels' (storage, shape, strides)."""
    strides = np.array(a.strides, dtype=np.int64) // a.itemsize
    return a.reshape(-1), np.array(a.shape, dtype=np.int64), strides


# Backward ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("conv", "ref", "shapes"),
    [
        pytest.param(minitorch.conv1d, conv1d_ref, conv1d_shapes(), id="1d"),
        pytest.param(minitorch.conv2d, conv2d_ref, conv2d_shapes(), id="2d"),
    ],
)
def test_conv_gradients(
    backend: TensorBackend,
    conv: Callable[[Tensor, Tensor], Tensor],
    ref: Callable[[np.ndarray, np.ndarray], np.ndarray],
    shapes: st.SearchStrategy,
) -> None:
    """Every element of both gradients, and grad_check's central difference."""

    def check(data: tuple[Tensor, np.ndarray, Tensor, np.ndarray], seed: int) -> None:
        x, nx, w, nw = data
        ng = np.random.default_rng(seed).normal(size=ref(nx, nw).shape)
        g = minitorch.tensor_from_numpy(ng, backend=backend)
        x.requires_grad_(True)
        w.requires_grad_(True)
        (conv(x, w) * g).sum().backward()
        grad_x, grad_w = linear_grads(ref, nx, nw, ng)
        assert_close(x.grad, grad_x)
        assert_close(w.grad, grad_w)
        if not backend.cuda:  # two simulated convolutions per element: minutes under the simulator
            minitorch.grad_check(conv, x, w)

    run(backend, check, pair(backend, shapes), st.integers(0, 2**16))


# Shape errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("conv", "x_shape", "w_shape", "message"),
    [
        (minitorch.conv1d, (1, 2, 4), (1, 3, 2), "channels"),
        (minitorch.conv1d, (1, 2, 4), (1, 2, 5), "kernel"),
        (minitorch.conv1d, (2, 4), (1, 2, 3), "shaped"),
        (minitorch.conv1d, (1, 1, 4), (1, 1, 2, 2), "shaped"),
        (minitorch.conv2d, (1, 2, 4, 4), (1, 1, 2, 2), "channels"),
        (minitorch.conv2d, (1, 1, 3, 4), (1, 1, 4, 2), "kernel"),
        (minitorch.conv2d, (1, 1, 3, 4), (1, 1, 2, 5), "kernel"),
        (minitorch.conv2d, (1, 1, 4), (1, 1, 2, 2), "shaped"),
        (minitorch.conv1d, (1, 0, 4), (1, 0, 2), "at least one"),
        (minitorch.conv1d, (1, 2, 4), (0, 2, 2), "at least one"),
        (minitorch.conv2d, (2, 0, 3, 3), (2, 0, 2, 2), "at least one"),
        (minitorch.conv2d, (2, 1, 3, 3), (0, 1, 2, 2), "at least one"),
        (minitorch.conv2d, (1, 1, 3, 4), (1, 1, 0, 2), "kernel"),
    ],
)
def test_conv_shape_errors(
    backend: TensorBackend,
    conv: Callable[[Tensor, Tensor], Tensor],
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    message: str,
) -> None:
    x = minitorch.zeros(x_shape, backend=backend)
    w = minitorch.zeros(w_shape, backend=backend)
    with pytest.raises(IndexingError, match=message):
        conv(x, w)


def test_conv_empty_batch(backend: TensorBackend) -> None:
    """A batch of 0 images convolves to an empty output, and the weight gradient is 0."""
    x = minitorch.zeros((0, 2, 3, 3), backend=backend)
    w = minitorch.rand((4, 2, 2, 2), backend=backend, requires_grad=True)
    out = minitorch.conv2d(x, w)
    assert out.shape == (0, 4, 3, 3)
    out.sum().backward()
    assert_exact(w.grad, np.zeros((4, 2, 2, 2)))


# The GEMM path: both dtypes, larger shapes, both gradients ------------------------


def conv2d_grads_ref(x: np.ndarray, w: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, ...]:
    """Gradients of ``sum(conv2d_ref(x, w) * g)`` written directly: each tap (i, j)
    pairs the output gradient with the input shifted by (i, j)."""
    batch, _, height, width = x.shape
    kh, kw = w.shape[2:]
    padded = np.pad(x, ((0, 0), (0, 0), (0, kh - 1), (0, kw - 1)))
    grad_padded = np.zeros_like(padded)
    grad_w = np.zeros_like(w)
    for i in range(kh):
        for j in range(kw):
            window = padded[:, :, i : i + height, j : j + width]
            grad_w[:, :, i, j] = np.einsum("boyx,bcyx->oc", g, window)
            grad_padded[:, :, i : i + height, j : j + width] += np.einsum(
                "boyx,oc->bcyx", g, w[:, :, i, j]
            )
    return grad_padded[:, :, :height, :width], grad_w


def assert_close_in(
    actual: Tensor, expected: np.ndarray, scale: np.ndarray, dtype: np.dtype
) -> None:
    """Close within the rounding of ``dtype`` on sums whose terms add up to ``scale``
    in absolute value (the same sum over ``|x|`` and ``|w|``)."""
    assert actual.dtype == dtype
    assert actual.shape == expected.shape
    tolerance = 64 * np.finfo(dtype).eps * (np.abs(scale) + 1.0)
    assert np.all(np.abs(actual.to_numpy() - expected) <= tolerance), (actual.to_numpy(), expected)


@st.composite
def gemm_cases(
    draw: st.DrawFn, spatial: int, small: bool
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Random batch, channels and sizes, kernels anywhere from 1 to the input size
    (``small`` ones for the CUDA simulator, where each thread runs in Python)."""
    most = (2, 2, 2, 4) if small else (3, 5, 7, 9)
    batch, cin, cout = (draw(st.integers(1, n)) for n in most[:3])
    sizes = [draw(st.integers(1, most[3])) for _ in range(spatial)]
    kernel = [draw(st.integers(1, n)) for n in sizes]
    return (batch, cin, *sizes), (cout, cin, *kernel)


@pytest.mark.parametrize("spatial", [1, 2])
def test_conv_forward_and_gradients_both_dtypes(
    backend: TensorBackend, dtype: np.dtype, spatial: int
) -> None:
    """Output and both gradients in the input's dtype, against the NumPy reference, on
    permuted (non-contiguous) inputs, weights and output gradients."""
    conv = minitorch.conv1d if spatial == 1 else minitorch.conv2d

    def as_2d(a: np.ndarray) -> np.ndarray:
        return a[:, :, None, :] if spatial == 1 else a

    def check(data: st.DataObject) -> None:
        x_shape, w_shape = data.draw(gemm_cases(spatial, backend.cuda))
        x, nx = data.draw(tensor_arrays(backend, x_shape, dtype=dtype))
        w, nw = data.draw(tensor_arrays(backend, w_shape, dtype=dtype))
        g, ng = data.draw(
            tensor_arrays(backend, (x_shape[0], w_shape[0], *x_shape[2:]), dtype=dtype)
        )
        nx, nw, ng = (as_2d(a.astype(np.float64)) for a in (nx, nw, ng))
        x.requires_grad_(True)
        w.requires_grad_(True)
        out = conv(x, w)
        (out * g).sum().backward()
        squeeze = (lambda a: a[:, :, 0]) if spatial == 1 else (lambda a: a)
        expected = conv2d_ref(nx, nw)
        assert_close_in(out, squeeze(expected), squeeze(conv2d_ref(abs(nx), abs(nw))), dtype)
        grad_x, grad_w = conv2d_grads_ref(nx, nw, ng)
        scale_x, scale_w = conv2d_grads_ref(abs(nx), abs(nw), abs(ng))
        assert_close_in(x.grad, squeeze(grad_x), squeeze(scale_x), dtype)
        assert_close_in(w.grad, squeeze(grad_w), squeeze(scale_w), dtype)

    run(backend, check, st.data())


@pytest.mark.parametrize("conv", [minitorch.conv1d, minitorch.conv2d], ids=["1d", "2d"])
def test_conv_mixed_dtypes_meet_in_float64(
    backend: TensorBackend, conv: Callable[[Tensor, Tensor], Tensor]
) -> None:
    shape = (2, 3, 5) if conv is minitorch.conv1d else (2, 3, 4, 5)
    rng = np.random.default_rng(3)
    nx, nw = rng.normal(size=shape), rng.normal(size=(2, 3) + (2,) * (len(shape) - 2))
    x = minitorch.tensor_from_numpy(nx, backend=backend, dtype=minitorch.float32)
    w = minitorch.tensor_from_numpy(nw, backend=backend, requires_grad=True)
    x.requires_grad_(True)
    out = conv(x, w)
    assert out.dtype == minitorch.float64
    out.sum().backward()
    assert x.grad.dtype == minitorch.float32
    assert w.grad.dtype == minitorch.float64


# The unrolling kernels, both compiled forms, on any strides ------------------------


@st.composite
def strided_planes(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """(B, C, H, W) values as a view of a flat storage at drawn strides (permuted dims,
    a step along W): the view, the storage and the view's strides in elements."""
    shape = tuple(draw(st.integers(1, 4)) for _ in range(4))
    order = draw(st.permutations(range(4)))
    step = draw(st.integers(1, 2))
    stored = [shape[d] for d in order]
    stored[order.index(3)] *= step
    storage = np.random.default_rng(draw(st.integers(0, 99))).normal(size=stored)
    view = storage.transpose(np.argsort(order))[..., ::step]
    assert view.shape == shape
    strides = tuple(s // storage.itemsize for s in view.strides)
    return view, storage.ravel(), strides


@pytest.mark.kernels
@pytest.mark.parametrize("variant", [0, 1], ids=["parallel", "serial"])
def test_im2col_and_channel_major_kernels_match_numpy(variant: int) -> None:
    """cols[(c, i, j), (b, y, x)] = in[b, c, y + i, x + j] (zero past the bottom and
    right edges, kernels of 1 to 5 taps each way, larger than the input too: the ops
    refuse those, but the kernels must stay in bounds) and the channel-major copy, from
    any strides, in both the parallel and the serial form. Regression: (1, 1, 1, 1)
    with a 1 x 4 kernel indexed before its row (found under NUMBA_BOUNDSCHECK)."""

    @settings(max_examples=40, deadline=None)
    @given(strided_planes(), st.integers(1, 5), st.integers(1, 5))
    def check(planes: tuple[np.ndarray, np.ndarray, tuple[int, ...]], kh: int, kw: int) -> None:
        view, storage, strides = planes
        b, c, h, w = view.shape
        padded = np.zeros((b, c, h + kh, w + kw))
        padded[:, :, :h, :w] = view
        expected = np.stack([padded[:, :, i:i + h, j:j + w] for i in range(kh)
                             for j in range(kw)], axis=2)  # (B, C, taps, H, W)  # fmt: skip
        expected = expected.transpose(1, 2, 0, 3, 4).reshape(-1)
        cols = np.full(c * kh * kw * b * h * w, np.nan)
        fast_conv._IM2COL[variant](cols, storage, b, c, h, w, kh, kw, *strides)
        np.testing.assert_array_equal(cols, expected)
        dst = np.full(view.size, np.nan)
        fast_conv._CHANNEL_MAJOR[variant](dst, storage, b, c, h, w, *strides)
        np.testing.assert_array_equal(dst, view.transpose(1, 0, 2, 3).reshape(-1))

    check()


@pytest.mark.kernels
@pytest.mark.parametrize("variant", [0, 1], ids=["parallel", "serial"])
def test_unrolling_contiguous_planes_in_runs_matches_numpy(variant: int) -> None:
    """The unit-stride paths of im2col and the channel-major copy (contiguous planes, the
    usual layout), for every kernel size up to four wider and taller than the plane: a
    run never reads past its plane's last element (the wrapped columns it copies are
    zeroed), so the last plane of the storage ends the run; a kernel wider than the
    plane writes only zeros, inside its own row (it once indexed before it)."""
    rng = np.random.default_rng(5)
    for b, c, h, w in ((2, 3, 4, 4), (1, 2, 3, 5), (3, 1, 5, 2), (1, 1, 1, 3), (1, 1, 1, 1),
                       (2, 2, 1, 1)):
        view = rng.normal(size=(b, c, h, w))
        storage = view.ravel().copy()
        strides = (c * h * w, h * w, w, 1)
        for kh in range(1, h + 5):
            for kw in range(1, w + 5):
                padded = np.zeros((b, c, h + kh, w + kw))
                padded[:, :, :h, :w] = view
                expected = np.stack([padded[:, :, i:i + h, j:j + w] for i in range(kh)
                                     for j in range(kw)], axis=2)  # fmt: skip
                cols = np.full(c * kh * kw * b * h * w, np.nan)
                fast_conv._IM2COL[variant](cols, storage, b, c, h, w, kh, kw, *strides)
                np.testing.assert_array_equal(
                    cols, expected.transpose(1, 2, 0, 3, 4).reshape(-1)
                )
        dst = np.full(view.size, np.nan)
        fast_conv._CHANNEL_MAJOR[variant](dst, storage, b, c, h, w, *strides)
        np.testing.assert_array_equal(dst, view.transpose(1, 0, 2, 3).reshape(-1))


# Determinism across thread counts -------------------------------------------------

DETERMINISM_SCRIPT = textwrap.dedent(
    """
    import hashlib

    import numpy as np

    import minitorch

    backend = minitorch.TensorBackend(minitorch.FastOps)
    digest = hashlib.sha256()
    rng = np.random.default_rng(0)
    for dtype in (minitorch.float64, minitorch.float32):
        # Big enough for the parallel unrolling, matmul and pooling kernels.
        cases = [((16, 8, 16, 16), (32, 8, 3, 3)), ((16, 8, 300), (8, 8, 5))]
        for x_shape, w_shape in cases:
            x = minitorch.tensor_from_numpy(rng.normal(size=x_shape), backend=backend, dtype=dtype)
            w = minitorch.tensor_from_numpy(rng.normal(size=w_shape), backend=backend, dtype=dtype)
            x.requires_grad_(True)
            w.requires_grad_(True)
            if len(x_shape) == 4:
                out = minitorch.conv2d(x, w)
                out = minitorch.maxpool2d(out, (2, 2)) + minitorch.avgpool2d(out, (2, 2))
            else:
                out = minitorch.conv1d(x.permute(0, 2, 1).contiguous().permute(0, 2, 1), w)
            (out * out).sum().backward()
            for t in (out, x.grad, w.grad):
                digest.update(t.to_numpy().tobytes())
    print(digest.hexdigest())
    """
)


@pytest.mark.kernels
@pytest.mark.not_boundschecked
def test_conv_and_pooling_identical_for_any_thread_count() -> None:
    """Forward and both gradients, bit for bit, on 1 and 2 threads (subprocesses)."""
    digests = []
    for threads in ("1", "2"):
        env = dict(os.environ, NUMBA_NUM_THREADS=threads, PYTHONPATH=str(ROOT))
        proc = subprocess.run(
            [sys.executable, "-c", DETERMINISM_SCRIPT],
            env=env, capture_output=True, text=True, timeout=600, cwd=ROOT,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        digests.append(proc.stdout.split()[-1])
    assert digests[0] == digests[1]


def test_gathering_kernels_go_parallel_by_the_elements_they_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A kernel that reads more than it writes runs its parallel form from
    PARALLEL_ELEMENTS elements read: col2im at the digits CNN's second layer (73,728
    read, 8,192 written) and its first pooling (32,768 read, 8,192 written)."""
    from minitorch.kernel_cache import PARALLEL_ELEMENTS, launch_into

    ran: list[str] = []
    kernels = (lambda out: ran.append("par"), lambda out: ran.append("ser"))
    out = np.empty(8)
    launch_into(kernels, out)
    launch_into(kernels, out, reads=PARALLEL_ELEMENTS - 1)
    launch_into(kernels, out, reads=PARALLEL_ELEMENTS)
    assert ran == ["ser", "ser", "par"]

    chosen: dict[str, bool] = {}

    def recording(kernels, out, *args, reads=0):  # noqa: ANN001, ANN202
        chosen[kernels[0].py_func.__name__] = max(out.size, reads) >= PARALLEL_ELEMENTS
        launch_into(kernels, out, *args, reads=reads)

    monkeypatch.setattr(fast_conv, "launch_into", recording)
    backend = TensorBackend(minitorch.FastOps)
    rng = np.random.default_rng(0)
    x = minitorch.tensor_from_numpy(rng.random((32, 16, 4, 4)), backend=backend)
    w = minitorch.tensor_from_numpy(rng.random((32, 16, 3, 3)), backend=backend)
    x.requires_grad_()
    fast_conv.conv2d(x, w).sum().backward()
    minitorch.maxpool2d(minitorch.tensor_from_numpy(rng.random((32, 16, 8, 8)), backend=backend),
                        (2, 2))  # fmt: skip
    assert chosen["_col2im_par"] and chosen["_max_pool_par"]

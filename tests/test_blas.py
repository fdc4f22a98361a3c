"""The BLAS shim (row-major over scipy's column-major BLAS) and the activation helpers, through their Python twins."""
import itertools

import numpy as np
import pytest

from lstmcore._kernels import _activations, _blas
from lstmcore._kernels._activations import ACTIVATIONS, activation_derivative, apply_activation

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 1e-5, np.float64: 1e-12}

# The twins are fused (float/double) Cython functions. Called plainly, they cannot take float32 arrays (see
# test_twins_accept_float32_when_called_plainly, a known bug), so the numerical tests pick the specialisation
# explicitly: that still runs the float32 and the float64 instantiations of the shim and of the activation helpers.
SPEC = {np.float32: "float", np.float64: "double"}


def gemm_py(trans_a, trans_b, alpha, A, B, beta, C):
    return _blas.gemm_py[SPEC[C.dtype.type]](trans_a, trans_b, alpha, A, B, beta, C)


def gemv_py(trans_a, alpha, A, x, beta, y):
    return _blas.gemv_py[SPEC[y.dtype.type]](trans_a, alpha, A, x, beta, y)


def axpy_py(alpha, x, y):
    return _blas.axpy_py[SPEC[y.dtype.type]](alpha, x, y)


def act(name, x, alpha=0.2, beta=0.5):
    """act(x) by the compiled helper, in x's dtype."""
    v = np.array(x, copy=True, order="C").ravel()
    if v.size:
        _activations._apply[SPEC[v.dtype.type]](ACTIVATIONS[name], alpha, beta, v)
    return v.reshape(np.shape(x))


def act_derivative(name, y, alpha=0.2):
    """act'(x) given y = act(x), by the compiled helper, in y's dtype."""
    flat = np.ascontiguousarray(y).ravel()
    d = np.ones_like(flat)
    if flat.size:
        _activations._derivative[SPEC[flat.dtype.type]](ACTIVATIONS[name], alpha, flat, d)
    return d.reshape(np.shape(y))


def rand(shape, dtype, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


# ---------------------------------------------------------------------------------------------------------------------
# gemm / gemv / axpy

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m,n,k", [(3, 5, 7), (1, 4, 2), (6, 1, 3), (5, 4, 1), (17, 9, 33)])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (0.7, 1.0), (-1.5, 0.25)])
def test_gemm(dtype, trans_a, trans_b, m, n, k, alpha, beta):
    A = rand((k, m) if trans_a else (m, k), dtype, 1)
    Bm = rand((n, k) if trans_b else (k, n), dtype, 2)
    C = rand((m, n), dtype, 3)
    expected = alpha * (A.T if trans_a else A).astype(np.float64) @ (Bm.T if trans_b else Bm).astype(np.float64) \
        + beta * C.astype(np.float64)
    A_before, B_before = A.copy(), Bm.copy()
    result = gemm_py(trans_a, trans_b, alpha, A, Bm, beta, C)
    assert result is None  # in place
    np.testing.assert_allclose(C, expected, rtol=TOL[dtype], atol=TOL[dtype] * max(1, k))
    np.testing.assert_array_equal(A, A_before)
    np.testing.assert_array_equal(Bm, B_before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_beta_zero_ignores_garbage_in_c(dtype):
    A, Bm = rand((4, 3), dtype, 1), rand((3, 5), dtype, 2)
    C = np.full((4, 5), 1e30, dtype)
    gemm_py(False, False, 1.0, A, Bm, 0.0, C)
    np.testing.assert_allclose(C, A @ Bm, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_read_only_operands(dtype):
    A, Bm = rand((4, 3), dtype, 1), rand((5, 3), dtype, 2)
    A.setflags(write=False)
    Bm.setflags(write=False)
    C = np.zeros((4, 5), dtype)
    gemm_py(False, True, 1.0, A, Bm, 0.0, C)
    np.testing.assert_allclose(C, A @ Bm.T, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("shapes", [((3, 4), (5, 6), (3, 6)), ((3, 4), (4, 6), (3, 5)), ((3, 4), (4, 6), (2, 6))])
def test_gemm_shape_mismatch(shapes):
    a, b, c = (np.zeros(s) for s in shapes)
    with pytest.raises(ValueError):
        gemm_py(False, False, 1.0, a, b, 0.0, c)


def test_gemm_mixed_dtypes_refused():
    with pytest.raises((TypeError, ValueError)):
        _blas.gemm_py(False, False, 1.0, np.zeros((2, 2)), np.zeros((2, 2), np.float32), 0.0, np.zeros((2, 2)))
    with pytest.raises((TypeError, ValueError)):
        gemm_py(False, False, 1.0, np.zeros((2, 2)), np.zeros((2, 2), np.float32), 0.0, np.zeros((2, 2)))


def test_gemm_non_contiguous_refused():
    with pytest.raises(ValueError):
        gemm_py(False, False, 1.0, np.zeros((4, 4))[:, ::2], np.zeros((2, 3)), 0.0, np.zeros((4, 3)))


def test_twins_plain_call_float64():
    """Called plainly (no specialisation), the twins work on float64 arrays."""
    A, Bm, C = rand((3, 4), np.float64, 1), rand((4, 2), np.float64, 2), np.zeros((3, 2))
    _blas.gemm_py(False, False, 1.0, A, Bm, 0.0, C)
    np.testing.assert_allclose(C, A @ Bm, rtol=1e-12)
    y = np.zeros(3)
    _blas.gemv_py(False, 2.0, A, np.ones(4), 0.0, y)
    np.testing.assert_allclose(y, 2 * A.sum(axis=1), rtol=1e-12)
    _blas.axpy_py(1.0, np.ones(3), y)
    np.testing.assert_allclose(y, 2 * A.sum(axis=1) + 1, rtol=1e-12)
    x = np.linspace(-3, 3, 7)
    np.testing.assert_allclose(apply_activation("tanh", x), np.tanh(x), rtol=1e-14)
    np.testing.assert_allclose(activation_derivative("tanh", np.tanh(x)), 1 - np.tanh(x) ** 2, rtol=1e-14)
    np.testing.assert_allclose(apply_activation("hard_sigmoid", x, 0.3, 0.4), np.clip(0.3 * x + 0.4, 0, 1))


@pytest.mark.parametrize("call", ["gemm", "gemv", "axpy", "apply_activation", "activation_derivative"])
def test_twins_accept_float32_when_called_plainly(call):
    f32 = np.float32
    if call == "gemm":
        C = np.zeros((2, 2), f32)
        _blas.gemm_py(False, False, 1.0, np.ones((2, 3), f32), np.ones((3, 2), f32), 0.0, C)
        np.testing.assert_array_equal(C, 3)
    elif call == "gemv":
        y = np.zeros(2, f32)
        _blas.gemv_py(False, 1.0, np.ones((2, 3), f32), np.ones(3, f32), 0.0, y)
        np.testing.assert_array_equal(y, 3)
    elif call == "axpy":
        y = np.zeros(2, f32)
        _blas.axpy_py(2.0, np.ones(2, f32), y)
        np.testing.assert_array_equal(y, 2)
    elif call == "apply_activation":
        assert apply_activation("tanh", np.zeros(3, f32)).dtype == f32
    else:
        assert activation_derivative("tanh", np.zeros(3, f32)).dtype == f32


def test_activation_derivative_keeps_shape():
    y = np.zeros((2, 3))
    assert activation_derivative("tanh", y).shape == (2, 3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("m,n", [(3, 5), (5, 3), (1, 4), (4, 1), (40, 17)])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (0.5, 1.0), (-2.0, -0.5)])
def test_gemv(dtype, trans_a, m, n, alpha, beta):
    A = rand((m, n), dtype, 1)
    x = rand(m if trans_a else n, dtype, 2)
    y = rand(n if trans_a else m, dtype, 3)
    expected = alpha * (A.T if trans_a else A).astype(np.float64) @ x.astype(np.float64) + beta * y
    gemv_py(trans_a, alpha, A, x, beta, y)
    np.testing.assert_allclose(y, expected, rtol=TOL[dtype], atol=TOL[dtype] * max(m, n))


def test_gemv_shape_mismatch():
    with pytest.raises(ValueError):
        gemv_py(False, 1.0, np.zeros((3, 4)), np.zeros(3), 0.0, np.zeros(3))
    with pytest.raises(ValueError):
        gemv_py(True, 1.0, np.zeros((3, 4)), np.zeros(3), 0.0, np.zeros(3))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 1000])
def test_axpy(dtype, n):
    x, y = rand(n, dtype, 1), rand(n, dtype, 2)
    expected = y.astype(np.float64) + 0.3 * x
    axpy_py(0.3, x, y)
    np.testing.assert_allclose(y, expected, rtol=TOL[dtype], atol=TOL[dtype])


def test_axpy_length_mismatch():
    with pytest.raises(ValueError):
        axpy_py(1.0, np.zeros(3), np.zeros(4))


# ---------------------------------------------------------------------------------------------------------------------
# small_gemm: the packed single-thread kernel of the per-step recurrence, on each of its vector paths

# Sizes around every panel width of every path (2W = 32/16 floats, 16/8 doubles, then W, W/2, W/4 tails and single
# columns read from B), M = 1..5 (the row remainders of the 4-row blocks) and a few batches.
GEMM_M = [1, 2, 3, 4, 5, 8, 16, 17, 32]
GEMM_N = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 47, 48, 63, 64, 100, 148, 400]
GEMM_K = [1, 2, 3, 5, 37, 128]

# Run in a fresh interpreter under each LSTMCORE_SIMD (the path is chosen once per process), and in this one.
SIMD_SCRIPT = r"""
import numpy as np
import lstmcore
from lstmcore._kernels import _activations, _blas


def run_small_gemm_paths(GEMM_M, GEMM_N, GEMM_K):
    res = {"path": np.array(_blas.simd_path())}
    # the fast activations, on lengths around every vector width, over the whole range and at the saturation points
    x = np.concatenate([np.linspace(-30, 30, 1001), [-1e30, -100, -88, -87, -0.625, -1e-30, 0, 1e-30, 0.625, 88, 1e30]])
    for dtype, spec in ((np.float32, "float"), (np.float64, "double")):
        for name, exact in (("sigmoid", lambda v: 1 / (1 + np.exp(-v))), ("tanh", np.tanh)):
            worst = 0.0
            for n in (1, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 64, 100, len(x)):
                v = np.ascontiguousarray(x[:n][::-1] if n % 2 else x[-n:], dtype=dtype)
                with np.errstate(over="ignore"):
                    expected = exact(v.astype(np.float64))
                _activations._apply[spec](_activations.ACTIVATIONS[name], 0.2, 0.5, v)
                worst = max(worst, float(np.abs(v - expected).max()))
            res[f"act_err_{name}_{spec}"] = np.array(worst)
    for dtype, spec in ((np.float32, "float"), (np.float64, "double")):
        worst = 0.0
        for M in GEMM_M:
            for N in GEMM_N:
                for K in GEMM_K:
                    rng = np.random.default_rng([M, N, K])
                    A, Bm, C0 = (rng.standard_normal(s).astype(dtype) for s in ((M, K), (K, N), (M, N)))
                    ref = C0.astype(np.float64) + A.astype(np.float64) @ Bm.astype(np.float64)
                    scale = np.abs(C0) + np.abs(A).astype(np.float64) @ np.abs(Bm).astype(np.float64)
                    for b_transposed in (False, True):
                        C = C0.copy()
                        _blas.small_gemm_py[spec](A, np.ascontiguousarray(Bm.T) if b_transposed else Bm, C,
                                                  b_transposed)
                        worst = max(worst, float((np.abs(C - ref) / scale).max()))
        res[f"gemm_err_{spec}"] = np.array(worst)
    for variant, I, H, B in (("vanilla", 7, 100, 1), ("vanilla", 5, 37, 5), ("fgr", 4, 13, 3),
                             ("peephole", 9, 128, 16), ("coupled", 3, 33, 32)):
        for dtype in (np.float32, np.float64):
            rng = np.random.default_rng(H)
            x, d_y = rng.standard_normal((6, B, I)).astype(dtype), rng.standard_normal((6, B, H)).astype(dtype)
            layer = lstmcore.LSTM(I, H, variant=variant, dtype=dtype, seed=1)
            out, state = layer(x)
            dx = layer.backward(d_y)
            key = f"{variant}_{H}_{np.dtype(dtype).name}"
            res[key + "_out"], res[key + "_dx"] = out, dx
            for i, s in enumerate(state):
                res[f"{key}_state{i}"] = s
            for name, g in layer.grads.items():
                res[f"{key}_grad_{name}"] = g
    return res
"""


def _simd_results_here():
    namespace = {}
    exec(SIMD_SCRIPT, namespace)
    return namespace["run_small_gemm_paths"](GEMM_M, GEMM_N, GEMM_K)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b_transposed", [False, True])
def test_small_gemm(dtype, b_transposed):
    spec = SPEC[dtype]
    for M in (1, 2, 3, 4, 5, 16):
        for N in (1, 5, 16, 33, 100, 400):
            for K in (1, 3, 64):
                A, Bm, C = rand((M, K), dtype, 1), rand((K, N), dtype, 2), rand((M, N), dtype, 3)
                expected = C.astype(np.float64) + A.astype(np.float64) @ Bm.astype(np.float64)
                _blas.small_gemm_py[spec](A, np.ascontiguousarray(Bm.T) if b_transposed else Bm, C, b_transposed)
                np.testing.assert_allclose(C, expected, rtol=TOL[dtype] * 10, atol=TOL[dtype] * K,
                                           err_msg=f"M={M} N={N} K={K}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_small_gemm_overwriting_with_a_bias(dtype):
    """small_gemm_set: C = bias + A @ B (the input projection) and C = A @ B (dx), whatever C held."""
    for M, N, K, with_bias in itertools.product((1, 3, 4, 5, 16), (1, 5, 16, 33, 100), (1, 3, 64), (True, False)):
        A, Bm = rand((M, K), dtype, 1), rand((K, N), dtype, 2)
        bias = rand((N,), dtype, 3) if with_bias else None
        C = np.full((M, N), np.nan, dtype)
        _blas.small_gemm_py[SPEC[dtype]](A, Bm, C, False, bias, True)
        expected = A.astype(np.float64) @ Bm.astype(np.float64) + (0 if bias is None else bias)
        _assert_gemm_close(C, expected, dtype, K, f"M={M} N={N} K={K} bias={with_bias}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_small_gemm_with_a_transposed(dtype):
    """C += A.T @ B over every tail of the row groups, the panels and the chunks of K (LC_SMALL_GEMM_KC = 64)."""
    spec = SPEC[dtype]
    for M, N, K in itertools.product((1, 3, 4, 5, 37), (1, 5, 16, 33, 100), (1, 63, 64, 65, 200)):
        A, Bm, C = rand((K, M), dtype, 1), rand((K, N), dtype, 2), rand((M, N), dtype, 3)
        expected = C.astype(np.float64) + A.T.astype(np.float64) @ Bm.astype(np.float64)
        _blas.small_gemm_at_py[spec](A, Bm, C)
        _assert_gemm_close(C, expected, dtype, K, f"M={M} N={N} K={K}")
    with pytest.raises(ValueError):
        _blas.small_gemm_at_py[spec](np.zeros((3, 2), dtype), np.zeros((4, 5), dtype), np.zeros((2, 5), dtype))


def _assert_gemm_close(C, expected, dtype, K, message):
    np.testing.assert_allclose(C, expected, rtol=TOL[dtype] * 10, atol=TOL[dtype] * K, err_msg=message)


def test_small_gemm_shape_mismatch():
    with pytest.raises(ValueError):
        _blas.small_gemm_py["double"](np.zeros((2, 3)), np.zeros((4, 5)), np.zeros((2, 5)))


def test_simd_path_names_a_path():
    assert _blas.simd_path() in ("avx512", "avx2", "generic")


@pytest.fixture(scope="module")
def simd_here():
    return _simd_results_here()


@pytest.mark.slow
@pytest.mark.parametrize("path", ["generic", "avx2", "avx512"])
def test_small_gemm_and_layers_on_every_simd_path(path, simd_here, tmp_path):
    """LSTMCORE_SIMD forces a vector path of the small GEMM and the fast activations; each one (that this CPU has)
    matches NumPy on the GEMM grid and the activations, and whole layers (forward and BPTT, both dtypes, several
    variants and sizes) agree with this process's."""
    import os
    import subprocess
    import sys
    out = tmp_path / "res.npz"
    code = SIMD_SCRIPT + (f"\nres = run_small_gemm_paths({GEMM_M!r}, {GEMM_N!r}, {GEMM_K!r})"
                          f"\nnp.savez({str(out)!r}, **res)\n")
    # cwd="/": the repository root holds the uncompiled sources, which would shadow the installed package
    subprocess.run([sys.executable, "-c", code], cwd="/", env=dict(os.environ, LSTMCORE_SIMD=path), check=True,
                   timeout=300)
    res = dict(np.load(out))
    got = str(res.pop("path"))
    if path == "generic":
        assert got == "generic"
    elif got != path:
        assert (got, path) in (("generic", "avx2"), ("generic", "avx512"), ("avx2", "avx512"))
        pytest.skip(f"this CPU has no {path} path (ran {got})")
    assert res.pop("gemm_err_float") < 1e-5
    assert res.pop("gemm_err_double") < 1e-13
    for name in ("sigmoid", "tanh"):
        assert res.pop(f"act_err_{name}_float") < 1e-6
        assert res.pop(f"act_err_{name}_double") < 1e-14
    ref = {k: v for k, v in simd_here.items() if k != "path" and "_err_" not in k}
    assert sorted(res) == sorted(ref)
    for key, value in res.items():
        if key.endswith("float32") or "_float32_" in key:
            np.testing.assert_allclose(value, ref[key], rtol=2e-4, atol=2e-5, err_msg=key)
        else:
            np.testing.assert_allclose(value, ref[key], rtol=1e-10, atol=1e-12, err_msg=key)


# ---------------------------------------------------------------------------------------------------------------------
# activations

def formula(name, x, alpha=0.2, beta=0.5):
    x = x.astype(np.float64)
    return {
        "sigmoid": lambda: 1 / (1 + np.exp(-x)),
        "tanh": lambda: np.tanh(x),
        "identity": lambda: x,
        "relu": lambda: np.maximum(x, 0),
        "hard_sigmoid": lambda: np.maximum(0, np.minimum(1, alpha * x + beta)),
        "softsign": lambda: x / (1 + np.abs(x)),
    }[name]()


NAMES = ["sigmoid", "tanh", "identity", "relu", "hard_sigmoid", "softsign"]
HSIG_PARAMS = [(0.2, 0.5), (1.0, 0.0), (0.35, 0.6)]


def test_activation_names():
    assert set(ACTIVATIONS) == set(NAMES)


def sample(dtype):
    """Points spread over [-6, 6], away from the kinks of relu and hard_sigmoid (for finite differences)."""
    x = np.random.default_rng(7).uniform(-6, 6, size=400)
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_activation_values(name, dtype):
    x = sample(dtype).reshape(20, 20)
    y = act(name, x)
    assert y.shape == x.shape and y.dtype == dtype
    np.testing.assert_allclose(y, formula(name, x), rtol=4 * TOL[dtype], atol=4 * TOL[dtype])
    assert not np.shares_memory(x, y)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha,beta", HSIG_PARAMS)
def test_hard_sigmoid_alpha_beta(alpha, beta, dtype):
    x = sample(dtype)
    y = act("hard_sigmoid", x, alpha, beta)
    np.testing.assert_allclose(y, formula("hard_sigmoid", x, alpha, beta), rtol=TOL[dtype], atol=TOL[dtype])
    assert (y == 0).any() and (y == 1).any() and ((y > 0) & (y < 1)).any()


def test_activation_extremes_are_finite():
    x = np.array([-1e4, -800.0, -50.0, 0.0, 50.0, 800.0, 1e4])
    for dtype in DTYPES:
        for name in ("sigmoid", "tanh", "softsign", "hard_sigmoid"):
            y = act(name, x.astype(dtype))
            assert np.isfinite(y).all(), (name, dtype, y)
            assert y.min() >= -1 and y.max() <= 1
    np.testing.assert_allclose(act("sigmoid", np.array([-1e4, 1e4])), [0.0, 1.0], rtol=0, atol=1e-300)
    np.testing.assert_allclose(act("sigmoid", np.array([-1e4, 1e4], np.float32)), [0.0, 1.0], rtol=0, atol=1e-37)


def _fd_points(name, dtype, alpha, beta):
    x = sample(np.float64)
    if name == "relu":
        x = x[np.abs(x) > 1e-3]
    if name == "hard_sigmoid":
        v = alpha * x + beta
        x = x[(np.abs(v) > 1e-3) & (np.abs(v - 1) > 1e-3)]
    return x


FD_TOL = {np.float32: 2e-6, np.float64: 1e-8}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_activation_derivative_against_finite_differences(name, dtype):
    params = HSIG_PARAMS if name == "hard_sigmoid" else [(0.2, 0.5)]
    for alpha, beta in params:
        x = _fd_points(name, dtype, alpha, beta)
        eps = 1e-6
        numeric = (formula(name, x + eps, alpha, beta) - formula(name, x - eps, alpha, beta)) / (2 * eps)
        y = act(name, x.astype(dtype), alpha, beta)
        d = act_derivative(name, y, alpha)
        assert d.dtype == dtype and d.shape == x.shape
        tol = FD_TOL[dtype]
        np.testing.assert_allclose(d, numeric, rtol=tol, atol=tol, err_msg=f"{name} alpha={alpha} beta={beta}")


@pytest.mark.parametrize("name", NAMES)
def test_activation_derivative_is_meaningful(name):
    """The derivative is not a constant (except identity) and is zero exactly where the function is flat."""
    x = np.linspace(-5, 5, 101)
    d = act_derivative(name, act(name, x))
    if name == "identity":
        np.testing.assert_array_equal(d, 1)
    else:
        assert np.ptp(d) > 0.1
    if name in ("relu", "hard_sigmoid"):
        y = act(name, x)
        assert (d[(y == 0)] == 0).all() and (d[(y > 0) & (y < 1)] > 0).all()


def test_apply_activation_keeps_shape_and_empty():
    for name in NAMES:
        assert apply_activation(name, np.zeros((0, 3))).shape == (0, 3)
        assert apply_activation(name, np.zeros((2, 3, 4))).shape == (2, 3, 4)


def test_activation_non_contiguous_input():
    x = sample(np.float64).reshape(20, 20)[:, ::3]
    for name in NAMES:
        np.testing.assert_allclose(apply_activation(name, x), formula(name, x), rtol=1e-12, atol=1e-14)


def test_unknown_activation():
    with pytest.raises(KeyError):
        apply_activation("swish", np.zeros(3))

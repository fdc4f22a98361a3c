"""A one-state cell on the driver with 1, 2 and 3 threads, shared by the tests of the built-in cells (tests/test_cells.py)
and of the Cython example plugin."""
import numpy as np

from lstmcore._kernels import _driver


def check_team_sizes(cell, reference, dtype, seed=3, grad_tol=None):
    """``reference(params, x, h0, lengths)`` -> the expected reverse-direction output (float64)."""
    rng = np.random.default_rng(seed)
    T, B, I, H = 6, 5, 4, 40
    params = {k: (v * 2).astype(dtype) for k, v in cell.init_parameters(I, H, rng, dtype).items()}
    x = rng.normal(size=(T, B, I)).astype(dtype)
    h0 = rng.normal(size=(B, H)).astype(dtype)
    lengths = np.array([6, 0, 3, 6, 1], np.int32)
    d_out, d_h = rng.normal(size=(T, B, H)).astype(dtype), rng.normal(size=(B, H)).astype(dtype)
    ref_out = reference(params, x, h0, lengths)
    tol = dict(rtol=1e-12, atol=1e-13) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)
    grad_tol = grad_tol or tol

    def run(threads):
        out = np.zeros((T, B, H), dtype)
        W, b, weights, step = cell.driver_parameters(params)
        (h_n,), tape = _driver.forward(cell.step_kernel(), True, x, W, b, weights, step, lengths, (h0,), out,
                                       threads=threads)
        assert tape.threads == threads
        grads = {k: np.zeros_like(v) for k, v in params.items()}
        dW, db, d_weights, d_step = cell.driver_parameters(grads)
        dx = np.zeros_like(x)
        (dh0,) = _driver.backward(tape, d_out, (d_h,), dW, db, d_weights, d_step, dx, False)
        return dict(out=out, h_n=h_n, dx=dx, dh0=dh0, **grads)

    results = {n: run(n) for n in (1, 2, 3)}
    for n, result in results.items():
        np.testing.assert_allclose(result["out"], ref_out, **tol, err_msg=str(n))
        again = run(n)
        for key, value in result.items():
            np.testing.assert_array_equal(again[key], value, err_msg=f"{n} threads, {key}: not reproducible")
            np.testing.assert_allclose(value, results[1][key], **grad_tol, err_msg=f"{n} vs 1 threads, {key}")

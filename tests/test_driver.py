"""The sequence driver itself: its thread team (size from the BLAS's thread setting, 1 vs 2 threads agreeing to
summation tolerance, each bitwise reproducible, safe in a forked child) and its workspaces (reused across calls of
other shapes, dtypes and lengths without leaking anything between them)."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import lstmcore
from lstmcore._kernels import _driver


def _problem(variant, dtype, T=7, B=6, I=5, H=40, seed=0, **options):
    cell = lstmcore.get_variant(variant).with_options(**options)
    rng = np.random.default_rng(seed)
    params = {k: (0.5 * rng.normal(size=s)).astype(dtype) for k, s in cell.parameter_shapes(I, H).items()}
    x = rng.normal(size=(T, B, I)).astype(dtype)
    state = tuple(rng.normal(size=(B, H)).astype(dtype) for _ in cell.state_names)
    lengths = rng.integers(0, T + 1, size=B).astype(np.int32)
    d_out = rng.normal(size=(T, B, H)).astype(dtype)
    d_state = tuple(rng.normal(size=(B, H)).astype(dtype) for _ in cell.state_names)
    return cell, params, x, state, lengths, d_out, d_state


def _run(problem, threads=0, reverse=False):
    """Forward and backward through the driver; every result, as a dict of arrays."""
    cell, params, x, state, lengths, d_out, d_state = problem
    W, b, weights, p = cell.driver_parameters(params)
    out = np.zeros(x.shape[:2] + (W.shape[0] // cell.step_kernel().description["n_input_blocks"],), x.dtype)
    final, tape = _driver.forward(cell.step_kernel(), reverse, x, W, b, weights, p, lengths, state, out,
                                  threads=threads)
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    dW, db, d_weights, dp = cell.driver_parameters(grads)
    dx = np.zeros_like(x)
    d_init = _driver.backward(tape, d_out, d_state, dW, db, d_weights, dp, dx, False)
    result = dict(out=out, dx=dx, **{f"final{k}": v for k, v in enumerate(final)},
                  **{f"d_init{k}": v for k, v in enumerate(d_init)}, **{f"d{k}": v for k, v in grads.items()})
    return result, tape.threads


@pytest.mark.parametrize("variant,options", [("vanilla", {}), ("peephole", dict(clip=1.5)), ("coupled", {}),
                                             ("fgr", {}), ("nog", dict(output_activation="softsign"))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_and_two_threads_agree_and_each_repeats_bitwise(variant, options, dtype):
    problem = _problem(variant, dtype, **options)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-12)
    runs = {}
    for threads in (1, 2):
        first, used = _run(problem, threads, reverse=True)
        assert used == threads
        again, _ = _run(problem, threads, reverse=True)
        for key, value in first.items():
            np.testing.assert_array_equal(again[key], value, err_msg=f"{threads} threads, {key}: not reproducible")
        runs[threads] = first
    for key, value in runs[2].items():
        np.testing.assert_allclose(value, runs[1][key], **tol, err_msg=f"1 vs 2 threads: {key}")


def test_team_follows_the_blas_thread_limit():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if _driver.blas_threads() == 0:
        pytest.skip("this BLAS does not report its thread count")
    problem = _problem("vanilla", np.float32, T=3, B=32, I=8, H=256)
    with threadpoolctl.threadpool_limits(1):
        assert _driver.blas_threads() == 1
        assert _run(problem)[1] == 1
    with threadpoolctl.threadpool_limits(2):
        assert _run(problem)[1] == min(2, os.cpu_count())
    # a step too small to split stays on one thread whatever the limit
    assert _driver.team_size(10_000, 32) == 1


def test_backward_leaves_the_blas_thread_count_alone():
    """The driver calls no BLAS: a 2-thread backward leaves the process's BLAS thread count as the user set it (it
    once set OpenBLAS's count per member, which in OpenBLAS's pthreads build is the process-wide count, and left 1)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if _driver.blas_threads() == 0:
        pytest.skip("this BLAS does not report its thread count")
    problem = _problem("vanilla", np.float32, T=10, B=16, I=32, H=128)
    with threadpoolctl.threadpool_limits(2):
        before = [pool["num_threads"] for pool in threadpoolctl.threadpool_info()]
        for _ in range(30):
            assert _run(problem, threads=2)[1] == 2
        assert [pool["num_threads"] for pool in threadpoolctl.threadpool_info()] == before
        assert _driver.blas_threads() == 2


def test_team_works_in_a_forked_child():
    """A child forked after the parent's team ran gets a team of its own (GNU OpenMP would hang here)."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    code = textwrap.dedent("""
        import os, sys
        import numpy as np
        sys.path.insert(0, sys.argv[1])
        from test_driver import _problem, _run
        problem = _problem("peephole", np.float64)
        parent, _ = _run(problem, threads=2)
        pid = os.fork()
        if pid == 0:
            child, used = _run(problem, threads=2)
            same = used == 2 and all(np.array_equal(child[k], parent[k]) for k in parent)
            os._exit(0 if same else 3)
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status))
    """)
    result = subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__)], capture_output=True, text=True,
                            timeout=120, cwd="/")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "child exit 0" in result.stdout


def test_workspace_reused_across_shapes_dtypes_and_lengths_leaks_nothing():
    """Results after other calls (other variants, shapes, dtypes, lengths, directions) and with every pooled buffer
    filled with NaN equal those of a fresh pool, bit for bit."""
    configs = [("peephole", np.float64, dict(T=7, B=6, H=40)), ("fgr", np.float32, dict(T=3, B=9, H=17)),
               ("vanilla", np.float64, dict(T=12, B=2, H=64, seed=4)), ("coupled", np.float32, dict(T=1, B=1, H=8))]
    problems = [_problem(v, dt, **sizes) for v, dt, sizes in configs]
    _driver.release_workspaces()
    fresh = [_run(p, threads=2, reverse=r)[0] for p in problems for r in (False, True)]
    assert sum(_driver.pooled_workspaces().values()) > 0, "the tapes gave their workspaces back"
    for _ in range(2):
        _driver._fill_pool(np.nan)
        again = [_run(p, threads=2, reverse=r)[0] for p in reversed(problems) for r in (True, False)][::-1]
        for one, other in zip(fresh, again):
            for key in one:
                np.testing.assert_array_equal(other[key], one[key], err_msg=key)


def test_layer_reuses_its_workspaces():
    layer = lstmcore.LSTM(5, 16, variant="peephole", num_layers=2, bidirectional=True, seed=0)
    x = np.random.default_rng(0).normal(size=(6, 3, 5)).astype(np.float32)
    _driver.release_workspaces()
    layer(x)
    first = {id(b) for tape in layer._tape[1] for c in tape for b in c.workspace_buffers()}
    layer(x)
    second = {id(b) for tape in layer._tape[1] for c in tape for b in c.workspace_buffers()}
    assert first == second, "a second call of the same shape allocated new buffers"


def test_a_tape_cannot_be_copied_or_pickled():
    """A copied tape would give its pooled workspace back twice, and two later calls would share buffers."""
    import copy
    import pickle

    layer = lstmcore.LSTM(5, 16, variant="peephole", seed=0)
    layer(np.random.default_rng(0).normal(size=(6, 3, 5)).astype(np.float32))
    tape = next(c for caches in layer._tape[1] for c in caches)
    assert isinstance(tape, _driver.Tape)
    for duplicate in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError, match="cannot be copied or pickled"):
            duplicate(tape)

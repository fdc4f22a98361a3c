#!/usr/bin/env python
"""Time lstmcore's forward and forward+backward against PyTorch's ``torch.nn.LSTM`` and the NumPy reference.

    python benchmarks/bench_lstm.py            # vanilla, peephole, coupled; float32; 2 then 1 thread
    python benchmarks/bench_lstm.py --variants vanilla --dtype float32,float64   # adds the float64 / float32 table
    python benchmarks/bench_lstm.py --variants all --configs tiny,small --threads 1 --quick --json out.json

One single-layer, unidirectional layer per (config, variant); inputs are time-major ``(T, B, I)``. Each measurement
warms up, then repeats the call (batching very short calls so that a sample lasts at least 2 ms) for a time budget and
reports the median sample. A measurement is retried after waiting for a quiet machine (``--retries``, ``--max-wait``)
when its samples spread widely or other processes used the CPUs meanwhile (read from /proc/stat on Linux); a ``*``
marks one still noisy or disturbed after that: rerun that config (``--configs``) when the machine is quiet.

- GFLOP/s are *nominal*: 2*T*B*4H*(I+H) floating-point operations per forward and 3x that for forward+backward, for
  every variant (a variant with fewer gates does less work, so its nominal rate looks higher). The variant/vanilla
  table also compares time *per unit of work*: a cell's work per step and sequence element is its parameter count per
  layer (one multiply-add per parameter, docs/cells.md), so gru does 3H(I+H)+4H, mgu and janet 2H(I+H)+2H.
  ``% peak`` divides
  them by the machine's measured peak for that thread count and dtype, printed above the tables: the best of SciPy's
  BLAS on a 2048 x 2048 product and lstmcore's own small GEMM (``measured_peak``).
- ``torch`` is ``torch.nn.LSTM`` (always the vanilla LSTM, on its default CPU path; forward under ``torch.no_grad()``,
  forward+backward with autograd, ``output.backward(grad)``, input gradient included, as ours computes ``d_x``).
  The ``÷`` columns are ours divided by the comparator: lower is better.
- ``numpy`` is ``tests/numpy_reference.py`` (one step at a time, readable rather than fast).
- ``--cpu-time`` times the CPU time of the calling thread (``time.thread_time``) instead of wall time: with
  ``--threads 1`` every library does all its work on that thread, so other jobs on a shared machine do not count
  (their effect on the caches still does). Meaningless with more threads.
- Threads: ``threadpoolctl.threadpool_limits(n)`` on every BLAS/OpenMP library loaded (NumPy's and SciPy's OpenBLAS,
  torch's OpenMP) and ``torch.set_num_threads(n)``.
- Extra memory of one forward+backward (everything allocated during it and alive at its peak): ``tracemalloc`` for ours
  and NumPy (NumPy reports its buffers to it; OpenBLAS's internal buffers are not seen), and the profiler's memory
  timeline for torch (its CPU allocator; oneDNN-internal scratch space is not seen). Measured once per dtype.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import lstmcore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from numpy_reference import reference_backward, reference_forward  # noqa: E402

try:
    import torch
except ImportError:  # the torch columns then say n/a
    torch = None

CONFIGS = {  # name: (B, T, I, H)
    "jsb": (1, 60, 88, 100),
    "tiny": (1, 100, 32, 32),
    "small": (16, 100, 64, 128),
    "medium": (32, 100, 128, 256),
    "large": (64, 50, 512, 512),
}
DEFAULT_VARIANTS = "vanilla,peephole,coupled"
NOISY = 0.15  # relative interquartile range above which a measurement is retried, then starred
BUSY = 0.2  # CPUs used by other processes during a measurement above which it is retried, then starred


# -- timing -----------------------------------------------------------------------------------------------------------
def _cpu_snapshot():
    """(wall s, CPU-seconds used by the whole machine incl. steal, CPU-seconds of this process); None off Linux."""
    try:
        with open("/proc/stat") as f:
            v = [int(n) for n in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    own = os.times()
    return time.perf_counter(), (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK"), own.user + own.system


def _others_load(before, after) -> float:
    """CPUs kept busy by other processes (or the hypervisor) between two snapshots."""
    if before is None or after is None:
        return 0.0
    return max(0.0, (after[1] - before[1]) - (after[2] - before[2])) / max(after[0] - before[0], 1e-9)


def wait_until_quiet(max_wait: float, interval: float = 0.5):
    """Sleep until other processes use under BUSY CPUs over ``interval`` (at most ``max_wait`` seconds)."""
    deadline = time.perf_counter() + max_wait
    while time.perf_counter() < deadline:
        before = _cpu_snapshot()
        time.sleep(interval)
        if _others_load(before, _cpu_snapshot()) < BUSY:
            return


CLOCK = time.perf_counter  # time.thread_time with --cpu-time


def measure(fn, budget: float, max_samples: int, retries: int = 0, max_wait: float = 30.0) -> dict:
    """Median seconds per call of ``fn`` over samples of at least 2 ms, for about ``budget`` seconds (>= 3 samples).

    A measurement that is noisy (relative IQR above NOISY) or disturbed (other processes used BUSY CPUs or more
    meanwhile) is taken again after waiting for a quiet machine, up to ``retries`` times; the clean attempt with the
    lowest median is kept (else the lowest median), and ``suspect`` tells whether it is still noisy or disturbed."""
    best = None
    for attempt in range(retries + 1):
        if attempt:
            wait_until_quiet(max_wait)
        m = _measure_once(fn, budget, max_samples)
        m["attempts"] = attempt + 1
        m["suspect"] = m["spread"] > NOISY or m["others"] >= BUSY
        if best is None or (best["suspect"], best["median"]) > (m["suspect"], m["median"]):
            best = m
        if not m["suspect"]:
            break
    return best


def _measure_once(fn, budget: float, max_samples: int) -> dict:
    fn()  # warm-up (allocations, BLAS thread start-up, caches)
    start = CLOCK()
    fn()
    once = max(CLOCK() - start, 1e-7)
    number = max(1, math.ceil(2e-3 / once))
    samples = []
    gc.collect()
    gc.disable()  # as timeit does: a collection triggered by the NumPy reference's many small objects is not its cost
    snapshot = _cpu_snapshot()
    try:
        for _ in range(int(min(max_samples, max(3, budget / (number * once))))):
            start = CLOCK()
            for _ in range(number):
                fn()
            samples.append((CLOCK() - start) / number)
    finally:
        gc.enable()
    others = _others_load(snapshot, _cpu_snapshot())
    q1, _, q3 = statistics.quantiles(samples, n=4)
    median = statistics.median(samples)
    return {"median": median, "spread": (q3 - q1) / median, "others": others, "samples": len(samples),
            "number": number}


def ours_calls(layer, x, d_out):
    def fwd_bwd():
        layer(x)
        layer.backward(d_out)
    return (lambda: layer(x)), fwd_bwd


def numpy_calls(layer, x, d_out):
    """The NumPy reference's calls for a gated-cell variant; (None, None) for other variants (plugins)."""
    cell = layer.cells[0]
    if not isinstance(cell, lstmcore.GatedCell):
        return None, None
    params = {k[: -len("_l0")]: v for k, v in layer.params.items() if k.endswith("_l0")}
    zeros = np.zeros((x.shape[1], layer.hidden_size), x.dtype)

    def fwd():
        return reference_forward(cell, params, x, zeros, zeros)

    def fwd_bwd():
        cache = fwd()[3]
        reference_backward(cell, params, cache, d_out, zeros, zeros)
    return fwd, fwd_bwd


def torch_calls(x, d_out, hidden_size: int):
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(x.shape[2], hidden_size, dtype=getattr(torch, x.dtype.name))
    tx, tg = torch.from_numpy(x), torch.from_numpy(d_out)
    tx_grad = tx.clone().requires_grad_(True)

    def fwd():
        with torch.no_grad():
            lstm(tx)

    def fwd_bwd():
        lstm.zero_grad(set_to_none=True)
        tx_grad.grad = None
        lstm(tx_grad)[0].backward(tg)
    return fwd, fwd_bwd


# -- memory -----------------------------------------------------------------------------------------------------------
def traced_peak(fn) -> int:
    """Bytes allocated (as seen by tracemalloc) and alive at the peak of one call of ``fn``, after a warm-up call."""
    fn()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def torch_peak(fn) -> int | None:
    """The same for torch, from the profiler's memory timeline (a private API: None when it is unavailable)."""
    try:
        from torch.profiler import ProfilerActivity, profile
        from torch.profiler._memory_profiler import Action
        fn()
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                     with_stack=True) as prof:
            fn()
        current = peak = 0
        for _, action, _, size in prof._memory_profile().timeline:  # pre-existing tensors are not counted
            current += size if action == Action.CREATE else -size if action == Action.DESTROY else 0
            peak = max(peak, current)
        return peak
    except Exception:  # noqa: BLE001  (any failure of the private API just means "not measured")
        return None


# -- the run ----------------------------------------------------------------------------------------------------------
def measured_peak(dtype: str, threads: int, seconds: float = 0.5) -> float:
    """GFLOP/s of the best GEMM this machine runs: the larger of SciPy's BLAS on a 2048 x 2048 product with
    ``threads`` threads and ``threads`` times lstmcore's own small GEMM (AVX-512 where the CPU has it) on a 256 x 512 x
    512 one; the practical peak against which the LSTM's rate is read."""
    from scipy.linalg.blas import dgemm, sgemm

    from lstmcore._kernels import _blas

    def best_rate(fn, flop):
        best = math.inf
        fn()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or best == math.inf:
            start = CLOCK()
            fn()
            best = min(best, CLOCK() - start)
        return flop / best / 1e9

    rng = np.random.default_rng(0)
    n = 2048
    a, b = (np.asfortranarray(rng.standard_normal((n, n)).astype(dtype)) for _ in range(2))
    gemm = sgemm if dtype == "float32" else dgemm
    with threadpool_limits(limits=threads):
        blas = best_rate(lambda: gemm(1.0, a, b), 2 * n ** 3)
    m, k = 256, 512
    A, B, C = (rng.standard_normal(shape).astype(dtype) for shape in ((m, k), (k, k), (m, k)))
    own = threads * best_rate(lambda: _blas.small_gemm_py(A, B, C), 2 * m * k * k)
    return max(blas, own)


def nominal_gflop(B, T, I, H) -> float:
    return 2 * T * B * 4 * H * (I + H) / 1e9


def work_per_step(layer, I, H) -> int:
    """A cell's work per step and sequence element (docs/cells.md): one multiply-add per parameter."""
    return layer.cells[0].parameter_count(I, H)


def per_work(a, work_a, b, work_b) -> str:
    """(a's time per unit of work) / (b's)."""
    return "n/a" if a is None or b is None else f"{a['median'] / work_a / (b['median'] / work_b):.3g}"


def run(args) -> list[dict]:
    budget, max_samples = (0.1, 10) if args.quick else (0.4, 100)
    results = []
    args.peak = {(dtype, threads): measured_peak(dtype, threads) for dtype in args.dtype for threads in args.threads}

    def timed(fn):
        return measure(fn, budget, max_samples, args.retries, args.max_wait)

    for dtype in args.dtype:
        for threads in args.threads:
            with threadpool_limits(limits=threads):
                if torch is not None:
                    torch.set_num_threads(threads)
                for name in args.configs:
                    B, T, I, H = CONFIGS[name]
                    rng = np.random.default_rng(0)
                    x = rng.standard_normal((T, B, I)).astype(dtype)
                    d_out = rng.standard_normal((T, B, H)).astype(dtype)
                    base = {"config": name, "B": B, "T": T, "I": I, "H": H, "dtype": dtype, "threads": threads}
                    torch_row = {}
                    if torch is not None:
                        t_fwd, t_fb = torch_calls(x, d_out, H)
                        torch_row = {"torch_fwd": timed(t_fwd), "torch_fwd_bwd": timed(t_fb)}
                        if args.memory and threads == args.threads[0]:
                            torch_row["torch_mem"] = torch_peak(t_fb)
                    for variant in args.variants:
                        print(f"[{dtype} {threads}t] {name} {variant}", file=sys.stderr, flush=True)
                        layer = lstmcore.LSTM(I, H, variant=variant, dtype=dtype, seed=0)
                        o_fwd, o_fb = ours_calls(layer, x, d_out)
                        n_fwd, n_fb = numpy_calls(layer, x, d_out)
                        row = dict(base, variant=variant, **torch_row, fwd=timed(o_fwd), fwd_bwd=timed(o_fb),
                                   work=work_per_step(layer, I, H))
                        if n_fb is not None:
                            row.update(numpy_fwd=timed(n_fwd), numpy_fwd_bwd=timed(n_fb))
                        if args.memory and threads == args.threads[0]:
                            row["mem"] = traced_peak(o_fb)
                            row["numpy_mem"] = traced_peak(n_fb) if n_fb is not None else None
                        results.append(row)
    return results


# -- reporting --------------------------------------------------------------------------------------------------------
def ms(m) -> str:
    return "n/a" if m is None else f"{m['median'] * 1e3:.3g}{'*' if m['suspect'] else ''}"


def ratio(a, b) -> str:
    return "n/a" if a is None or b is None else f"{a['median'] / b['median']:.3g}"


def mib(n) -> str:
    return "n/a" if n is None else f"{n / 2**20:.3g}"


def table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def report(results, args) -> str:
    out = []
    for dtype in args.dtype:
        for threads in args.threads:
            rows = []
            for r in (r for r in results if r["dtype"] == dtype and r["threads"] == threads):
                gf = nominal_gflop(r["B"], r["T"], r["I"], r["H"])
                peak = args.peak[dtype, threads]
                rate_fwd, rate_fb = gf / r["fwd"]["median"], 3 * gf / r["fwd_bwd"]["median"]
                rows.append([f"{r['config']} B{r['B']} T{r['T']} I{r['I']} H{r['H']}", r["variant"], ms(r["fwd"]),
                             ms(r["fwd_bwd"]), f"{rate_fwd:.3g} ({rate_fwd / peak:.0%})",
                             f"{rate_fb:.3g} ({rate_fb / peak:.0%})", ms(r.get("torch_fwd")),
                             ms(r.get("torch_fwd_bwd")), ratio(r["fwd"], r.get("torch_fwd")),
                             ratio(r["fwd_bwd"], r.get("torch_fwd_bwd")), ms(r.get("numpy_fwd_bwd")),
                             ratio(r["fwd_bwd"], r.get("numpy_fwd_bwd"))])
            out.append(f"### {dtype}, {threads} thread{'s' if threads > 1 else ''} (measured peak "
                       f"{args.peak[dtype, threads]:.0f} GFLOP/s)\n\n" + table(
                ["config", "variant", "fwd ms", "fwd+bwd ms", "GFLOP/s fwd (% peak)", "GFLOP/s f+b (% peak)",
                 "torch fwd ms",
                 "torch f+b ms", "÷torch fwd", "÷torch f+b", "numpy f+b ms", "÷numpy f+b"], rows))
        if args.memory:
            rows = [[r["config"], r["variant"], mib(r["mem"]), mib(r["numpy_mem"]), mib(r.get("torch_mem"))]
                    for r in results if r["dtype"] == dtype and "mem" in r]
            out.append(f"### Extra memory of one forward+backward, {dtype} (MiB)\n\n"
                       + table(["config", "variant", "ours", "numpy", "torch"], rows))
    if len(args.variants) > 1 and "vanilla" in args.variants:
        for dtype in args.dtype:
            for threads in args.threads:
                key = {(r["config"], r["variant"]): r for r in results
                       if r["dtype"] == dtype and r["threads"] == threads}
                rows = []
                for (c, v), r in key.items():
                    if v == "vanilla" or (c, "vanilla") not in key:
                        continue
                    van = key[c, "vanilla"]
                    rows.append([c, v, ratio(r["fwd"], van["fwd"]), ratio(r["fwd_bwd"], van["fwd_bwd"]),
                                 f"{r['work'] / van['work']:.3g}",
                                 per_work(r["fwd"], r["work"], van["fwd"], van["work"]),
                                 per_work(r["fwd_bwd"], r["work"], van["fwd_bwd"], van["work"])])
                out.append(f"### Variant time / vanilla time, {dtype}, {threads} thread{'s' if threads > 1 else ''} "
                           "(targets: at most 1.15, fgr 1.6; per unit of work, the family's cells: at most 1.25)"
                           "\n\n" + table(["config", "variant", "fwd", "fwd+bwd", "work ÷ vanilla's",
                                            "per work fwd", "per work f+b"], rows))
    if {"float32", "float64"} <= set(args.dtype):
        for threads in args.threads:
            key = {(r["config"], r["variant"], r["dtype"]): r for r in results if r["threads"] == threads}
            rows = [[c, v, ratio(r64["fwd"], key[c, v, "float32"]["fwd"]),
                     ratio(r64["fwd_bwd"], key[c, v, "float32"]["fwd_bwd"])]
                    for (c, v, d), r64 in key.items() if d == "float64" and (c, v, "float32") in key]
            out.append(f"### float64 time / float32 time, {threads} thread{'s' if threads > 1 else ''} "
                       "(target: at most 2.2)\n\n" + table(["config", "variant", "fwd", "fwd+bwd"], rows))
    return "\n\n".join(out) + (f"\n\n`*`: still noisy (IQR > {NOISY:.0%} of the median) or disturbed (other processes "
                                f"used >= {BUSY} CPU) after {args.retries} retries; rerun that config.\n")


def _sh(*cmd) -> str:
    try:
        return subprocess.run(cmd, cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def environment() -> str:
    cpu = _sh("sed", "-n", "s/^model name[^:]*: //p;T;q", "/proc/cpuinfo") or platform.machine()
    commit = (_sh("git", "rev-parse", "--short", "HEAD") or "?") + (
        "+dirty" if _sh("git", "status", "--porcelain", "--", "../lstmcore", "../variants") else "")
    blas = ", ".join(sorted({f"{i['internal_api']} {i.get('version') or ''} {i.get('architecture') or ''}".strip()
                             for i in threadpool_info()}))
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    blas += f" (OPENBLAS_CORETYPE={coretype})" if coretype else ""
    return (f"lstmcore {lstmcore.__version__} (git {commit}), numpy {np.__version__}, "
            f"torch {torch.__version__ if torch is not None else 'n/a'}, Python {platform.python_version()}, "
            f"{cpu} ({os.cpu_count()} CPUs); thread pools: {blas}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma list or 'all' (default {DEFAULT_VARIANTS})")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)} (default all)")
    p.add_argument("--threads", default="2,1", help="comma list of thread counts (default 2,1)")
    p.add_argument("--dtype", default="float32", help="float32, float64 or float32,float64 (default float32)")
    p.add_argument("--quick", action="store_true", help="short time budget and few repeats per measurement")
    p.add_argument("--retries", type=int, default=4, help="re-measure a noisy or disturbed timing up to N times")
    p.add_argument("--max-wait", type=float, default=30.0, help="seconds to wait for a quiet machine before a retry")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the extra-memory measurement")
    p.add_argument("--cpu-time", action="store_true",
                   help="time the calling thread's CPU time (with --threads 1: immune to other jobs)")
    p.add_argument("--json", metavar="PATH", help="also save the raw results (seconds, bytes) as JSON")
    args = p.parse_args(argv)
    args.variants = lstmcore.list_variants() if args.variants == "all" else args.variants.split(",")
    args.configs = args.configs.split(",")
    args.threads = [int(n) for n in args.threads.split(",")]
    args.dtype = args.dtype.split(",")
    for name in args.configs:
        if name not in CONFIGS:
            p.error(f"unknown config {name!r}; choose from {', '.join(CONFIGS)}")
    for name in args.variants:
        if name not in lstmcore.list_variants():
            p.error(f"unknown variant {name!r}; registered: {', '.join(lstmcore.list_variants())}")
    if not set(args.dtype) <= {"float32", "float64"} or any(n < 1 for n in args.threads):
        p.error("--dtype takes float32 and/or float64, --threads positive integers")
    if args.cpu_time and args.threads != [1]:
        p.error("--cpu-time measures one thread: use it with --threads 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    global CLOCK
    CLOCK = time.thread_time if args.cpu_time else time.perf_counter
    results = run(args)
    print(f"lstm benchmark: {' '.join(sys.argv[1:]) or '(defaults)'}\n\n{environment()}\n\n{report(results, args)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": environment(), "results": results}, indent=1))


if __name__ == "__main__":
    main()

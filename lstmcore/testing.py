"""Conformance kit for variant authors: does a ``lstmcore.Variant`` keep the contract ``lstmcore.LSTM`` relies on?

Run it in your plugin's own test suite::

    from lstmcore.testing import assert_conforms, check_variant

    def test_my_cell_conforms():
        assert_conforms(MyCell())            # or a registered name: assert_conforms("my-cell")

    report = check_variant("my-cell")        # a ConformanceReport; print(report) shows a table of every check

Every check runs the variant the way users run it, through ``lstmcore.LSTM``: a single layer, and a stack of two
bidirectional layers fed a padded batch (``lengths`` with a full-length, a partial and an empty sequence). The checks:

=================================  =====================================================================================
``interface``                      a ``Variant`` with a name and ``state_names``; ``parameter_shapes`` well formed;
                                   ``parameter_count`` = the sum of the shapes; ``init_parameters`` gives the declared
                                   shapes in the requested dtype, finite
``shapes-dtypes``                  through the layer, float32 and float64: output ``(T, B, D*H)``, one final state per
                                   state name ``(L*D, B, H)``, ``d_x`` like ``x``, ``grads`` keys, shapes and dtypes
                                   = ``params``'; the layer's parameters are the declared ones; ``parameter_count``
                                   agrees with the layer's
``contract``                       what each ``forward``/``backward`` call gets and returns: ``params`` keys as
                                   declared; every entry of ``out`` written (zeros past a length); ``d_x`` overwritten
                                   when ``accumulate_dx`` is false; returned states and grads of the right
                                   count, shape and dtype
``gradient-single``                central finite differences (float64) of a random linear loss on the output and the
                                   final states, for EVERY parameter entry, every entry of ``x`` and of the initial
                                   state(s), against ``layer.backward`` (one layer)
``gradient-stacked``               the same, two bidirectional layers with ``lengths``
``float32-float64``                the float32 layer (same weights, cast) agrees with float64: outputs, final states,
                                   ``d_x``, grads, state grads
``determinism``                    the same ``seed`` gives identical parameters, outputs and gradients; another seed
                                   gives other parameters; calling the layer twice gives the same result
``lengths-zero-past-end``          outputs, and ``d_x``, are zero past each sequence's length
``lengths-final-state``            each sequence's final state and outputs equal running it alone, truncated to its
                                   length (so the reverse direction starts at its last real step)
``lengths-zero-length``            a sequence of length 0 returns its initial state and zero outputs
``lengths-reverse``                the reverse direction with lengths equals the forward direction (same weights) run
                                   on each sequence reversed within its length
``lengths-padding``                the values past a length change nothing; lengths all equal to T = no lengths
``inputs-unchanged``               ``x``, the state, ``lengths``, ``params``, ``d_output`` and the state gradients are
                                   unchanged by ``forward`` and ``backward``
``inputs-read-only``               the same works when all of them are read-only arrays, with the same results
=================================  =====================================================================================

A check that raises is reported as failed with the exception and the line of the variant's code it came from.
``check_variant(..., checks=["gradient", "lengths-reverse"])`` runs a subset (a check's name, or the part of it before
the first ``-``).
"""
from __future__ import annotations

import math
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from lstmcore._validation import positive_int
from lstmcore.layers import LSTM
from lstmcore.plugins import get_variant
from lstmcore.variant import Variant

__all__ = ["check_variant", "assert_conforms", "numerical_gradient", "ConformanceReport", "CheckResult",
           "DEFAULT_TOLERANCE", "CHECKS"]

#: Default tolerances: ``gradient`` bounds ``|analytic - numeric| / max(1, |analytic|, |numeric|)`` per entry (central
#: differences, step ``1e-6``, float64); ``float32`` bounds ``max|a32 - a64| / max(1, max|a64|)`` per array;
#: ``consistency`` bounds the same measure between two float64 runs that must agree (other batch composition, other
#: direction, other padding), which only differ by rounding.
DEFAULT_TOLERANCE = {"gradient": 1e-6, "float32": 1e-4, "consistency": 1e-9}
_FD_STEP = 1e-6


# ---------------------------------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class CheckResult:
    """One named check: ``passed`` and a one-line ``message`` (the largest error and where, or what went wrong)."""

    name: str
    passed: bool
    message: str
    seconds: float = 0.0

    @property
    def status(self) -> str:
        return "ok" if self.passed else "FAIL"


@dataclass
class ConformanceReport:
    """The result of ``check_variant``: a list of ``CheckResult``; ``ok`` when all passed."""

    variant: str
    settings: dict[str, Any]
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.checks]

    def __getitem__(self, name: str) -> CheckResult:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"no check named {name!r}; checks: {', '.join(self.names)}")

    def __iter__(self):
        return iter(self.checks)

    def __len__(self) -> int:
        return len(self.checks)

    def raise_if_failed(self) -> "ConformanceReport":
        """Raise ``AssertionError`` with the whole report unless every check passed; returns the report otherwise."""
        if not self.ok:
            raise AssertionError("\n" + str(self))
        return self

    def __str__(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        width = max([len(c.name) for c in self.checks] + [5])
        lines = [f"lstmcore conformance of variant {self.variant!r} ({settings})",
                 f"  {'check':<{width}}  {'result':<6}  {'time':>6}  detail",
                 f"  {'-' * width}  {'-' * 6}  {'-' * 6}  {'-' * 40}"]
        indent = " " * (width + 2 + 6 + 2 + 6 + 4)
        for c in self.checks:
            first, *rest = c.message.splitlines() or [""]
            lines.append(f"  {c.name:<{width}}  {c.status:<6}  {c.seconds:5.2f}s  {first}")
            lines += [indent + line for line in rest]
        failed = len(self.failures)
        lines.append(f"{len(self.checks) - failed} passed, {failed} failed"
                     + ("" if not failed else ": " + ", ".join(c.name for c in self.failures)))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"<ConformanceReport {self.variant!r}: {len(self.checks) - len(self.failures)} passed, "
                f"{len(self.failures)} failed>")


class CheckFailed(Exception):
    """Raised inside a check with the message to report."""


# ---------------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------------
def _fmt(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else str(value)


def _where(name: str, shape: tuple, flat_index: int) -> str:
    """``name[i, j]`` for an entry of an array called ``name`` (``name at [i, j]`` if the name is already indexed)."""
    if not shape:
        return name
    index = ", ".join(str(int(i)) for i in np.unravel_index(flat_index, shape))
    return f"{name} at [{index}]" if name.endswith("]") else f"{name}[{index}]"


def _scaled_error(actual, expected) -> tuple[float, int]:
    """max |actual - expected| / max(1, max|expected|) and the flat index of the worst entry (NaN counts as inf)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.size == 0:
        return 0.0, 0
    diff = np.abs(actual - expected)
    diff = np.where(np.isnan(diff), np.inf, diff)
    scale = max(1.0, float(np.max(np.abs(np.nan_to_num(expected, posinf=0.0, neginf=0.0)))))
    idx = int(np.argmax(diff))
    return float(diff.reshape(-1)[idx]) / scale, idx


class _Compare:
    """Collects array comparisons and reports the worst one."""

    def __init__(self, tolerance: float, what: str = "max error"):
        self.tolerance = tolerance
        self.what = what
        self.worst = (-1.0, "", None, None)
        self.count = 0

    def __call__(self, name: str, actual, expected) -> None:
        actual, expected = np.asarray(actual), np.asarray(expected)
        if actual.shape != expected.shape:
            raise CheckFailed(f"{name}: shape {actual.shape}, expected {expected.shape}")
        err, idx = _scaled_error(actual, expected)
        self.count += 1
        if err > self.worst[0]:
            where = _where(name, actual.shape, idx)
            self.worst = (err, where, actual.reshape(-1)[idx] if actual.size else None,
                          expected.reshape(-1)[idx] if expected.size else None)

    def finish(self, passed_text: str = "") -> str:
        err, where, got, want = self.worst
        if err > self.tolerance:
            raise CheckFailed(f"{self.what} {_fmt(err)} > {self.tolerance:g} at {where}: got {float(got):.7g}, "
                              f"expected {float(want):.7g}")
        detail = f"{self.what} {_fmt(max(err, 0.0))}" + (f" at {where}" if err > 0 else "")
        return f"{passed_text}{'; ' if passed_text else ''}{detail} (tolerance {self.tolerance:g})"


def _summarise(problems: list[str], limit: int = 2) -> str:
    """The first ``limit`` distinct problems, and how many more there are."""
    problems = list(dict.fromkeys(problems))
    text = "; ".join(problems[:limit])
    return text + (f"; and {len(problems) - limit} more" if len(problems) > limit else "")


def _exception_message(exc: BaseException) -> str:
    """``TypeError: message (at file.py:123 in forward)``, pointing at the innermost frame outside this module and
    NumPy (the variant's line that called ``np.clip(x, out=x)``, not NumPy's)."""
    text = f"raised {type(exc).__name__}: {exc}".strip()
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename) != _THIS_FILE
              and not os.path.abspath(f.filename).startswith(_NUMPY_DIR)]
    if frames:
        f = frames[-1]
        text += f" (at {os.path.basename(f.filename)}:{f.lineno} in {f.name})"
    return text


_THIS_FILE = os.path.abspath(__file__)
_NUMPY_DIR = os.path.dirname(os.path.abspath(np.__file__)) + os.sep


# ---------------------------------------------------------------------------------------------------------------------
# a probe around the variant: what the layer hands it and what it hands back
# ---------------------------------------------------------------------------------------------------------------------
class _Probe(Variant):
    """Wraps a variant to check every ``forward``/``backward`` call against the interface; problems go to ``log``."""

    def __init__(self, inner: Variant, log: list[str], input_size: int, hidden_size: int):
        self.inner = inner
        self.log = log
        self.name = inner.name
        self.state_names = tuple(inner.state_names)
        self.description = getattr(inner, "description", "")
        self._sizes = (input_size, hidden_size)

    def with_options(self, **options):
        return _Probe(self.inner.with_options(**options), self.log, *self._sizes) if options else self

    def parameter_shapes(self, input_size, hidden_size):
        return self.inner.parameter_shapes(input_size, hidden_size)

    def parameter_count(self, input_size, hidden_size):
        return self.inner.parameter_count(input_size, hidden_size)

    def init_parameters(self, input_size, hidden_size, rng, dtype=np.float32):
        return self.inner.init_parameters(input_size, hidden_size, rng, dtype)

    def _problem(self, text: str) -> None:
        if text not in self.log:
            self.log.append(text)

    def forward(self, params, x, state, lengths, reverse, out):
        T, B, I = x.shape
        H = out.shape[2]
        declared = self.inner.parameter_shapes(I, H)
        if set(params) != set(declared):
            hint = ""
            if any("_l" in k for k in declared):
                hint = (" (lstmcore.LSTM drops parameters whose name contains '_l', which it cannot tell from its "
                        "'_l{k}' layer suffix)")
            self._problem(f"forward received params {sorted(params)} but parameter_shapes declares "
                          f"{sorted(declared)}{hint}")
        out.fill(np.nan)  # the variant must write every entry, zeros past a length included
        result = self.inner.forward(params, x, state, lengths, reverse, out)
        if np.isnan(out).any():
            t, b, _ = np.argwhere(np.isnan(out))[0]
            self._problem(f"forward(reverse={bool(reverse)}) left out[{t}, {b}] unwritten: write every entry of out, "
                          f"zeros past a sequence's length")
        if not (isinstance(result, tuple) and len(result) == 2):
            self._problem(f"forward must return (final_state, cache), got {type(result).__name__}")
            return result
        final, _ = result
        self._check_states(final, "forward's final_state", B, H, x.dtype)
        return result

    def backward(self, params, cache, d_out, d_state, d_x, accumulate_dx):
        if not accumulate_dx:
            d_x.fill(np.nan)  # with accumulate_dx false the variant must overwrite d_x
        result = self.inner.backward(params, cache, d_out, d_state, d_x, accumulate_dx)
        if np.isnan(d_x).any():
            t, b, _ = np.argwhere(np.isnan(d_x))[0]
            self._problem(f"backward(accumulate_dx={accumulate_dx}) left d_x[{t}, {b}] unwritten" +
                          (": with accumulate_dx false, write (do not add to) every entry of d_x"
                           if not accumulate_dx else ""))
        if not (isinstance(result, tuple) and len(result) == 2):
            self._problem(f"backward must return (d_initial_state, grads), got {type(result).__name__}")
            return result
        d_init, grads = result
        B, H = d_out.shape[1], d_out.shape[2]
        self._check_states(d_init, "backward's d_initial_state", B, H, d_out.dtype)
        if not isinstance(grads, Mapping):
            self._problem(f"backward's grads must be a dict keyed like params, got {type(grads).__name__}")
        else:
            if set(grads) != set(params):
                self._problem(f"backward's grads have keys {sorted(grads)}, params have {sorted(params)}")
            for k in params:
                g = grads.get(k)
                if g is None:
                    continue
                if not isinstance(g, np.ndarray) or g.shape != params[k].shape or g.dtype != params[k].dtype:
                    self._problem(f"grads[{k!r}] is {_describe(g)}, params[{k!r}] is {_describe(params[k])}")
        return result

    def _check_states(self, states, what, B, H, dtype):
        n = len(self.state_names)
        if not isinstance(states, (tuple, list)) or len(states) != n:
            self._problem(f"{what} must be a tuple of {n} array(s) {self.state_names}, got {_describe(states)}")
            return
        for name, s in zip(self.state_names, states):
            if not isinstance(s, np.ndarray) or s.shape != (B, H) or s.dtype != dtype:
                self._problem(f"{what} {name!r} is {_describe(s)}, expected ({B}, {H}) {np.dtype(dtype)}")


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.shape} {value.dtype}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return type(value).__name__


# ---------------------------------------------------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------------------------------------------------
class _Context:
    """The variant, the sizes and the random data shared by the checks."""

    def __init__(self, variant: Variant, options: dict, I: int, H: int, T: int, B: int, seed: int, tol: dict):
        self.variant, self.options = variant, options
        self.I, self.H, self.T, self.B, self.seed, self.tol = I, H, T, B, seed, tol
        self.n_states = len(variant.state_names)
        # a padded batch for the checks with lengths: a partial, an empty and a full sequence, then random lengths
        self.B_len = max(B, 3)
        partial = max(1, T // 2 + 1) if T > 1 else T
        extra = np.random.default_rng([seed, 7]).integers(0, T + 1, size=max(0, self.B_len - 3))
        self.lengths = np.array([partial, 0, T, *extra], dtype=np.int32)

    def rng(self, *stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, *stream])

    def layer(self, *, stacked=False, dtype=np.float64, seed=None, variant=None, check_finite=True) -> LSTM:
        kw = dict(num_layers=2, bidirectional=True) if stacked else {}
        return LSTM(self.I, self.H, variant=variant or self.variant, dtype=dtype,
                    seed=self.seed if seed is None else seed, check_finite=check_finite, **kw, **self.options)

    def data(self, layer: LSTM, B: int, stream: int, dtype=np.float64):
        """Random x, initial state(s) and loss coefficients (d_output, d_states) for ``layer``."""
        rng = self.rng(stream)
        LD = layer.num_layers * layer.num_directions
        x = rng.standard_normal((self.T, B, self.I))
        state = tuple(0.5 * rng.standard_normal((LD, B, self.H)) for _ in range(self.n_states))
        d_out = rng.standard_normal((self.T, B, layer.num_directions * self.H))
        d_states = tuple(rng.standard_normal((LD, B, self.H)) for _ in range(self.n_states))
        cast = (lambda a: np.ascontiguousarray(a, dtype=dtype))
        return cast(x), tuple(map(cast, state)), cast(d_out), tuple(map(cast, d_states))


def _run(layer: LSTM, x, state, lengths, d_out, d_states):
    """forward + backward; returns (output, finals, d_x, grads, state_grads), all copied."""
    output, finals = layer(x, state, lengths=lengths)
    output, finals = output.copy(), tuple(f.copy() for f in finals)
    d_x = layer.backward(d_out, *d_states)
    return (output, finals, np.array(d_x, copy=True), {k: v.copy() for k, v in layer.grads.items()},
            tuple(s.copy() for s in layer.state_grads))


def check_interface(ctx: _Context) -> str:
    v = ctx.variant
    problems = []
    if not isinstance(v, Variant):
        raise CheckFailed(f"{v!r} is not a lstmcore.Variant")
    if not isinstance(v.name, str) or not v.name:
        problems.append(f"name must be a non-empty string, got {v.name!r}")
    names = v.state_names
    if not (isinstance(names, tuple) and names and all(isinstance(n, str) and n for n in names)):
        problems.append(f"state_names must be a non-empty tuple of names, got {names!r}")
    elif len(set(names)) != len(names):
        problems.append(f"state_names has duplicates: {names!r}")
    total = 0
    for I, H in ((ctx.I, ctx.H), (ctx.I + 2, ctx.H + 1), (2 * ctx.H, ctx.H)):
        shapes = v.parameter_shapes(I, H)
        if not isinstance(shapes, Mapping) or not shapes:
            problems.append(f"parameter_shapes({I}, {H}) must be a non-empty dict name -> shape, got {shapes!r}")
            continue
        for k, s in shapes.items():
            if not (isinstance(k, str) and k.isidentifier()):
                problems.append(f"parameter name {k!r} is not an identifier")
            if not (isinstance(s, tuple) and all(isinstance(d, (int, np.integer)) and d > 0 for d in s)):
                problems.append(f"parameter_shapes({I}, {H})[{k!r}] = {s!r} is not a tuple of positive ints")
        expected = int(sum(math.prod(s) for s in shapes.values()))
        count = v.parameter_count(I, H)
        if count != expected:
            problems.append(f"parameter_count({I}, {H}) = {count}, but the shapes of parameter_shapes add up to "
                            f"{expected}")
        if (I, H) == (ctx.I, ctx.H):
            total = expected
        for dtype in (np.float32, np.float64):
            values = v.init_parameters(I, H, ctx.rng(1), dtype)
            if not isinstance(values, Mapping) or set(values) != set(shapes):
                problems.append(f"init_parameters({I}, {H}) gives keys {sorted(values) if isinstance(values, Mapping) else values!r}, "
                                f"parameter_shapes declares {sorted(shapes)}")
                continue
            for k, a in values.items():
                a = np.asarray(a)
                if a.shape != tuple(shapes[k]) or a.dtype != np.dtype(dtype):
                    problems.append(f"init_parameters({I}, {H}, dtype={np.dtype(dtype).name})[{k!r}] is "
                                    f"{_describe(a)}, declared {tuple(shapes[k])} {np.dtype(dtype).name}")
                elif not np.isfinite(a).all():
                    problems.append(f"init_parameters({I}, {H})[{k!r}] is not finite")
    if problems:
        raise CheckFailed(_summarise(problems, 3))
    shapes = v.parameter_shapes(ctx.I, ctx.H)
    return (f"state {names}; {len(shapes)} parameter arrays "
            f"({', '.join(f'{k} {tuple(s)}' for k, s in shapes.items())}) = {total} entries")


def check_shapes(ctx: _Context) -> str:
    problems = []
    for stacked in (False, True):
        for dtype in (np.float32, np.float64):
            layer = ctx.layer(stacked=stacked, dtype=dtype)
            L, D, H, I = layer.num_layers, layer.num_directions, ctx.H, ctx.I
            where = f"{'2-layer bidirectional' if stacked else '1 layer'} {np.dtype(dtype).name}"
            expected = {}
            count = 0
            for k in range(L):
                in_size = I if k == 0 else D * H
                for d in range(D):
                    for name, shape in layer.cells[d].parameter_shapes(in_size, H).items():
                        expected[layer.param_name(name, k, d)] = tuple(shape)
                    count += layer.cells[d].parameter_count(in_size, H)
            got = {k: v.shape for k, v in layer.params.items()}
            if got != expected:
                problems.append(f"{where}: layer.params {got} differ from parameter_shapes {expected}")
            if layer.parameter_count() != count:
                problems.append(f"{where}: layer has {layer.parameter_count()} parameters, the variant's "
                                f"parameter_count says {count}")
            for k, v in layer.params.items():
                if v.dtype != np.dtype(dtype):
                    problems.append(f"{where}: params[{k!r}] has dtype {v.dtype}")
            B = ctx.B_len if stacked else ctx.B
            x, state, d_out, d_states = ctx.data(layer, B, 2, dtype)
            lengths = ctx.lengths if stacked else None
            output, finals = layer(x, state, lengths=lengths)
            checks = [("output", output, (ctx.T, B, D * H))]
            if not isinstance(finals, tuple) or len(finals) != ctx.n_states:
                problems.append(f"{where}: the layer returned {_describe(finals)} final states, expected "
                                f"{ctx.n_states} {ctx.variant.state_names}")
                finals = ()
            checks += [(f"final {n}_n", f, (L * D, B, H)) for n, f in zip(ctx.variant.state_names, finals)]
            d_x = layer.backward(d_out, *d_states)
            checks.append(("d_x", d_x, (ctx.T, B, I)))
            checks += [(f"state_grads {n}_0", s, (L * D, B, H))
                       for n, s in zip(ctx.variant.state_names, layer.state_grads)]
            if set(layer.grads) != set(layer.params):
                problems.append(f"{where}: grads keys {sorted(layer.grads)} != params keys {sorted(layer.params)}")
            checks += [(f"grads[{k!r}]", g, layer.params[k].shape) for k, g in layer.grads.items() if k in layer.params]
            for name, arr, shape in checks:
                if not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype != np.dtype(dtype):
                    problems.append(f"{where}: {name} is {_describe(arr)}, expected {shape} {np.dtype(dtype).name}")
    if problems:
        raise CheckFailed(_summarise(problems))
    return "output, final states, d_x, grads and state grads as documented (float32, float64; 1 and 2x2 layers)"


def check_contract(ctx: _Context) -> str:
    log: list[str] = []
    for stacked in (False, True):
        for dtype in (np.float32, np.float64):
            probe = _Probe(ctx.variant, log, ctx.I, ctx.H)
            layer = ctx.layer(stacked=stacked, dtype=dtype, variant=probe, check_finite=False)
            B = ctx.B_len if stacked else ctx.B
            x, state, d_out, d_states = ctx.data(layer, B, 3, dtype)
            layer(x, state, lengths=ctx.lengths if stacked else None)
            layer.backward(d_out, *d_states)
    if log:
        raise CheckFailed(_summarise(log))
    return "forward/backward receive and return what the interface says; out and d_x fully written"


def numerical_gradient(loss: Callable[[], float], array: np.ndarray, eps: float = _FD_STEP) -> np.ndarray:
    """d loss / d array by central differences, ``(loss(a + eps) - loss(a - eps)) / (2 eps)`` entry by entry.

    ``array`` is perturbed in place (and restored), so ``loss`` must read it: pass the very array a layer or model
    uses (``layer.params["W_l0"]``, the input you feed). Use float64 arrays; the result is float64 of ``array``'s shape.
    """
    flat = array.reshape(-1)
    if not np.shares_memory(flat, array):
        raise ValueError("numerical_gradient needs a contiguous array it can perturb in place")
    grad = np.empty(flat.size)
    for j in range(flat.size):
        orig = flat[j]
        flat[j] = orig + eps
        plus = loss()
        flat[j] = orig - eps
        minus = loss()
        flat[j] = orig
        grad[j] = (plus - minus) / (2 * eps)
    return grad.reshape(array.shape)


def _gradient_check(ctx: _Context, stacked: bool) -> str:
    tol = ctx.tol["gradient"]
    layer = ctx.layer(stacked=stacked, dtype=np.float64, check_finite=False)
    B = ctx.B_len if stacked else ctx.B
    lengths = ctx.lengths if stacked else None
    x, state, c_out, c_states = ctx.data(layer, B, 4 if stacked else 5)
    state = tuple(s.copy() for s in state)

    def loss() -> float:
        output, finals = layer(x, state, lengths=lengths)
        total = float(np.vdot(c_out, output))
        for c, f in zip(c_states, finals):
            total += float(np.vdot(c, f))
        return total

    loss()
    d_x = layer.backward(c_out, *c_states)
    analytic = {k: np.array(g, dtype=np.float64) for k, g in layer.grads.items()}
    missing = set(layer.params) - set(analytic)
    if missing:
        raise CheckFailed(f"layer.grads lacks {sorted(missing)}")
    analytic["x"] = np.array(d_x, dtype=np.float64)
    targets = dict(layer.params)
    targets["x"] = x
    for n, s, g in zip(ctx.variant.state_names, state, layer.state_grads):
        targets[f"{n}_0"] = s
        analytic[f"{n}_0"] = np.array(g, dtype=np.float64)

    worst = (-1.0, "", 0.0, 0.0)
    bad, total = 0, 0
    for name, array in targets.items():
        a = analytic[name]
        if a.shape != array.shape:
            raise CheckFailed(f"the gradient of {name} has shape {a.shape}, {name} has {array.shape}")
        numeric = numerical_gradient(loss, array).reshape(-1)
        a = a.reshape(-1)
        errors = np.abs(a - numeric) / np.maximum(1.0, np.maximum(np.abs(a), np.abs(numeric)))
        errors[~np.isfinite(errors)] = math.inf
        total += errors.size
        bad += int(np.count_nonzero(errors > tol))
        j = int(np.argmax(errors))
        if errors[j] > worst[0]:
            worst = (float(errors[j]), _where(name, array.shape, j), float(a[j]), float(numeric[j]))
    err, where, a_j, n_j = worst
    if bad:
        raise CheckFailed(f"{bad} of {total} gradient entries off; worst {where}: backward gives {_fmt(a_j)}, "
                          f"finite differences {_fmt(n_j)} (error {_fmt(err)} > {tol:g})")
    return f"{total} entries (params, x, initial state); max error {_fmt(err)} at {where} (tolerance {tol:g})"


def check_gradient_single(ctx: _Context) -> str:
    return _gradient_check(ctx, stacked=False)


def check_gradient_stacked(ctx: _Context) -> str:
    return _gradient_check(ctx, stacked=True) + f"; lengths {ctx.lengths.tolist()}"


def check_float32(ctx: _Context) -> str:
    cmp = _Compare(ctx.tol["float32"], "max scaled difference")
    for stacked in (False, True):
        l64 = ctx.layer(stacked=stacked, dtype=np.float64)
        l32 = ctx.layer(stacked=stacked, dtype=np.float32)
        for k, v in l64.params.items():
            l32.params[k][...] = v
        B = ctx.B_len if stacked else ctx.B
        lengths = ctx.lengths if stacked else None
        data = ctx.data(l64, B, 6)
        r64 = _run(l64, data[0], data[1], lengths, data[2], data[3])
        cast = (lambda a: a.astype(np.float32))
        r32 = _run(l32, cast(data[0]), tuple(map(cast, data[1])), lengths, cast(data[2]), tuple(map(cast, data[3])))
        tag = "stacked " if stacked else ""
        cmp(tag + "output", r32[0], r64[0])
        for n, a, b in zip(ctx.variant.state_names, r32[1], r64[1]):
            cmp(f"{tag}{n}_n", a, b)
        cmp(tag + "d_x", r32[2], r64[2])
        for k in r64[3]:
            cmp(f"{tag}grads[{k}]", r32[3][k], r64[3][k])
        for n, a, b in zip(ctx.variant.state_names, r32[4], r64[4]):
            cmp(f"{tag}d_{n}_0", a, b)
    return cmp.finish(f"{cmp.count} arrays compared")


def check_determinism(ctx: _Context) -> str:
    problems = []
    for stacked in (False, True):
        for dtype in (np.float32, np.float64):
            tag = f"{'2-layer bidirectional' if stacked else '1 layer'} {np.dtype(dtype).name}"
            a = ctx.layer(stacked=stacked, dtype=dtype)
            b = ctx.layer(stacked=stacked, dtype=dtype)
            differ = [k for k in a.params if not np.array_equal(a.params[k], b.params[k])]
            if differ:
                problems.append(f"{tag}: seed={ctx.seed} twice gives different {', '.join(differ)}")
            c = ctx.layer(stacked=stacked, dtype=dtype, seed=ctx.seed + 1)
            if all(np.array_equal(a.params[k], c.params[k]) for k in a.params):
                problems.append(f"{tag}: seeds {ctx.seed} and {ctx.seed + 1} give identical params")
            B = ctx.B_len if stacked else ctx.B
            lengths = ctx.lengths if stacked else None
            x, state, d_out, d_states = ctx.data(a, B, 8, dtype)
            ra = _run(a, x, state, lengths, d_out, d_states)
            ra2 = _run(a, x, state, lengths, d_out, d_states)
            b.params = {k: v.copy() for k, v in a.params.items()}  # identical weights even if the init was not
            rb = _run(b, x, state, lengths, d_out, d_states)
            for other, what in ((ra2, "calling the same layer again"), (rb, "an identical layer")):
                flat_a = [ra[0], *ra[1], ra[2], *ra[3].values(), *ra[4]]
                flat_o = [other[0], *other[1], other[2], *other[3].values(), *other[4]]
                if len(flat_a) != len(flat_o) or not all(np.array_equal(p, q, equal_nan=True)
                                                         for p, q in zip(flat_a, flat_o)):
                    problems.append(f"{tag}: {what} gives different outputs or gradients")
    if problems:
        raise CheckFailed(_summarise(problems))
    return "same seed: identical params, outputs and gradients; another seed: other params"


def _lengths_setup(ctx: _Context, stream: int):
    layer = ctx.layer(stacked=True, dtype=np.float64)
    x, state, d_out, d_states = ctx.data(layer, ctx.B_len, stream)
    return layer, x, state, d_out, d_states


def check_lengths_zero_past_end(ctx: _Context) -> str:
    layer, x, state, d_out, d_states = _lengths_setup(ctx, 9)
    output, _ = layer(x, state, lengths=ctx.lengths)
    d_x = layer.backward(d_out, *d_states)
    for name, arr in (("output", output), ("d_x", d_x)):
        for b, n in enumerate(ctx.lengths):
            tail = arr[n:, b]
            if tail.size and np.any(tail != 0):
                t = n + int(np.argwhere(tail != 0)[0][0])
                raise CheckFailed(f"{name}[{t}, {b}] = {_fmt(float(arr[t, b][arr[t, b] != 0][0]))} is past "
                                  f"length {n} of sequence {b} and should be 0 (lengths {ctx.lengths.tolist()})")
    return f"outputs and d_x zero past each length (lengths {ctx.lengths.tolist()}, 2x2 layers)"


def check_lengths_final_state(ctx: _Context) -> str:
    layer, x, state, _, _ = _lengths_setup(ctx, 10)
    output, finals = layer(x, state, lengths=ctx.lengths)
    cmp = _Compare(ctx.tol["consistency"])
    for b, n in enumerate(ctx.lengths):
        if n == 0:
            continue
        alone_out, alone_finals = layer(np.ascontiguousarray(x[:n, b:b + 1]),
                                        tuple(np.ascontiguousarray(s[:, b:b + 1]) for s in state))
        cmp(f"output[:{n}, {b}]", output[:n, b], alone_out[:, 0])
        for name, f, g in zip(ctx.variant.state_names, finals, alone_finals):
            cmp(f"{name}_n[:, {b}]", f[:, b], g[:, 0])
    return cmp.finish("each sequence alone, truncated to its length, gives its outputs and final states")


def check_lengths_zero_length(ctx: _Context) -> str:
    layer, x, state, _, _ = _lengths_setup(ctx, 11)
    lengths = ctx.lengths.copy()
    lengths[:] = 0
    lengths[0] = ctx.T  # one real sequence next to empty ones
    out_mixed, finals_mixed = layer(x, state, lengths=ctx.lengths)
    out_empty, finals_empty = layer(x, state, lengths=lengths)
    for (out, finals, lens) in ((out_mixed, finals_mixed, ctx.lengths), (out_empty, finals_empty, lengths)):
        for b, n in enumerate(lens):
            if n != 0:
                continue
            for name, f, s in zip(ctx.variant.state_names, finals, state):
                if not np.array_equal(f[:, b], s[:, b]):
                    err, idx = _scaled_error(f[:, b], s[:, b])
                    raise CheckFailed(f"sequence {b} of length 0 (lengths {lens.tolist()}): final {name}_n[:, {b}] "
                                      f"differs from the initial {name}_0 by {_fmt(err)} at "
                                      f"{_where(f'{name}_n[:, {b}]', f[:, b].shape, idx)}")
            if np.any(out[:, b] != 0):
                raise CheckFailed(f"sequence {b} of length 0 (lengths {lens.tolist()}) has non-zero outputs")
    return "a length-0 sequence returns its initial state (exactly) and zero outputs"


def check_lengths_reverse(ctx: _Context) -> str:
    bi = LSTM(ctx.I, ctx.H, variant=ctx.variant, bidirectional=True, dtype=np.float64, seed=ctx.seed, **ctx.options)
    fw = LSTM(ctx.I, ctx.H, variant=ctx.variant, dtype=np.float64, seed=ctx.seed + 1, **ctx.options)
    for k in fw.params:
        fw.params[k][...] = bi.params[k + "_reverse"]
    x, state, _, _ = ctx.data(bi, ctx.B_len, 12)
    x_rev = x.copy()
    for b, n in enumerate(ctx.lengths):
        x_rev[:n, b] = x[:n, b][::-1]
    out_bi, fin_bi = bi(x, state, lengths=ctx.lengths)
    out_fw, fin_fw = fw(x_rev, tuple(np.ascontiguousarray(s[1:2]) for s in state), lengths=ctx.lengths)
    H = ctx.H
    cmp = _Compare(ctx.tol["consistency"])
    for b, n in enumerate(ctx.lengths):
        cmp(f"reverse output[:{n}, {b}]", out_bi[:n, b, H:], out_fw[:n, b][::-1])
    for name, f, g in zip(ctx.variant.state_names, fin_bi, fin_fw):
        cmp(f"reverse {name}_n", f[1], g[0])
    return cmp.finish("the reverse direction = the forward one on each sequence reversed within its length")


def check_lengths_padding(ctx: _Context) -> str:
    layer, x, state, d_out, d_states = _lengths_setup(ctx, 13)
    r1 = _run(layer, x, state, ctx.lengths, d_out, d_states)
    x2 = x.copy()
    noise = ctx.rng(14).standard_normal(x.shape) * 3
    d_out2 = d_out.copy()
    for b, n in enumerate(ctx.lengths):
        x2[n:, b] = noise[n:, b]
        d_out2[n:, b] = noise[n:, b, :1]  # gradients arriving past a length must be ignored too
    r2 = _run(layer, x2, state, ctx.lengths, d_out2, d_states)
    cmp = _Compare(ctx.tol["consistency"])
    for tag, other in (("other padding", r2),):
        cmp(f"{tag}: output", other[0], r1[0])
        for n, a, b in zip(ctx.variant.state_names, other[1], r1[1]):
            cmp(f"{tag}: {n}_n", a, b)
        cmp(f"{tag}: d_x", other[2], r1[2])
        for k in r1[3]:
            cmp(f"{tag}: grads[{k}]", other[3][k], r1[3][k])
    full = np.full_like(ctx.lengths, ctx.T)
    r3 = _run(layer, x, state, full, d_out, d_states)
    r4 = _run(layer, x, state, None, d_out, d_states)
    cmp("lengths=T: output", r3[0], r4[0])
    for n, a, b in zip(ctx.variant.state_names, r3[1], r4[1]):
        cmp(f"lengths=T: {n}_n", a, b)
    cmp("lengths=T: d_x", r3[2], r4[2])
    for k in r4[3]:
        cmp(f"lengths=T: grads[{k}]", r3[3][k], r4[3][k])
    return cmp.finish("values past a length change nothing; lengths all T = no lengths")


def _arrays_of(x, state, lengths, params, d_out, d_states) -> dict[str, np.ndarray]:
    arrays = {"x": x, "lengths": lengths, "d_output": d_out}
    arrays.update({f"state[{i}]": s for i, s in enumerate(state)})
    arrays.update({f"d_state[{i}]": s for i, s in enumerate(d_states)})
    arrays.update({f"params[{k!r}]": v for k, v in params.items()})
    return arrays


def check_inputs_unchanged(ctx: _Context) -> str:
    changed = []
    for stacked in (False, True):
        layer = ctx.layer(stacked=stacked, dtype=np.float64)
        B = ctx.B_len if stacked else ctx.B
        x, state, d_out, d_states = ctx.data(layer, B, 15)
        lengths = ctx.lengths.copy() if stacked else np.full(B, ctx.T, np.int32)
        arrays = _arrays_of(x, state, lengths, layer.params, d_out, d_states)
        before = {k: v.copy() for k, v in arrays.items()}
        layer(x, state, lengths=lengths)
        layer.backward(d_out, *d_states)
        for k, v in arrays.items():
            if not np.array_equal(v, before[k], equal_nan=True):
                idx = int(np.argmax(np.asarray(v != before[k]).reshape(-1)))
                changed.append(f"{_where(k, v.shape, idx)} was {_fmt(float(before[k].reshape(-1)[idx]))}, now "
                               f"{_fmt(float(v.reshape(-1)[idx]))} ({'2x2 layers' if stacked else '1 layer'})")
    if changed:
        raise CheckFailed("forward/backward modified their inputs: " + _summarise(changed, 3))
    return "x, state, lengths, params, d_output and state gradients unchanged"


def check_inputs_read_only(ctx: _Context) -> str:
    cmp = _Compare(0.0, "difference to writable inputs")
    for stacked in (False, True):
        a = ctx.layer(stacked=stacked, dtype=np.float64)
        b = ctx.layer(stacked=stacked, dtype=np.float64)
        b.params = {k: v.copy() for k, v in a.params.items()}
        B = ctx.B_len if stacked else ctx.B
        x, state, d_out, d_states = ctx.data(a, B, 16)
        lengths = ctx.lengths.copy() if stacked else None
        r_w = _run(a, x, state, lengths, d_out, d_states)
        ro = [np.array(v, copy=True) for v in (x, *state, d_out, *d_states)]
        ro_lengths = None if lengths is None else lengths.copy()
        for arr in ro + list(b.params.values()) + ([ro_lengths] if ro_lengths is not None else []):
            arr.setflags(write=False)
        n = ctx.n_states
        r_ro = _run(b, ro[0], tuple(ro[1:1 + n]), ro_lengths, ro[1 + n], tuple(ro[2 + n:]))
        tag = "2x2 layers " if stacked else ""
        cmp(tag + "output", r_ro[0], r_w[0])
        cmp(tag + "d_x", r_ro[2], r_w[2])
        for k in r_w[3]:
            cmp(f"{tag}grads[{k}]", r_ro[3][k], r_w[3][k])
    return cmp.finish("read-only x, state, lengths, params and gradients accepted")


#: name -> check function, in the order they run.
CHECKS: dict[str, Callable[[_Context], str]] = {
    "interface": check_interface,
    "shapes-dtypes": check_shapes,
    "contract": check_contract,
    "gradient-single": check_gradient_single,
    "gradient-stacked": check_gradient_stacked,
    "float32-float64": check_float32,
    "determinism": check_determinism,
    "lengths-zero-past-end": check_lengths_zero_past_end,
    "lengths-final-state": check_lengths_final_state,
    "lengths-zero-length": check_lengths_zero_length,
    "lengths-reverse": check_lengths_reverse,
    "lengths-padding": check_lengths_padding,
    "inputs-unchanged": check_inputs_unchanged,
    "inputs-read-only": check_inputs_read_only,
}


def _tolerances(tolerance) -> dict[str, float]:
    tol = dict(DEFAULT_TOLERANCE)
    if tolerance is None:
        return tol
    if isinstance(tolerance, Mapping):
        unknown = sorted(set(tolerance) - set(tol))
        if unknown:
            raise ValueError(f"unknown tolerance(s) {unknown}; known: {', '.join(tol)}")
        tol.update({k: float(v) for k, v in tolerance.items()})
    else:
        tol["gradient"] = float(tolerance)
    return tol


def _selected(checks: Iterable[str] | None) -> list[str]:
    if checks is None:
        return list(CHECKS)
    wanted = [checks] if isinstance(checks, str) else list(checks)
    groups = {name: name.split("-")[0] for name in CHECKS}
    unknown = [w for w in wanted if w not in CHECKS and w not in groups.values()]
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}; checks: {', '.join(CHECKS)} "
                         f"(or a group: {', '.join(dict.fromkeys(groups.values()))})")
    return [name for name in CHECKS if name in wanted or groups[name] in wanted]


def check_variant(variant_or_name, *, input_size: int = 3, hidden_size: int = 4, steps: int = 5, batch: int = 3,
                  seed: int = 0, tolerance: float | Mapping[str, float] | None = None,
                  raise_on_failure: bool = False, options: Mapping[str, Any] | None = None,
                  checks: Iterable[str] | None = None) -> ConformanceReport:
    """Run the conformance checks on a variant (a registered name or a ``Variant`` instance).

    ``input_size``, ``hidden_size``, ``steps``, ``batch``: the sizes of the test problems (small keeps the
    finite-difference checks fast: every parameter entry is perturbed); the checks with ``lengths`` use a batch of at
    least 3. ``seed`` seeds the layers and the random data. ``tolerance``: a float (the gradient tolerance) or a dict
    overriding some of ``DEFAULT_TOLERANCE``. ``options``: variant options passed to ``lstmcore.LSTM`` (e.g.
    ``{"clip": 3.0}``). ``checks``: run only these checks (names, or groups such as ``"lengths"``).

    Returns a ``ConformanceReport``; with ``raise_on_failure``, raises ``AssertionError`` carrying it if a check failed.
    """
    for value, name in ((input_size, "input_size"), (hidden_size, "hidden_size"), (steps, "steps"), (batch, "batch")):
        positive_int(value, name)
    variant = variant_or_name if isinstance(variant_or_name, Variant) else get_variant(variant_or_name)
    options = dict(options or {})
    label = getattr(variant, "name", repr(variant))
    report = ConformanceReport(
        variant=str(label),
        settings=dict(input_size=input_size, hidden_size=hidden_size, steps=steps, batch=batch, seed=seed,
                      **({"options": options} if options else {})),
    )
    ctx = _Context(variant, options, input_size, hidden_size, steps, batch, seed, _tolerances(tolerance))
    for name in _selected(checks):
        start = time.perf_counter()
        try:
            with np.errstate(all="ignore"):
                message = CHECKS[name](ctx)
            passed = True
        except CheckFailed as exc:
            passed, message = False, str(exc)
        except Exception as exc:  # the variant (or the layer) raised: report it and go on with the other checks
            passed, message = False, _exception_message(exc)
        report.checks.append(CheckResult(name, passed, message, time.perf_counter() - start))
    if raise_on_failure:
        report.raise_if_failed()
    return report


def assert_conforms(variant_or_name, **kwargs) -> ConformanceReport:
    """``check_variant(...)`` that raises ``AssertionError`` with the report when a check fails (for pytest)."""
    __tracebackhide__ = True  # pytest shows the report, not this frame
    kwargs["raise_on_failure"] = False
    report = check_variant(variant_or_name, **kwargs)
    if not report.ok:
        raise AssertionError("\n" + str(report))
    return report

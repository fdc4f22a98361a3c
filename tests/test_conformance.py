"""The conformance kit (``lstmcore.testing``): every built-in variant passes it, and deliberately broken variants fail
it with a message that names the check that caught them."""
from __future__ import annotations

import time

import numpy as np
import pytest

import lstmcore
from lstmcore.testing import CHECKS, ConformanceReport, assert_conforms, check_variant
from variant_names import BUILTIN_VARIANTS, every_variant

BUILTINS = BUILTIN_VARIANTS


@pytest.mark.parametrize("name", every_variant(BUILTINS))
def test_builtin_variant_conforms(name):
    start = time.perf_counter()
    report = assert_conforms(name)
    elapsed = time.perf_counter() - start
    assert report.ok and report.names == list(CHECKS)
    assert elapsed < 6, f"check_variant({name!r}) took {elapsed:.1f} s (budget ~2 s)"


def test_builtin_conforms_with_options_and_other_sizes():
    # kinks (hard_sigmoid, relu, clip) and other sizes: still no false alarm
    report = check_variant("coupled", input_size=2, hidden_size=3, steps=3, batch=1, seed=5,
                           options=dict(gate_activation="hard_sigmoid", input_activation="relu", clip=2.0))
    assert report.ok, str(report)
    assert report.settings["options"]["clip"] == 2.0


# ---------------------------------------------------------------------------------------------------------------------
# deliberately broken variants: each wraps a correct one and breaks one rule
# ---------------------------------------------------------------------------------------------------------------------
class Wrapped(lstmcore.Variant):
    """Delegates everything to a correct variant; subclasses break one thing."""

    def __init__(self, base="vanilla", name=None):
        self.inner = lstmcore.get_variant(base) if isinstance(base, str) else base
        self.name = name or f"broken-{type(self).__name__.lower()}"
        self.state_names = self.inner.state_names

    def parameter_shapes(self, input_size, hidden_size):
        return self.inner.parameter_shapes(input_size, hidden_size)

    def init_parameters(self, input_size, hidden_size, rng, dtype=np.float32):
        return self.inner.init_parameters(input_size, hidden_size, rng, dtype)

    def forward(self, params, x, state, lengths, reverse, out):
        return self.inner.forward(params, x, state, lengths, reverse, out)

    def backward(self, params, cache, d_out, d_state, d_x, accumulate_dx):
        return self.inner.backward(params, cache, d_out, d_state, d_x, accumulate_dx)


class WrongGradient(Wrapped):
    """dE/dR off by 1 % (a typical transposition or missing-term bug is much larger)."""

    def backward(self, *args):
        d_init, grads = super().backward(*args)
        grads["R"] = grads["R"] * 1.01
        return d_init, grads


class IgnoresLengths(Wrapped):
    """Runs every sequence to the end, whatever its length."""

    def forward(self, params, x, state, lengths, reverse, out):
        return super().forward(params, x, state, None, reverse, out)


class WrongStateShape(Wrapped):
    """Returns final states of shape (1, B, H): lstmcore.LSTM broadcasts them in silently."""

    def forward(self, *args):
        final, cache = super().forward(*args)
        return tuple(s[None] for s in final), cache


class WrongGradShape(Wrapped):
    """Returns dE/dW transposed."""

    def backward(self, *args):
        d_init, grads = super().backward(*args)
        grads["W"] = np.ascontiguousarray(grads["W"].T)
        return d_init, grads


class ExtraState(Wrapped):
    """Declares one state (h) but returns two: the layer silently keeps the first."""

    def __init__(self):
        super().__init__()
        self.state_names = ("h",)

    def forward(self, params, x, state, lengths, reverse, out):
        B, H = state[0].shape
        return super().forward(params, x, (state[0], np.zeros((B, H), x.dtype)), lengths, reverse, out)

    def backward(self, params, cache, d_out, d_state, d_x, accumulate_dx):
        d_state = (d_state[0], np.zeros_like(d_state[0]))
        return super().backward(params, cache, d_out, d_state, d_x, accumulate_dx)


class NondeterministicInit(Wrapped):
    """Ignores the generator it is given."""

    def init_parameters(self, input_size, hidden_size, rng, dtype=np.float32):
        return super().init_parameters(input_size, hidden_size, np.random.default_rng(), dtype)


class ModifiesInputs(Wrapped):
    """Clips its input in place (and so also refuses read-only input)."""

    def forward(self, params, x, state, lengths, reverse, out):
        np.clip(x, -1.0, 1.0, out=x)
        return super().forward(params, x, state, lengths, reverse, out)


class IgnoresReverse(Wrapped):
    """Always runs forward in time: its reverse direction is a second forward one."""

    def forward(self, params, x, state, lengths, reverse, out):
        return super().forward(params, x, state, lengths, False, out)


class OverwritesDx(Wrapped):
    """Ignores accumulate_dx: the reverse direction overwrites the forward direction's dE/dx."""

    def backward(self, params, cache, d_out, d_state, d_x, accumulate_dx):
        return super().backward(params, cache, d_out, d_state, d_x, False)


class AccumulatesDx(Wrapped):
    """Always adds to d_x: right only because the layer happens to pass zeros."""

    def backward(self, params, cache, d_out, d_state, d_x, accumulate_dx):
        return super().backward(params, cache, d_out, d_state, d_x, True)


class LeavesPaddingUnwritten(Wrapped):
    """Writes only the real steps of out, relying on the layer's zero-filled buffer."""

    def forward(self, params, x, state, lengths, reverse, out):
        tmp = np.zeros_like(out)
        result = super().forward(params, x, state, lengths, reverse, tmp)
        T = out.shape[0]
        for b, n in enumerate(lengths if lengths is not None else [T] * out.shape[1]):
            out[:n, b] = tmp[:n, b]
        return result


class HalfPrecision(Wrapped):
    """Rounds its weights to float16 in float32 mode (consistent in itself, but not float32-accurate)."""

    @staticmethod
    def _round(params):
        return {k: (v.astype(np.float16).astype(v.dtype) if v.dtype == np.float32 else v) for k, v in params.items()}

    def forward(self, params, *args):
        return super().forward(self._round(params), *args)

    def backward(self, params, *args):
        return super().backward(self._round(params), *args)


class WrongParameterCount(Wrapped):
    def parameter_count(self, input_size, hidden_size):
        return super().parameter_count(input_size, hidden_size) + 1


class GradsInFloat64(Wrapped):
    """Returns its gradients in float64 whatever the layer's dtype."""

    def backward(self, *args):
        d_init, grads = super().backward(*args)
        return d_init, {k: v.astype(np.float64) for k, v in grads.items()}


class LeaksBetweenSequences(Wrapped):
    """Starts the reverse direction at step T-1 for every sequence, padding included (no per-sequence start)."""

    def forward(self, params, x, state, lengths, reverse, out):
        if reverse and lengths is not None:
            lengths = None
        return super().forward(params, x, state, lengths, reverse, out)


# broken variant -> the checks that must catch it
BROKEN = {
    "wrong-gradient": (WrongGradient, {"gradient-single", "gradient-stacked"}),
    "ignores-lengths": (IgnoresLengths, {"lengths-zero-past-end", "lengths-final-state", "lengths-zero-length"}),
    "wrong-state-shape": (WrongStateShape, {"contract"}),
    "wrong-grad-shape": (WrongGradShape, {"shapes-dtypes", "contract"}),
    "extra-state": (ExtraState, {"contract"}),
    "nondeterministic-init": (NondeterministicInit, {"determinism"}),
    "modifies-inputs": (ModifiesInputs, {"inputs-unchanged", "inputs-read-only"}),
    "ignores-reverse": (IgnoresReverse, {"lengths-reverse"}),
    "overwrites-dx": (OverwritesDx, {"gradient-stacked"}),
    "accumulates-dx": (AccumulatesDx, {"contract"}),
    "leaves-padding-unwritten": (LeavesPaddingUnwritten, {"contract"}),
    "half-precision": (HalfPrecision, {"float32-float64"}),
    "wrong-parameter-count": (WrongParameterCount, {"interface", "shapes-dtypes"}),
    "grads-in-float64": (GradsInFloat64, {"shapes-dtypes", "contract"}),
    "reverse-ignores-lengths": (LeaksBetweenSequences, {"lengths-final-state", "lengths-reverse"}),
}


@pytest.fixture(scope="module")
def broken_reports():
    return {key: check_variant(cls()) for key, (cls, _) in BROKEN.items()}


@pytest.mark.parametrize("key", sorted(BROKEN))
def test_broken_variant_fails_the_right_checks(key, broken_reports):
    report = broken_reports[key]
    expected = BROKEN[key][1]
    failed = {c.name for c in report.failures}
    assert not report.ok
    assert expected <= failed, f"expected {sorted(expected)} to fail, got {sorted(failed)}:\n{report}"
    # a single broken rule must not look like everything is broken (except writing into an input: the layer hands
    # the variant read-only copies, so every run raises, at the variant's line)
    if key == "modifies-inputs":
        assert all("read-only" in c.message and "test_conformance.py" in c.message for c in report.failures)
    else:
        assert len(failed) <= len(CHECKS) // 2 + 1, str(report)
    text = str(report)
    for name in expected:
        line = next(line for line in text.splitlines() if line.strip().startswith(name + " "))
        assert "FAIL" in line and len(line.split("FAIL", 1)[1].strip()) > 20, line  # a message, not just FAIL
    with pytest.raises(AssertionError) as info:
        report.raise_if_failed()
    assert all(name in str(info.value) for name in expected)


def test_failure_messages_say_where(broken_reports):
    grad = broken_reports["wrong-gradient"]["gradient-single"].message
    assert "R_l0[" in grad and "finite differences" in grad and "backward gives" in grad
    lengths = broken_reports["ignores-lengths"]["lengths-zero-past-end"].message
    assert "past length" in lengths and "output[" in lengths
    shape = broken_reports["wrong-state-shape"]["contract"].message
    assert "(1, " in shape and "expected" in shape
    det = broken_reports["nondeterministic-init"]["determinism"].message
    assert "seed=0 twice" in det
    mod = broken_reports["modifies-inputs"]
    assert "read-only" in mod["inputs-read-only"].message
    dx = broken_reports["accumulates-dx"]["contract"].message
    assert "accumulate_dx" in dx


def test_assert_conforms_raises_with_the_report():
    with pytest.raises(AssertionError) as info:
        assert_conforms(WrongGradient(), checks=["gradient-single"])
    text = str(info.value)
    assert "gradient-single" in text and "FAIL" in text and "broken-wronggradient" in text


def test_raise_on_failure():
    with pytest.raises(AssertionError, match="determinism"):
        check_variant(NondeterministicInit(), checks="determinism", raise_on_failure=True)
    assert check_variant("vanilla", checks="determinism", raise_on_failure=True).ok


def test_a_variant_that_raises_is_reported_not_propagated():
    class Raises(Wrapped):
        def backward(self, *args):
            raise RuntimeError("backward is not implemented yet")

    report = check_variant(Raises())
    assert not report.ok
    msg = report["gradient-single"].message
    assert "RuntimeError: backward is not implemented yet" in msg and "test_conformance.py" in msg
    assert report["interface"].passed  # the other checks still ran


def test_report_api():
    report = check_variant("vanilla", checks=["interface", "lengths"])
    assert isinstance(report, ConformanceReport)
    assert report.names == ["interface"] + [n for n in CHECKS if n.startswith("lengths-")]
    assert report.ok and report.failures == [] and len(report) == len(report.names)
    assert report["interface"].passed and "entries" in report["interface"].message
    with pytest.raises(KeyError, match="no check named"):
        report["nope"]
    assert "vanilla" in repr(report) and "passed" in str(report)
    assert report.raise_if_failed() is report


def test_arguments_are_validated():
    with pytest.raises(ValueError, match="unknown check"):
        check_variant("vanilla", checks=["gradients"])
    with pytest.raises(ValueError, match="unknown tolerance"):
        check_variant("vanilla", tolerance={"grad": 1e-3})
    with pytest.raises(ValueError, match="hidden_size"):
        check_variant("vanilla", hidden_size=0)
    with pytest.raises(KeyError, match="registered variants"):
        check_variant("no-such-variant")


def test_tolerance_is_used():
    # a 1 % gradient error passes with a tolerance of 5 %, in both spellings
    assert check_variant(WrongGradient(), checks="gradient", tolerance=0.05).ok
    assert check_variant(WrongGradient(), checks="gradient", tolerance={"gradient": 0.05}).ok
    assert not check_variant(HalfPrecision(), checks="float32").ok
    assert check_variant(HalfPrecision(), checks="float32", tolerance={"float32": 0.05}).ok

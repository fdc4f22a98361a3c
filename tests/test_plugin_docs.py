"""The plugin examples of docs/plugins.md run as written: registered through the hook, conforming, and correct."""
import re
import types
from pathlib import Path

import numpy as np
import pytest

import lstmcore
from lstmcore.plugins import Registry
from lstmcore.testing import check_variant

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def _doc_module(marker: str) -> types.ModuleType:
    """The ```python block of docs/plugins.md that contains ``marker``, executed as a module."""
    if not DOC.is_file():
        pytest.skip("docs/plugins.md is not in this tree")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S) if marker in b]
    assert len(blocks) == 1, f"expected one python block with {marker!r} in {DOC}"
    module = types.ModuleType(f"doc_plugin_{abs(hash(marker))}")
    exec(compile(blocks[0], str(DOC), "exec"), module.__dict__)
    return module


@pytest.fixture(scope="module")
def elman():
    return _doc_module("class Elman").Elman()


def _elman_reference(W, R, b, x, h0, lengths, reverse):
    """Step-by-step loop over each sequence on its own."""
    T, B, _ = x.shape
    out = np.zeros((T, B, R.shape[0]))
    h_n = h0.astype(np.float64).copy()
    for r in range(B):
        h = h0[r].astype(np.float64)
        order = range(lengths[r] - 1, -1, -1) if reverse else range(lengths[r])
        for t in order:
            h = np.tanh(W @ x[t, r] + R @ h + b)
            out[t, r] = h
        h_n[r] = h
    return out, h_n


@pytest.mark.parametrize("bidirectional", [False, True])
def test_elman_matches_a_step_by_step_loop(elman, bidirectional):
    rng = np.random.default_rng(3)
    T, B, I, H = 6, 4, 3, 5
    layer = lstmcore.LSTM(I, H, variant=elman, bidirectional=bidirectional, dtype=np.float64, seed=1)
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((layer.num_directions, B, H))
    lengths = np.array([6, 2, 0, 5])
    output, (h_n,) = layer(x, (h0,), lengths=lengths)
    for d, suffix in enumerate(["", "_reverse"][: layer.num_directions]):
        p = {k: layer.params[f"{k}_l0{suffix}"] for k in "WRb"}
        out, hn = _elman_reference(p["W"], p["R"], p["b"], x, h0[d], lengths, reverse=d == 1)
        np.testing.assert_allclose(output[:, :, d * H:(d + 1) * H], out, atol=1e-12)
        np.testing.assert_allclose(h_n[d], hn, atol=1e-12)


def test_elman_passes_the_conformance_kit(elman):
    report = check_variant(elman)
    assert report.ok, str(report)


def test_doc_plugins_register_through_the_hook():
    registry = Registry()
    registry.register_plugin(_doc_module("class Elman"), name="docs-elman")
    registry.register_plugin(_doc_module("CHEAP = "), name="docs-spec")
    assert registry.source("elman") == "docs-elman"
    cheap = registry.get("cifg-np-hardsig")
    assert registry.source("cifg-np-hardsig") == "docs-spec" and cheap.coupled and not cheap.peepholes
    assert not registry.failures
    # the spec runs on the compiled kernel and conforms too
    assert cheap.compiled
    report = check_variant(cheap, checks=["gradient", "lengths"])
    assert report.ok, str(report)

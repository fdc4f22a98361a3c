"""The report's data part (``report_data``): every statistic the report states, computed without matplotlib."""
import math
import sys

import numpy as np
import pytest

pytest.importorskip("optuna")  # the fANOVA importances
pytest.importorskip("sklearn")

from lstmcore.ablation import analysis  # noqa: E402
from lstmcore.ablation.config import StudyConfig  # noqa: E402
from lstmcore.ablation.space import SearchSpace  # noqa: E402


def _row(variant, index, test, lr, state="COMPLETE", status="completed"):
    return {"key": f"{variant}/{index}", "variant": variant, "index": index, "state": state, "status": status,
            "reason": "", "valid": test, "test": test, "metric": "nll", "parameter_count": 100, "epochs": 5,
            "best_epoch": 5, "wall_time": 1.0, "train_time": 0.9, "seed": index, "number": index,
            "params": {"log10_learning_rate": lr}, "hyperparameters": {"learning_rate": 10 ** lr}}


@pytest.fixture
def no_matplotlib(monkeypatch):
    """``import matplotlib`` fails while the test runs, as where matplotlib is not installed."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)


def test_the_statistics_need_no_matplotlib(no_matplotlib):
    from lstmcore.ablation.report import report_data

    rng = np.random.default_rng(1)
    lrs = rng.uniform(-5, -2, 16)
    rows = [_row(variant, i, 10 + (lrs[i] + 2) ** 2 + shift + rng.normal(0, 0.05), lrs[i])
            for variant, shift in (("peephole", 0.0), ("nfg", 1.0)) for i in range(16)]
    rows.append(_row("nfg", 16, None, -3.0, state="FAIL", status="diverged"))
    rows.append(_row("peephole", 17, None, -3.0, state="RUNNING", status=None))
    space = SearchSpace.paper().with_option("momentum=0.9").with_option("input_noise=0") \
        .with_option("hidden_size=20")
    config = StudyConfig(["peephole", "nfg", "vanilla"], trials=18, space=space)
    data = report_data(config, rows, alpha=0.01)

    assert data.variants == ["peephole", "nfg"]  # vanilla has no rows
    assert (data.metric, data.direction, data.baseline, data.alpha) == ("nll", "minimize", "peephole", 0.01)
    assert [(s.variant, s.completed, s.failed) for s in data.summaries] == [("peephole", 16, 0), ("nfg", 16, 1)]
    nfg = [r["test"] for r in rows if r["variant"] == "nfg" and r["test"] is not None]
    assert data.summaries[1].test_mean == pytest.approx(np.mean(nfg))
    paired = next(c for c in data.comparisons if c.test == "paired" and c.trials == "all")
    assert paired.variant == "nfg" and paired.verdict == "worse" and paired.p_adjusted < 0.01
    assert paired.mean_difference == pytest.approx(1.0, abs=0.1)
    assert {c.test for c in data.comparisons} == set(analysis.TESTS)
    assert data.parameters == ["log10_learning_rate"]
    assert data.importances["all variants"] is not None and set(data.importances) == {"peephole", "nfg",
                                                                                       "all variants"}
    assert data.pending == 1 and [r["key"] for r in data.failed_rows] == ["nfg/16"] and data.any_complete
    summary = data.summary(config)
    assert summary["alpha"] == 0.01 and {c["variant"] for c in summary["comparisons"]} == {"nfg"}
    assert all(v is None or not isinstance(v, float) or math.isfinite(v)
               for c in summary["comparisons"] for v in c.values())  # NaN written as null
    with pytest.raises(ImportError):
        import matplotlib  # noqa: F401  (the fixture works: nothing above could have drawn)

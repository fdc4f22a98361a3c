"""Statistics of a study, from its table of trials (``lstmcore.ablation.storage.trial_rows`` or ``trials.json``).

- Per variant: the test metric of every completed trial, and of the best 10 % by validation (at least 2 trials, so a
  test is possible), as in Greff et al. (2017), Fig. 3.
- Each variant against the baseline: Welch's t-test (unequal variances) with the mean difference (variant - baseline)
  and its 95 % confidence interval (Welch-Satterthwaite degrees of freedom), and Mann-Whitney's U test (ranks); in
  the paired design also the paired t-test and Wilcoxon's signed-rank test on the trial indices both variants
  completed, with the Hodges-Lehmann shift and its distribution-free interval for the rank tests (from the exact
  null distribution of the statistic without ties; the normal one for Mann-Whitney beyond 10^4 pairs). p-values are
  adjusted for the number of comparisons by
  Holm's step-down method (family: the variants tested against the baseline, for one trial set and one test); a
  difference is significant when the adjusted p-value is below ``alpha`` (0.05).
- Hyperparameter importance by fANOVA (Optuna's ``FanovaImportanceEvaluator``) on the stored parameters, which are the
  log10 values for the log-scaled hyperparameters.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

ALPHA = 0.05
TOP_FRACTION = 0.10
CORRECTION = "Holm-Bonferroni"


def metric_direction(metric: str | None) -> str:
    """``maximize`` for accuracies, ``minimize`` for every other metric (losses, NLL, error rates)."""
    return "maximize" if metric and "acc" in metric.lower() else "minimize"


def completed(rows, variant: str) -> list[dict]:
    return [r for r in rows if r["variant"] == variant and r["state"] == "COMPLETE" and r.get("test") is not None]


def top_by_validation(rows: list[dict], direction: str, fraction: float = TOP_FRACTION) -> list[dict]:
    """The best ``fraction`` of completed trials by validation metric (at least 2 when there are 2)."""
    if not rows:
        return []
    count = max(min(2, len(rows)), math.ceil(fraction * len(rows)))
    return sorted(rows, key=lambda r: r["valid"] if direction == "minimize" else -r["valid"])[:count]


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given; ``nan`` stays ``nan``)."""
    indexed = [(p, i) for i, p in enumerate(p_values) if p is not None and not math.isnan(p)]
    indexed.sort()
    adjusted = [float("nan")] * len(p_values)
    running = 0.0
    m = len(indexed)
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


@dataclass
class Comparison:
    variant: str
    baseline: str
    trials: str            # "all" or "top10"
    test: str              # "welch" or "paired"
    n_variant: int
    n_baseline: int
    mean_difference: float  # variant - baseline, in the metric's units
    ci_low: float
    ci_high: float
    statistic: float
    df: float
    p_value: float
    p_adjusted: float = float("nan")
    significant: bool = False
    verdict: str = "not significant"   # "better", "worse", "not significant" or "not tested (...)"
    median_difference: float = float("nan")  # of the differences for paired tests
    hodges_lehmann: float = float("nan")     # the rank tests' shift estimate; ci_low/ci_high are its interval


def _welch(a: np.ndarray, b: np.ndarray, confidence: float):
    from scipy import stats

    if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return None
    result = stats.ttest_ind(a, b, equal_var=False)
    ci = result.confidence_interval(confidence)
    return float(result.statistic), float(result.df), float(result.pvalue), float(ci.low), float(ci.high)


def _paired(a: np.ndarray, b: np.ndarray, confidence: float):
    from scipy import stats

    if len(a) < 2 or np.ptp(a - b) == 0:
        return None
    result = stats.ttest_rel(a, b)
    ci = result.confidence_interval(confidence)
    return float(result.statistic), float(result.df), float(result.pvalue), float(ci.low), float(ci.high)


def _mann_whitney(a: np.ndarray, b: np.ndarray, confidence: float):
    from scipy import stats

    if len(a) < 2 or len(b) < 2 or (np.ptp(np.concatenate([a, b])) == 0):
        return None
    result = stats.mannwhitneyu(a, b, alternative="two-sided")
    low, high = _order_statistic_interval(np.subtract.outer(a, b).ravel(), _rank_sum_null(len(a), len(b)),
                                          confidence)
    return float(result.statistic), float("nan"), float(result.pvalue), low, high


def _wilcoxon(a: np.ndarray, b: np.ndarray, confidence: float):
    from scipy import stats

    d = a - b
    if len(a) < 2 or not np.any(d):
        return None
    result = stats.wilcoxon(a, b)
    low, high = _order_statistic_interval(_walsh_averages(d), _signed_rank_null(len(d)), confidence)
    return float(result.statistic), float("nan"), float(result.pvalue), low, high


# -- Hodges-Lehmann estimates and their intervals -------------------------------------------------------------------
def _walsh_averages(d: np.ndarray) -> np.ndarray:
    """(d_i + d_j) / 2 for i <= j: the Hodges-Lehmann estimate of a paired shift is their median."""
    i, j = np.triu_indices(len(d))
    return (d[i] + d[j]) / 2


def hodges_lehmann(a, b, paired: bool) -> float:
    """The Hodges-Lehmann shift of ``a`` against ``b``: median of the Walsh averages of a - b (paired), or of all
    the differences a_i - b_j (two samples). The rank tests' estimate, as the mean difference is the t-tests'."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if not len(a) or not len(b):
        return float("nan")
    return float(np.median(_walsh_averages(a - b) if paired else np.subtract.outer(a, b).ravel()))


def _signed_rank_null(n: int) -> np.ndarray:
    """P(T+ = t), t = 0 .. n(n+1)/2, of Wilcoxon's signed-rank statistic without ties: the coefficients of
    prod_k (1 + q^k) / 2."""
    distribution = np.ones(1)
    for k in range(1, n + 1):
        shifted = np.zeros(len(distribution) + k)
        shifted[:len(distribution)] += distribution
        shifted[k:] += distribution
        distribution = shifted / 2
    return distribution


def _rank_sum_null(m: int, n: int) -> np.ndarray:
    """P(U = u), u = 0 .. mn, of the Mann-Whitney statistic without ties (exact up to mn = 10^4, normal beyond)."""
    if m * n > 10_000:
        from scipy import stats

        edges = np.arange(m * n + 2) - 0.5
        return np.diff(stats.norm.cdf(edges, loc=m * n / 2, scale=math.sqrt(m * n * (m + n + 1) / 12)))
    # p(u; i, j) = i/(i+j) p(u - j; i-1, j) + j/(i+j) p(u; i, j-1), built up over i for every j
    table = [np.ones(1) for _ in range(n + 1)]  # i = 0: U = 0 for any j
    for i in range(1, m + 1):
        row = [np.ones(1)]  # j = 0: U = 0
        for j in range(1, n + 1):
            current = np.zeros(i * j + 1)
            current[j:j + len(table[j])] += i / (i + j) * table[j]
            current[:len(row[j - 1])] += j / (i + j) * row[j - 1]
            row.append(current)
        table = row
    return table[n]


def _order_statistic_interval(estimates: np.ndarray, null: np.ndarray, confidence: float) -> tuple[float, float]:
    """The distribution-free interval [e_(k), e_(N+1-k)] of the N sorted ``estimates``, whose coverage is
    1 - 2 P(S <= k - 1) under the statistic's ``null`` distribution: k is the largest with P(S <= k - 1) <= alpha/2.
    ``nan`` bounds when no k reaches the confidence (too few trials)."""
    k = int(np.searchsorted(np.cumsum(null), (1 - confidence) / 2 * (1 + 1e-12), side="right"))
    if k == 0:
        return float("nan"), float("nan")
    ordered = np.sort(estimates)
    return float(ordered[k - 1]), float(ordered[len(ordered) - k])


#: test name -> (function, paired?, trial sets it runs on)
TESTS = {
    "welch": (_welch, False, ("all", "top10")),
    "paired": (_paired, True, ("all",)),
    "mann-whitney": (_mann_whitney, False, ("all",)),
    "wilcoxon": (_wilcoxon, True, ("all",)),
}
RANK_TESTS = ("mann-whitney", "wilcoxon")
#: fewer trials than this on either side of a comparison make its test unreliable (the report says so)
FEW_TRIALS = 5


def compare(rows, variants, baseline: str, direction: str, paired: bool, alpha: float = ALPHA) -> list[Comparison]:
    """Every variant against the baseline.

    Welch's t-test on all trials and on the best 10 %; Mann-Whitney's U on all trials (a rank test: a few trials far
    off, e.g. an unbounded output that blew up without overflowing, do not swamp it as they do a t-test); in the
    paired design also the paired t-test and Wilcoxon's signed-rank test on the trial indices both completed.
    """
    confidence = 1 - alpha
    base_all = completed(rows, baseline)
    families: dict[tuple[str, str], list[Comparison]] = {}
    for variant in variants:
        if variant == baseline:
            continue
        mine = completed(rows, variant)
        samples = {
            ("all", False): (mine, base_all),
            ("top10", False): (top_by_validation(mine, direction), top_by_validation(base_all, direction)),
        }
        by_index = {r["index"]: r for r in base_all}
        samples[("all", True)] = ([r for r in mine if r["index"] in by_index],
                                  [by_index[r["index"]] for r in mine if r["index"] in by_index])
        for test, (function, needs_pairs, trial_sets) in TESTS.items():
            if needs_pairs and not paired:
                continue
            for label in trial_sets:
                a_rows, b_rows = samples[(label, needs_pairs)]
                a = np.array([r["test"] for r in a_rows], float)
                b = np.array([r["test"] for r in b_rows], float)
                if len(a) and len(b):
                    mean_diff = float(a.mean() - b.mean())
                    median_diff = float(np.median(a - b) if needs_pairs else np.median(a) - np.median(b))
                else:
                    mean_diff = median_diff = float("nan")
                comparison = _comparison(variant, baseline, label, test, len(a), len(b), mean_diff,
                                         function(a, b, confidence))
                comparison.median_difference = median_diff
                if test in RANK_TESTS:
                    comparison.hodges_lehmann = hodges_lehmann(a, b, paired=needs_pairs)
                families.setdefault((label, test), []).append(comparison)
    out = []
    for family in families.values():
        for comparison, adjusted in zip(family, holm([c.p_value for c in family])):
            comparison.p_adjusted = adjusted
            comparison.significant = bool(adjusted < alpha)
            if math.isnan(comparison.p_value):
                comparison.verdict = "not tested (too few trials or no spread)"
            elif comparison.significant:
                rank_test = comparison.test in RANK_TESTS
                difference = comparison.hodges_lehmann if rank_test else comparison.mean_difference
                better = (difference < 0) == (direction == "minimize")
                comparison.verdict = "better" if better else "worse"
            out.append(comparison)
    return out


def _comparison(variant, baseline, label, test, n_a, n_b, diff, stats_) -> Comparison:
    if stats_ is None:
        nan = float("nan")
        return Comparison(variant, baseline, label, test, n_a, n_b, diff, nan, nan, nan, nan, nan)
    statistic, df, p, low, high = stats_
    return Comparison(variant, baseline, label, test, n_a, n_b, diff, low, high, statistic, df, p)


@dataclass
class VariantSummary:
    variant: str
    completed: int
    failed: int
    failures: dict
    test_mean: float
    test_std: float
    test_median: float
    best_test: float        # test metric of the trial best on validation
    top10_test_mean: float
    parameter_count_median: float
    parameter_count_min: int
    parameter_count_max: int
    wall_time_median: float
    wall_time_total: float
    epochs_median: float
    seconds_per_epoch_median: float


def summarize(rows, variants, direction: str) -> list[VariantSummary]:
    out = []
    for variant in variants:
        done = completed(rows, variant)
        failed = [r for r in rows if r["variant"] == variant and r["state"] == "FAIL"]
        failures: dict[str, int] = {}
        for r in failed:
            failures[r.get("status") or "unknown"] = failures.get(r.get("status") or "unknown", 0) + 1
        finished = done + failed
        test = np.array([r["test"] for r in done], float)
        params = np.array([r["parameter_count"] for r in done if r.get("parameter_count") is not None], float)
        walls = np.array([r["wall_time"] for r in finished if r.get("wall_time") is not None], float)
        epochs = np.array([r["epochs"] for r in done if r.get("epochs")], float)
        per_epoch = np.array([r["train_time"] / r["epochs"] for r in done if r.get("epochs") and r.get("train_time")],
                             float)
        top = top_by_validation(done, direction)
        best = top[0]["test"] if top else float("nan")
        out.append(VariantSummary(
            variant=variant, completed=len(done), failed=len(failed), failures=failures,
            test_mean=_stat(np.mean, test), test_std=_stat(lambda x: np.std(x, ddof=1), test, minimum=2),
            test_median=_stat(np.median, test), best_test=float(best),
            top10_test_mean=_stat(np.mean, np.array([r["test"] for r in top], float)),
            parameter_count_median=_stat(np.median, params),
            parameter_count_min=int(params.min()) if len(params) else 0,
            parameter_count_max=int(params.max()) if len(params) else 0,
            wall_time_median=_stat(np.median, walls), wall_time_total=float(walls.sum()),
            epochs_median=_stat(np.median, epochs), seconds_per_epoch_median=_stat(np.median, per_epoch)))
    return out


def _stat(function, values: np.ndarray, minimum: int = 1) -> float:
    return float(function(values)) if len(values) >= minimum else float("nan")


MIN_TRIALS_FOR_FANOVA = 8


def importance(rows, parameters: list[str], target: str = "test", seed: int = 0) -> dict[str, float] | None:
    """fANOVA importance of ``parameters`` (the stored, log10, parameter names) for ``target``; ``None`` when there
    are fewer than ``MIN_TRIALS_FOR_FANOVA`` completed trials or nothing varies."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator

    usable = [r for r in rows if r["state"] == "COMPLETE" and r.get(target) is not None
              and all(p in r.get("params", {}) for p in parameters)]
    if len(usable) < MIN_TRIALS_FOR_FANOVA or not parameters:
        return None
    bounds = {p: (min(r["params"][p] for r in usable), max(r["params"][p] for r in usable)) for p in parameters}
    varying = [p for p, (lo, hi) in bounds.items() if hi > lo]
    if not varying:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize")
    distributions = {p: FloatDistribution(*bounds[p]) for p in varying}
    study.add_trials([optuna.trial.create_trial(params={p: r["params"][p] for p in varying},
                                                distributions=distributions, value=float(r[target]))
                      for r in usable])
    result = optuna.importance.get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed),
                                                     normalize=True)
    return {p: float(result.get(p, 0.0)) for p in parameters}


def as_dicts(items) -> list[dict]:
    return [asdict(item) for item in items]

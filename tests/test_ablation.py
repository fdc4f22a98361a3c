"""Unit tests of lstmcore.ablation without training: search space, configuration, plan, statistics, report."""
import json
import math

import numpy as np
import pytest

pytest.importorskip("optuna")
pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

import lstmcore  # noqa: E402
from lstmcore.ablation import analysis  # noqa: E402
from lstmcore.ablation.config import QUICK_PRESET, ConfigError, StudyConfig, load_toml  # noqa: E402
from lstmcore.ablation.plan import make_plan, planned_trial  # noqa: E402
from lstmcore.ablation.report import render_report  # noqa: E402
from lstmcore.ablation.space import Dimension, SearchSpace, parse_param_option  # noqa: E402


# -- search space ----------------------------------------------------------------------------------------------------
def test_paper_space_samples_log10_parameters_within_bounds():
    space = SearchSpace.paper()
    assert [d.parameter for d in space.searched] == [
        "log10_hidden_size", "log10_learning_rate", "log10_one_minus_momentum", "input_noise"]
    rng = np.random.default_rng(0)
    for _ in range(200):
        params = space.sample(rng)
        hyper = space.hyperparameters(params)
        assert math.log10(20) <= params["log10_hidden_size"] <= math.log10(200)
        assert 20 <= hyper["hidden_size"] <= 200 and isinstance(hyper["hidden_size"], int)
        assert 1e-6 <= hyper["learning_rate"] <= 1e-2
        assert hyper["learning_rate"] == pytest.approx(10 ** params["log10_learning_rate"])
        assert 0.0 <= hyper["momentum"] <= 0.99
        assert hyper["momentum"] == pytest.approx(1 - 10 ** params["log10_one_minus_momentum"])
        assert 0.0 <= hyper["input_noise"] <= 1.0


def test_fixed_dimension_is_not_searched():
    space = SearchSpace.paper().with_option("momentum=0.9")
    assert "log10_one_minus_momentum" not in space.sample(np.random.default_rng(0))
    assert space.hyperparameters(space.sample(np.random.default_rng(0)))["momentum"] == 0.9


@pytest.mark.parametrize("spec, message", [
    ({"distribution": "normal", "low": 0, "high": 1}, "unknown distribution"),
    ({"distribution": "log_uniform", "low": 0, "high": 1}, "low > 0"),
    ({"distribution": "uniform", "low": 2, "high": 1}, "must be below"),
    ({"distribution": "one_minus_log_uniform", "low": 0.1, "high": 2}, "high <= 1"),
    ({"distribution": "uniform", "low": 0}, "numeric 'low' and 'high'"),
    ({"distribution": "uniform", "low": 0, "high": 1, "scale": 2}, "unknown keys"),
])
def test_bad_space_is_refused_with_the_reason(spec, message):
    with pytest.raises(ValueError, match=message):
        SearchSpace.from_dict({"learning_rate": spec})


def test_unknown_hyperparameter_lists_the_known_ones():
    with pytest.raises(ValueError, match="hidden_size, learning_rate"):
        Dimension("dropout", "uniform", 0, 1)


def test_param_option_syntax():
    assert parse_param_option("learning_rate=log_uniform:1e-4:1e-2") == (
        "learning_rate", {"distribution": "log_uniform", "low": 1e-4, "high": 1e-2})
    assert parse_param_option("hidden-size=32") == ("hidden_size", {"distribution": "fixed", "value": 32.0})
    with pytest.raises(ValueError, match="NAME=DISTRIBUTION:LOW:HIGH"):
        parse_param_option("learning_rate=log_uniform:1e-4")


# -- configuration ---------------------------------------------------------------------------------------------------
def test_config_layers_later_wins_and_groups_expand(tmp_path):
    toml = tmp_path / "study.toml"
    toml.write_text('[study]\nvariants = "odyssey"\ntrials = 7\n[training]\nmax_epochs = 3\n'
                    '[space.learning_rate]\ndistribution = "log_uniform"\nlow = 1e-4\nhigh = 1e-1\n')
    config = StudyConfig.from_tables(QUICK_PRESET, load_toml(toml), {"study": {"trials": 9}})
    assert config.variants == lstmcore.get_group("odyssey")
    assert config.trials == 9                                       # command line over file
    assert config.training["max_epochs"] == 3                       # file over preset
    assert config.training["batch_size"] == QUICK_PRESET["training"]["batch_size"]
    assert config.space.dimensions["learning_rate"].low == 1e-4     # file over preset, dimension by dimension
    assert config.space.dimensions["hidden_size"].high == QUICK_PRESET["space"]["hidden_size"]["high"]
    assert config.dataset == "adding" and config.baseline == "peephole"


def test_fixing_a_hyperparameter_in_training_removes_it_from_the_space():
    config = StudyConfig.from_tables({"study": {"variants": "vanilla"}, "training": {"momentum": 0.9}})
    assert "momentum" not in config.space.dimensions


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(KeyError, match="peephole"):  # the message lists the registered variants
        StudyConfig.from_tables({"study": {"variants": "peephole,no-such-variant"}})
    with pytest.raises(ConfigError, match=r"unknown keys \['epochs'\] in \[training\]"):
        StudyConfig.from_tables({"study": {"variants": "vanilla"}, "training": {"epochs": 3}})
    with pytest.raises(ConfigError, match="unknown tables"):
        StudyConfig.from_tables({"studies": {}})
    with pytest.raises(ConfigError, match="baseline 'nfg' is not among"):
        StudyConfig.from_tables({"study": {"variants": "vanilla,peephole", "baseline": "nfg"}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(bad)


def test_fingerprint_covers_the_plan_but_not_its_size():
    base = StudyConfig(["vanilla", "peephole"], trials=3)
    assert StudyConfig(["vanilla", "peephole", "nfg"], trials=10).fingerprint == base.fingerprint
    assert StudyConfig(["vanilla", "peephole"], trials=3, seed=1).fingerprint != base.fingerprint
    other_space = StudyConfig(["vanilla", "peephole"], trials=3, space=SearchSpace.paper().with_option(
        "learning_rate=log_uniform:1e-4:1e-2"))
    assert other_space.fingerprint != base.fingerprint


# -- plan ------------------------------------------------------------------------------------------------------------
def test_paired_plan_shares_settings_not_seeds():
    config = StudyConfig(["peephole", "vanilla", "nfg"], trials=4)
    plan = make_plan(config)
    assert [p.key for p in plan[:3]] == ["peephole/0", "vanilla/0", "nfg/0"]  # trial index first: balanced
    by_index = {}
    for p in plan:
        by_index.setdefault(p.index, []).append(p)
    for trials in by_index.values():
        assert all(t.parameters == trials[0].parameters for t in trials)
        assert len({t.seed for t in trials}) == len(trials)
    assert len({tuple(ts[0].parameters.values()) for ts in by_index.values()}) == 4


def test_independent_plan_samples_each_variant_and_is_reproducible():
    config = StudyConfig(["peephole", "vanilla"], trials=3, independent=True)
    first = make_plan(config)
    assert first[0].parameters != first[1].parameters
    assert make_plan(config) == first
    grown = make_plan(StudyConfig(["peephole", "vanilla", "nfg"], trials=5, independent=True))
    assert all(p in grown for p in first)  # growing a study keeps its planned trials
    assert planned_trial(config, "vanilla", 2) == first[5]


# -- statistics ------------------------------------------------------------------------------------------------------
def _row(variant, index, test, valid=None, lr=-3.0, hidden=1.5, **extra):
    row = {"key": f"{variant}/{index}", "variant": variant, "index": index, "state": "COMPLETE",
           "status": "completed", "reason": "", "valid": test if valid is None else valid, "test": test,
           "metric": "nll", "parameter_count": 100, "epochs": 5, "best_epoch": 5, "wall_time": 1.0,
           "train_time": 0.9, "seed": index, "number": index,
           "params": {"log10_learning_rate": lr, "log10_hidden_size": hidden},
           "hyperparameters": {"learning_rate": 10 ** lr, "hidden_size": int(round(10 ** hidden))}}
    row.update(extra)
    return row


def _table(effects: dict, n=24, seed=0):
    """A paired table: trial i of every variant shares its setting; the test metric depends on the learning rate
    (strongly) and on the variant (by ``effects[variant]``), plus a little noise."""
    rng = np.random.default_rng(seed)
    lrs = rng.uniform(-5, -2, n)
    hidden = rng.uniform(1.3, 2.3, n)
    rows = []
    for variant, shift in effects.items():
        for i in range(n):
            test = 10 + (lrs[i] + 2) ** 2 + shift + rng.normal(0, 0.05)
            rows.append(_row(variant, i, test, valid=test + rng.normal(0, 0.01), lr=lrs[i], hidden=hidden[i]))
    return rows


def test_holm_adjustment_matches_hand_computation():
    adjusted = analysis.holm([0.01, 0.04, 0.03, float("nan")])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(adjusted[3])


def test_known_effect_is_significant_and_no_effect_is_not():
    rows = _table({"peephole": 0.0, "worse": 0.3, "same": 0.0, "better": -0.3})
    comparisons = analysis.compare(rows, ["peephole", "worse", "same", "better"], "peephole", "minimize", paired=True)
    paired = {c.variant: c for c in comparisons if c.test == "paired"}
    assert paired["worse"].verdict == "worse" and paired["worse"].p_adjusted < 1e-6
    assert paired["better"].verdict == "better"
    assert paired["same"].verdict == "not significant" and paired["same"].p_adjusted > 0.05
    assert paired["worse"].ci_low < 0.3 < paired["worse"].ci_high
    welch = {c.variant: c for c in comparisons if c.test == "welch" and c.trials == "all"}
    # the learning rate's spread hides a 0.3 shift from Welch's unpaired test: why the paired design exists
    assert welch["worse"].verdict == "not significant"
    assert welch["worse"].mean_difference == pytest.approx(paired["worse"].mean_difference)


def test_welch_statistics_match_scipy_directly():
    from scipy import stats

    rows = _table({"peephole": 0.0, "nfg": 1.0}, n=10, seed=3)
    a = np.array([r["test"] for r in rows if r["variant"] == "nfg"])
    b = np.array([r["test"] for r in rows if r["variant"] == "peephole"])
    expected = stats.ttest_ind(a, b, equal_var=False)
    comparisons = analysis.compare(rows, ["peephole", "nfg"], "peephole", "minimize", paired=False)
    assert {c.test for c in comparisons} == {"welch", "mann-whitney"}  # no paired tests in the independent design
    (welch,) = [c for c in comparisons if c.trials == "all" and c.test == "welch"]
    assert welch.statistic == pytest.approx(expected.statistic)
    assert welch.p_value == pytest.approx(expected.pvalue)
    assert welch.p_adjusted == pytest.approx(expected.pvalue)  # one comparison: Holm changes nothing
    assert welch.mean_difference == pytest.approx(a.mean() - b.mean())


def test_rank_tests_resist_a_far_off_trial_that_swamps_the_t_tests():
    rows = _table({"peephole": 0.0, "noaf": 0.3}, n=24)
    blown_up = next(r for r in rows if r["variant"] == "noaf" and r["index"] == 0)
    blown_up["test"] = 1e4  # an unbounded output that grew huge without overflowing
    found = {(c.test, c.trials): c for c in analysis.compare(rows, ["peephole", "noaf"], "peephole", "minimize",
                                                              paired=True)}
    assert found[("paired", "all")].verdict == "not significant"  # the outlier's variance hides the shift
    assert found[("wilcoxon", "all")].verdict == "worse" and found[("wilcoxon", "all")].p_adjusted < 1e-3
    assert found[("wilcoxon", "all")].median_difference == pytest.approx(0.3, abs=0.05)
    assert found[("mann-whitney", "all")].n_variant == 24


@pytest.mark.parametrize("paired", [False, True])
def test_hodges_lehmann_interval_is_the_inverted_exact_rank_test(paired):
    """The interval's ends are where the exact rank test of the shifted samples crosses alpha (scipy's own
    exact p-values, an independent computation)."""
    from scipy import stats

    rng = np.random.default_rng(1)
    a, b = rng.standard_t(3, size=11) + 0.6, rng.standard_t(3, size=11 if paired else 8)
    test = analysis.TESTS["wilcoxon" if paired else "mann-whitney"][0]
    *_, low, high = test(a, b, 0.95)

    def p_value(shift):
        if paired:
            return stats.wilcoxon(a - shift - b, method="exact").pvalue
        return stats.mannwhitneyu(a - shift, b, method="exact").pvalue

    eps = 1e-9
    assert p_value(low - eps) <= 0.05 < p_value(low + eps)
    assert p_value(high + eps) <= 0.05 < p_value(high - eps)
    estimate = analysis.hodges_lehmann(a, b, paired=paired)
    assert low < estimate < high
    # with too few trials no interval reaches 95 %: empty, not made up
    assert all(math.isnan(v) for v in test(a[:3], b[:3], 0.95)[3:])


def test_rank_sum_null_distribution_matches_scipy_exact_and_normal_beyond():
    from scipy import stats

    null = analysis._rank_sum_null(6, 9)
    assert null.sum() == pytest.approx(1.0)
    rng = np.random.default_rng(2)
    for shift in (-2.0, -0.5, 0.0, 1.0):
        a, b = rng.normal(size=6) + shift, rng.normal(size=9)
        result = stats.mannwhitneyu(a, b, alternative="less", method="exact")  # P(U <= u observed)
        assert np.cumsum(null)[int(result.statistic)] == pytest.approx(result.pvalue)
    big = analysis._rank_sum_null(120, 100)
    assert big.sum() == pytest.approx(1.0) and np.argmax(big) == 6000


def test_top_ten_percent_by_validation():
    rows = [_row("v", i, test=float(i), valid=float(-i)) for i in range(30)]
    top = analysis.top_by_validation(rows, "minimize")
    assert [r["index"] for r in top] == [29, 28, 27]
    assert len(analysis.top_by_validation(rows[:5], "minimize")) == 2  # at least two, so a test is possible
    assert analysis.metric_direction("accuracy") == "maximize" and analysis.metric_direction("mse") == "minimize"


def test_fanova_finds_the_important_parameter():
    rows = _table({"peephole": 0.0}, n=40)
    importance = analysis.importance(rows, ["log10_learning_rate", "log10_hidden_size"])
    assert importance["log10_learning_rate"] > 0.8 > importance["log10_hidden_size"]
    assert analysis.importance(rows[:5], ["log10_learning_rate"]) is None  # too few trials


# -- report ----------------------------------------------------------------------------------------------------------
def test_report_from_a_trials_table(tmp_path):
    rows = _table({"peephole": 0.0, "nfg": 0.5, "vanilla": 0.0}, n=12)
    rows.append(_row("nfg", 12, None, state="FAIL", status="diverged", reason="the loss is nan at epoch 2",
                     valid=None))
    config = StudyConfig(["peephole", "nfg", "vanilla"], trials=13, space=SearchSpace.paper().with_option(
        "momentum=0.9").with_option("input_noise=0"))
    report = render_report(config, rows, tmp_path)
    text = report.read_text()
    assert "Welch" in text and "Holm-Bonferroni" in text
    assert "| nfg | all | wilcoxon |" in text and "| nfg | all | mann-whitney |" in text
    nfg_paired = [line for line in text.splitlines() if line.startswith("| nfg | all | paired")]
    assert len(nfg_paired) == 1 and "**worse**" in nfg_paired[0]
    vanilla_paired = [line for line in text.splitlines() if line.startswith("| vanilla | all | paired")]
    assert "not significant" in vanilla_paired[0]
    assert "| nfg | 12 | 1 (diverged: 1) |" in text
    assert "the loss is nan at epoch 2" in text
    for name in ("boxplots.png", "hyperparameters.png", "importance.png"):
        assert (tmp_path / "figures" / name).read_bytes()[:4] == b"\x89PNG"
        assert f"figures/{name}" in text
    html = (tmp_path / "report.html").read_text()
    for name in ("peephole", "nfg", "vanilla"):   # each compared cell drawn beside its results
        assert (tmp_path / "figures" / f"cell-{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"figures/cell-{name}.png" in text
    assert "*nfg: 12 completed trial(s)" in text and "against `peephole` (Welch, all trials): " in text
    assert html.count("data:image/png;base64,") == 3 + 3 and "<table>" in html
    lines = (tmp_path / "trials.csv").read_text().splitlines()
    assert len(lines) == 1 + len(rows) and "param:log10_learning_rate" in lines[0]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["correction"] == "Holm-Bonferroni"
    assert {c["variant"] for c in summary["comparisons"]} == {"nfg", "vanilla"}
    assert {c["test"] for c in summary["comparisons"]} == {"welch", "paired", "mann-whitney", "wilcoxon"}
    assert len(json.loads((tmp_path / "trials.json").read_text())) == len(rows)


def test_report_warns_of_few_trials_explains_empty_intervals_and_formats_numbers_alike(tmp_path):
    rows = _table({"peephole": 0.0, "nfg": 0.5}, n=12)
    for row in rows:
        row["parameter_count"] = 44682 + row["index"] % 2  # a median of .5: 44682.5, not 4.468e+04
    config = StudyConfig(["peephole", "nfg"], trials=12, space=SearchSpace.paper().with_option(
        "momentum=0.9").with_option("input_noise=0"))
    text = render_report(config, rows, tmp_path).read_text()
    lines = text.splitlines()
    top = [line for line in lines if line.startswith("| nfg | best 10 % (few) | welch |")]
    assert len(top) == 1 and "| 2 | 2 |" in top[0]
    assert "**Warning: few trials.**" in text and "n = 2" in text
    mann_whitney = next(line for line in lines if line.startswith("| nfg | all | mann-whitney |"))
    cells = [c.strip() for c in mann_whitney.strip("|").split("|")]
    low, high = (float(v) for v in cells[7].strip("[]").split(","))
    assert low < float(cells[6]) < high  # the Hodges-Lehmann shift inside its interval
    assert "[–, –]" not in text
    tables = [line for line in lines if line.startswith("|")]
    assert not any("e+" in line for line in tables), [line for line in tables if "e+" in line]
    assert "parameters incl. readout" in text and "the LSTM layers and the readout" in text
    assert "| nfg | 44682 | 44682 | 44683 |" in text


def test_report_leaves_rank_intervals_empty_with_too_few_trials_and_says_why(tmp_path):
    rows = _table({"peephole": 0.0, "nfg": 0.5}, n=3)
    config = StudyConfig(["peephole", "nfg"], trials=3, space=SearchSpace.paper().with_option(
        "momentum=0.9").with_option("input_noise=0"))
    text = render_report(config, rows, tmp_path).read_text()
    wilcoxon = next(line for line in text.splitlines() if line.startswith("| nfg | all (few) | wilcoxon |"))
    assert [c.strip() for c in wilcoxon.strip("|").split("|")][7] == ""
    assert "Empty CI cells" in text and "Wilcoxon 6 pairs" in text and "on all trials" in text


def test_light_import():
    import subprocess
    import sys

    code = ("import sys, lstmcore, lstmcore.cli, lstmcore.ablation; "
            "print(sorted(m for m in ('optuna', 'dask', 'distributed', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "[]"


def test_progress_block_counts_per_variant_and_best_so_far():
    import io

    from lstmcore.ablation.progress import Progress

    stream = io.StringIO()
    earlier = [_row("peephole", 0, 2.0), _row("nfg", 0, None, state="FAIL", status="diverged", valid=None)]
    progress = Progress(["peephole", "nfg"], 3, earlier, live=True, stream=stream)
    progress.trial_started("peephole/1")
    progress.trial_finished(_row("peephole", 1, 1.5))
    lines = progress.lines()
    assert lines[0].startswith("[") and "3/6 trials" in lines[0] and "0 running" in lines[0]
    assert "2/3" in lines[1] and "best valid nll 1.5" in lines[1]
    assert "1/3" in lines[2] and "1 failed" in lines[2]
    assert "\x1b[" in stream.getvalue()  # redrawn in place


def test_report_of_a_study_without_completed_trials(tmp_path):
    rows = [_row(v, i, None, valid=None, state="FAIL", status="diverged", reason="the loss is inf at epoch 1")
            for v in ("peephole", "nfg") for i in range(2)]
    config = StudyConfig(["peephole", "nfg"], trials=2)
    text = render_report(config, rows, tmp_path).read_text()
    assert "No trial has completed yet." in text and "| peephole (baseline) | 0 | 2 (diverged: 2) |" in text
    assert not (tmp_path / "figures" / "boxplots.png").exists()


def test_momentum_leaves_the_space_with_adam_and_is_refused_if_asked_for():
    config = StudyConfig.from_tables({"study": {"variants": "vanilla"}, "training": {"optimizer": "adam"}})
    assert "momentum" not in config.space.dimensions and "nesterov" not in config.training
    with pytest.raises(ConfigError, match="apply to optimizer = \"sgd\" only"):
        StudyConfig.from_tables({"study": {"variants": "vanilla"}, "training": {"optimizer": "adam"},
                                 "space": {"momentum": 0.9}})

"""``lstmcore report DIR``: the study's report as Markdown (PNG figures beside it) and HTML (figures embedded), plus
every trial as CSV and JSON and the statistics as JSON.

Files written to ``DIR/report/`` (or ``out``): ``report.md``, ``report.html``, ``figures/*.png``, ``trials.csv``,
``trials.json``, ``summary.json``.

``render_report`` runs three steps: ``report_data`` computes every statistic (``ReportData``; no matplotlib),
``compose_report`` lays out the sections as a ``Document`` and draws the figures (``figures.py``), and
``write_report_files`` writes the files.
"""
from __future__ import annotations

import base64
import csv
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

from lstmcore.ablation import analysis
from lstmcore.ablation.config import ConfigError, StudyConfig
from lstmcore.ablation.figures import box_plots, hyperparameter_plots, importance_plot
from lstmcore.ablation.storage import flat_rows, load_study, read_study_file, trial_rows

CORRECTION_SHORT = "Holm"  # the correction's name in a table header


# -- a tiny document model rendered to Markdown and HTML -----------------------------------------------------------
class Document:
    def __init__(self):
        self.blocks: list[tuple] = []

    def heading(self, text: str, level: int = 2):
        self.blocks.append(("heading", level, text))

    def paragraph(self, text: str):
        self.blocks.append(("paragraph", text))

    def bullets(self, items: list[str]):
        self.blocks.append(("bullets", items))

    def table(self, headers: list[str], rows: list[list]):
        self.blocks.append(("table", headers, [[_cell(v) for v in row] for row in rows]))

    def figure(self, path: Path, caption: str):
        self.blocks.append(("figure", path, caption))

    def markdown(self, base: Path) -> str:
        out = []
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                out.append("#" * block[1] + " " + block[2])
            elif kind == "paragraph":
                out.append(block[1])
            elif kind == "bullets":
                out.append("\n".join(f"- {item}" for item in block[1]))
            elif kind == "table":
                headers, rows = block[1], block[2]
                lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
                lines += ["| " + " | ".join(row) + " |" for row in rows]
                out.append("\n".join(lines))
            elif kind == "figure":
                out.append(f"![{block[2]}]({block[1].relative_to(base).as_posix()})\n\n*{block[2]}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
               "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
               "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
               "text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%}"
               "figcaption{font-style:italic;color:#444}code{background:#f3f3f3}</style></head><body>"]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                out.append(f"<h{block[1]}>{_inline(block[2])}</h{block[1]}>")
            elif kind == "paragraph":
                out.append(f"<p>{_inline(block[1])}</p>")
            elif kind == "bullets":
                out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block[1]) + "</ul>")
            elif kind == "table":
                head = "".join(f"<th>{_inline(h)}</th>" for h in block[1])
                body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block[2])
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif kind == "figure":
                data = base64.b64encode(Path(block[1]).read_bytes()).decode("ascii")
                out.append(f"<figure><img alt='{html.escape(block[2])}' src='data:image/png;base64,{data}'>"
                           f"<figcaption>{_inline(block[2])}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out)


def _inline(text: str) -> str:
    """Markdown's inline code and bold, for HTML."""
    escaped = html.escape(str(text))
    parts = escaped.split("`")
    escaped = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = escaped.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def _cell(value) -> str:
    """One number format for every table: integers (and integral floats) as integers, other floats with 4
    significant digits, without an exponent from 1e-7 up (rounded to an integer from 1000 up)."""
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        if abs(value) >= 1000:
            return f"{value:.0f}"
        if abs(value) >= 1e-3:
            return f"{value:.4g}"
        if abs(value) >= 1e-7:  # 0.0005914, not 5.914e-04 beside 0.2753
            return f"{value:.{3 - math.floor(math.log10(abs(value)))}f}".rstrip("0")
        return f"{value:.3e}"
    return str(value)


def _interval(low: float, high: float) -> str:
    """A confidence interval's cell: empty when there is none (the report says why)."""
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return ""
    return f"[{_cell(low)}, {_cell(high)}]"


def _p(value: float) -> str:
    if value is None or math.isnan(value):
        return "–"
    return "<1e-4" if value < 1e-4 else f"{value:.3g}"


# -- the report: its data, its composition, its files ------------------------------------------------------------------
def write_report(study_dir, out=None, alpha: float = analysis.ALPHA) -> Path:
    """Write the report of the study in ``study_dir``; return the path of ``report.md``."""
    from lstmcore.ablation import require

    require()
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ConfigError(f"--alpha must be a significance level between 0 and 1 (exclusive), got {alpha!r}")
    study_dir = Path(study_dir)
    info = read_study_file(study_dir)
    config = StudyConfig.from_dict(info["config"])
    rows = trial_rows(load_study(study_dir))
    out = Path(out) if out else study_dir / "report"
    return render_report(config, rows, out, alpha)


def render_report(config: StudyConfig, rows, out, alpha: float = analysis.ALPHA) -> Path:
    """Write the report of ``rows`` (the table of ``trial_rows``) for ``config`` to ``out``; return ``report.md``."""
    out = Path(out)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    data = report_data(config, rows, alpha)
    return write_report_files(out, config, rows, data, compose_report(config, rows, data, figures))


# -- the data: every statistic the report states, computed without matplotlib --------------------------------------
@dataclass
class ReportData:
    """What the report says about a trials table: its variants, metric, the per-variant summaries, the tests against
    the baseline and the fANOVA importances (``report_data``; no figure is drawn, matplotlib is not imported)."""

    variants: list[str]
    metric: str
    direction: str
    baseline: str
    alpha: float
    summaries: list
    comparisons: list
    parameters: list[str]
    importances: dict[str, dict | None]
    pending: int
    failed_rows: list[dict]

    @property
    def any_complete(self) -> bool:
        return any(s.completed for s in self.summaries)

    def summary(self, config: StudyConfig) -> dict:
        """``summary.json``: the statistics, NaN as null."""
        return _without_nan({"config": config.to_dict(), "metric": self.metric, "direction": self.direction,
                             "alpha": self.alpha, "correction": analysis.CORRECTION,
                             "variants": analysis.as_dicts(self.summaries),
                             "comparisons": analysis.as_dicts(self.comparisons), "importance": self.importances})


def report_data(config: StudyConfig, rows, alpha: float = analysis.ALPHA) -> ReportData:
    """The statistics of ``rows`` for ``config``: the variants with rows (in the study's order), summaries, the tests
    of each against the baseline at ``alpha`` and fANOVA importances per variant and over all of them."""
    variants = [v for v in config.variants if any(r["variant"] == v for r in rows)] or config.variants
    metric = next((r["metric"] for r in rows if r.get("metric")), "metric")
    direction = analysis.metric_direction(metric)
    parameters = [d.parameter for d in config.space.searched]
    importances = {variant: analysis.importance(analysis.completed(rows, variant), parameters)
                   for variant in variants}
    importances["all variants"] = analysis.importance(rows, parameters)
    return ReportData(
        variants=variants, metric=metric, direction=direction, baseline=config.baseline, alpha=alpha,
        summaries=analysis.summarize(rows, variants, direction),
        comparisons=analysis.compare(rows, variants, config.baseline, direction, paired=not config.independent,
                                     alpha=alpha),
        parameters=parameters, importances=importances,
        pending=sum(1 for r in rows if r["state"] in ("RUNNING", "WAITING")),
        failed_rows=[r for r in rows if r["state"] == "FAIL"])


# -- the composition: the document's sections, with their figures --------------------------------------------------
def compose_report(config: StudyConfig, rows, data: ReportData, figures: Path) -> Document:
    """The report as a ``Document``, drawing its figures into ``figures``."""
    doc = Document()
    _overview(doc, config, rows, data)
    _performance(doc, rows, data, figures)
    cell_diagrams(doc, data, figures)
    _tests_against_the_baseline(doc, data)
    _hyperparameters(doc, config, rows, data, figures)
    _cost(doc, data)
    if data.failed_rows:
        doc.heading("Failed trials")
        doc.table(["trial", "status", "reason"], [[r["key"], r.get("status"), (r.get("reason") or "")[:160]]
                                                  for r in data.failed_rows])
    return doc


def _overview(doc: Document, config: StudyConfig, rows, data: ReportData) -> None:
    import lstmcore

    doc.heading(f"Ablation study: {', '.join(data.variants)} on {config.dataset}", 1)
    n_complete = sum(s.completed for s in data.summaries)
    n_failed = sum(s.failed for s in data.summaries)
    metric, direction, alpha = data.metric, data.direction, data.alpha
    doc.bullets([
        f"lstmcore {lstmcore.__version__}; report of {len(rows)} planned trials with a result or in progress.",
        f"Dataset `{config.dataset}` {json.dumps(config.dataset_options) if config.dataset_options else ''}; "
        f"metric: test `{metric}` at the epoch best on validation ({'lower' if direction == 'minimize' else 'higher'}"
        f" is better).",
        f"Trials planned: {config.trials} per variant ({len(config.variants) * config.trials} in all); "
        f"completed: {n_complete}; failed: {n_failed}; not finished: {data.pending}.",
        f"Design: {'independent sampling per variant (as the paper)' if config.independent else 'paired: every variant trained with the same sampled hyperparameter settings'}"
        f"; base seed {config.seed}.",
        "Search space: " + "; ".join(config.space.describe()) + ".",
        "Training: " + ", ".join(f"{k}={v}" for k, v in config.training.items() if v is not None) + "; model: "
        + ", ".join(f"{k}={v}" for k, v in config.model.items()) + ".",
        f"Baseline: `{data.baseline}`. Tests of each variant against it: Welch's t-test (the paper's) and "
        f"Mann–Whitney's U{', and in the paired design the paired t-test and Wilcoxon signed-rank test' if not config.independent else ''}"
        f"; p-values adjusted by {analysis.CORRECTION} over the {max(0, len(data.variants) - 1)} comparisons of each "
        f"family; significant at adjusted p < {alpha}.",
    ])


def _performance(doc: Document, rows, data: ReportData, figures: Path) -> None:
    metric, alpha, baseline = data.metric, data.alpha, data.baseline
    doc.heading("Test performance per variant (Fig. 3 of the paper)")
    if data.any_complete:
        box_path = figures / "boxplots.png"
        clipped = box_plots(rows, data.variants, baseline, data.direction, data.comparisons, metric, box_path)
        doc.figure(box_path, f"Test {metric} per variant, all trials (left or top) and the best 10 % by validation. "
                   f"Grey: baseline; red/green: significantly worse/better than the baseline (Welch, "
                   f"{analysis.CORRECTION}, adjusted p < {alpha}); blue: no significant difference."
                   + (" The y axis is clipped at Q3 + 3 IQR (\"n above\": trials off the axis); the CSV has every "
                      "value." if clipped else ""))
    else:
        doc.paragraph("No trial has completed yet.")
    doc.table(["variant", "completed", "failed", f"mean test {metric}", "std", "median", "best by valid",
               "mean of best 10 %"],
              [[s.variant + (" (baseline)" if s.variant == baseline else ""), s.completed,
                _failures(s), s.test_mean, s.test_std, s.test_median, s.best_test, s.top10_test_mean]
               for s in data.summaries])


def _tests_against_the_baseline(doc: Document, data: ReportData) -> None:
    comparisons, alpha, metric = data.comparisons, data.alpha, data.metric
    doc.heading(f"Tests against the baseline `{data.baseline}`")
    headers = ["variant", "trials", "test", "n", "n baseline", "mean diff", "HL shift",
               f"{int(100 * (1 - alpha))} % CI", "statistic", "df", "p", f"p ({CORRECTION_SHORT})", "verdict"]
    order = list(analysis.TESTS)
    table = []
    for c in sorted(comparisons, key=lambda c: (order.index(c.test), c.trials != "all",
                                                data.variants.index(c.variant))):
        verdict = f"**{c.verdict}**" if c.significant else c.verdict
        few = min(c.n_variant, c.n_baseline) < analysis.FEW_TRIALS
        table.append([c.variant, ("all" if c.trials == "all" else "best 10 %") + (" (few)" if few else ""), c.test,
                      c.n_variant, c.n_baseline, c.mean_difference,
                      c.hodges_lehmann if c.test in analysis.RANK_TESTS else "", _interval(c.ci_low, c.ci_high),
                      c.statistic, c.df, _p(c.p_value), _p(c.p_adjusted), verdict])
    doc.table(headers, table)
    doc.paragraph("Differences are variant − baseline in test " + metric + " (for the paired tests, of the "
                  "differences trial by trial). `welch`: Welch's t-test (unequal variances, Welch–Satterthwaite "
                  "degrees of freedom; the paper's test), statistic t. `paired`: paired t-test on the trials with "
                  "the same index (the same hyperparameter setting) completed by both. `mann-whitney` (U) and "
                  "`wilcoxon` (signed-rank, paired): rank tests, which a few far-off trials cannot swamp; their "
                  "estimate is the Hodges–Lehmann shift (HL: the median of the differences of every variant trial "
                  "with every baseline trial, or of the Walsh averages of the paired differences), their verdict "
                  "follows its sign, and their CI is its distribution-free interval from the ordered differences. "
                  "The CI is that of the mean difference for the t-tests. Each family (one trial set, one test) is "
                  f"corrected separately by {analysis.CORRECTION}.")
    missing_ci = [c for c in comparisons if _interval(c.ci_low, c.ci_high) == ""]
    if missing_ci:
        doc.paragraph(f"Empty CI cells: {len(missing_ci)} comparison(s) have no interval — a test that was not run "
                      f"(too few trials or no spread), or a rank test with so few trials that no interval from the "
                      f"ordered differences reaches {int(100 * (1 - alpha))} % (Mann–Whitney needs at least 4 + 4 "
                      f"trials, Wilcoxon 6 pairs, at 95 %).")
    few = [c for c in comparisons if 0 < min(c.n_variant, c.n_baseline) < analysis.FEW_TRIALS]
    if few:
        sizes = sorted({min(c.n_variant, c.n_baseline) for c in few})
        sets = sorted({"the best 10 %" if c.trials == "top10" else "all trials" for c in few})
        doc.paragraph(f"**Warning: few trials.** {len(few)} test(s) (marked \"few\", on {' and '.join(sets)}) "
                      f"compare only n = {', '.join(map(str, sizes))} trial(s) on a side, fewer than "
                      f"{analysis.FEW_TRIALS}: they can hardly detect a difference, and a significant one rests on a "
                      f"handful of trials. The best 10 % reach n ≥ {analysis.FEW_TRIALS} with "
                      f"{10 * (analysis.FEW_TRIALS - 1) + 1} or more completed trials per variant.")


def _hyperparameters(doc: Document, config: StudyConfig, rows, data: ReportData, figures: Path) -> None:
    parameters, importances = data.parameters, data.importances
    doc.heading("Hyperparameters (Fig. 4 and 5 of the paper)")
    if data.any_complete and config.space.searched:
        hyper_path = figures / "hyperparameters.png"
        hyperparameter_plots(rows, data.variants, config.space, data.metric, data.direction, hyper_path)
        doc.figure(hyper_path, f"Test {data.metric} of every completed trial against each searched hyperparameter.")
    if any(importances.values()):
        importance_path = figures / "importance.png"
        importance_plot(importances, parameters, importance_path)
        doc.figure(importance_path, "fANOVA importance per variant (Optuna's FanovaImportanceEvaluator on the "
                                    "log10 parameters, target: test metric).")
    if parameters:
        doc.table(["fANOVA importance"] + [f"`{p}`" for p in parameters],
                  [[name] + ([values.get(p) for p in parameters] if values else
                             [f"fewer than {analysis.MIN_TRIALS_FOR_FANOVA} completed trials"]
                             + [""] * (len(parameters) - 1))
                   for name, values in importances.items()])


def _cost(doc: Document, data: ReportData) -> None:
    doc.heading("Cost: parameters and training time")
    doc.table(["variant", "parameters incl. readout (median)", "min", "max", "epochs (median)", "s/epoch (median)",
               "s/trial (median)", "total trial time (s)"],
              [[s.variant, s.parameter_count_median, s.parameter_count_min, s.parameter_count_max, s.epochs_median,
                s.seconds_per_epoch_median, s.wall_time_median, s.wall_time_total] for s in data.summaries])
    doc.paragraph("Parameter counts are of the whole model: the LSTM layers and the readout (the output layer, "
                  "`W_out` and `b_out`: (directions × hidden size + 1) × outputs), as `SequenceModel.parameter_count()` counts them; they vary "
                  "with each trial's hidden size. `lstmcore variants` lists the LSTM layer's count alone. Times are "
                  "wall-clock per trial (dataset loading, training and evaluation) on the machine that ran it.")


def cell_diagrams(doc: Document, data: ReportData, figures: Path) -> None:
    """A section with each compared variant's cell (``lstmcore.diagram``), its results in the caption."""
    import lstmcore

    baseline, metric = data.baseline, data.metric
    doc.heading("The compared cells")
    welch = {c.variant: c for c in data.comparisons if c.test == "welch" and c.trials == "all"}
    for s in data.summaries:
        try:
            variant = lstmcore.get_variant(s.variant)
        except KeyError:
            doc.paragraph(f"`{s.variant}`: not registered where this report was made, so not drawn.")
            continue
        path = figures / f"cell-{s.variant}.png"
        lstmcore.diagram(variant, path)
        versus = ("the baseline" if s.variant == baseline else
                  f"against `{baseline}` (Welch, all trials): {welch[s.variant].verdict}, adjusted p = "
                  f"{_p(welch[s.variant].p_adjusted)}" if s.variant in welch else "not compared")
        doc.figure(path, f"{s.variant}: {s.completed} completed trial(s); test {metric} mean {_cell(s.test_mean)}, "
                         f"median {_cell(s.test_median)}, best by validation {_cell(s.best_test)}; {versus}.")


# -- the writing ---------------------------------------------------------------------------------------------------
def write_tables(rows, out: Path) -> None:
    flat = flat_rows(rows)
    columns: list[str] = []
    for row in flat:
        columns += [k for k in row if k not in columns]
    with open(out / "trials.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flat)
    (out / "trials.json").write_text(json.dumps(_without_nan(rows), indent=1, default=str))


def write_report_files(out: Path, config: StudyConfig, rows, data: ReportData, doc: Document) -> Path:
    """``trials.csv``, ``trials.json``, ``report.md``, ``report.html`` and ``summary.json`` in ``out``; returns the
    path of ``report.md``."""
    write_tables(rows, out)
    (out / "report.md").write_text(doc.markdown(out))
    (out / "report.html").write_text(doc.html(f"lstmcore ablation: {config.dataset}"))
    (out / "summary.json").write_text(json.dumps(data.summary(config), indent=1, default=str))
    return out / "report.md"


def _failures(summary) -> str:
    if not summary.failed:
        return "0"
    return f"{summary.failed} (" + ", ".join(f"{k}: {v}" for k, v in sorted(summary.failures.items())) + ")"


def _without_nan(value):
    """JSON has no NaN: missing statistics become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(v) for v in value]
    return value

"""``lstmcore report DIR``: the study's report as Markdown (PNG figures beside it) and HTML (figures embedded), plus
every trial as CSV and JSON and the statistics as JSON.

Files written to ``DIR/report/`` (or ``out``): ``report.md``, ``report.html``, ``figures/*.png``, ``trials.csv``,
``trials.json``, ``summary.json``.
"""
from __future__ import annotations

import base64
import csv
import html
import json
import math
from pathlib import Path

from lstmcore.ablation import analysis
from lstmcore.ablation.config import ConfigError, StudyConfig
from lstmcore.ablation.storage import flat_rows, load_study, read_study_file, trial_rows

BASELINE_COLOR = "#7f7f7f"
WORSE_COLOR = "#d62728"
BETTER_COLOR = "#2ca02c"
PLAIN_COLOR = "#1f77b4"


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


# -- figures -------------------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _robust_upper(values, direction: str) -> float | None:
    """An axis limit that keeps the bulk of the trials readable when a few are far off (``None``: no clipping)."""
    import numpy as np

    values = np.asarray([v for v in values if v is not None and math.isfinite(v)], float)
    if len(values) < 5:
        return None
    q1, q3 = np.percentile(values, [25, 75])
    limit = q3 + 3 * (q3 - q1) if direction == "minimize" else None
    return float(limit) if limit is not None and limit < values.max() else None


def _verdicts(comparisons, trials: str) -> dict[str, str]:
    return {c.variant: c.verdict for c in comparisons if c.trials == trials and c.test == "welch"}


def box_plots(rows, variants, baseline, direction, comparisons, metric, path: Path) -> bool:
    import numpy as np

    plt = _pyplot()
    if len(variants) <= 4:
        fig, axes = plt.subplots(1, 2, figsize=(max(8, 2.6 * len(variants)), 4.5))
    else:  # one panel above the other, so that many variants stay readable
        fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.1 * len(variants) + 1.5), 8.5))
    clipped = False
    for ax, (label, title) in zip(axes, [("all", "all trials"), ("top10", "best 10 % by validation")]):
        verdicts = _verdicts(comparisons, label)
        data, colors, names = [], [], []
        for variant in variants:
            done = analysis.completed(rows, variant)
            chosen = done if label == "all" else analysis.top_by_validation(done, direction)
            data.append([r["test"] for r in chosen])
            if variant == baseline:
                colors.append(BASELINE_COLOR)
                names.append(f"{variant}\n(baseline)")
            else:
                verdict = verdicts.get(variant, "not significant")
                colors.append({"worse": WORSE_COLOR, "better": BETTER_COLOR}.get(verdict, PLAIN_COLOR))
                names.append(variant + ("\n" + verdict if verdict != "not significant" else ""))
        sizes = sorted({len(d) for d in data if d})
        if label == "top10" and sizes:
            title += f" (n = {sizes[0]}{'–' + str(sizes[-1]) if len(sizes) > 1 else ''} per variant" + \
                (", few: see the warning)" if sizes[0] < analysis.FEW_TRIALS else ")")
        positions = np.arange(1, len(variants) + 1)
        present = [i for i, d in enumerate(data) if d]
        if present:
            parts = ax.boxplot([data[i] for i in present], positions=positions[present], widths=0.6,
                               patch_artist=True, showfliers=False)
            for patch, i in zip(parts["boxes"], present):
                patch.set_facecolor(colors[i])
                patch.set_alpha(0.45)
            rng = np.random.default_rng(0)
            for i in present:
                ax.scatter(positions[i] + rng.uniform(-0.15, 0.15, len(data[i])), data[i], s=10, color=colors[i],
                           zorder=3)
        ax.set_xticks(positions, names, rotation=0, fontsize=10)
        ax.set_title(title)
        ax.set_ylabel(f"test {metric}")
        upper = _robust_upper([v for d in data for v in d], direction)
        if upper is not None:
            low = min(v for d in data for v in d)
            ax.set_ylim(low - 0.05 * (upper - low), upper)
            clipped = True
            for position, values in zip(positions, data):
                above = sum(v > upper for v in values)
                if above:
                    ax.annotate(f"{above} above", (position, upper), ha="center", va="top", fontsize=9,
                                color=WORSE_COLOR)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return clipped


#: nine variants (the Odyssey group) told apart by colour and marker: the Okabe-Ito colour-blind-safe colours
#: with a black and a grey, each with its own marker shape.
VARIANT_STYLES = [("#000000", "o"), ("#E69F00", "s"), ("#56B4E9", "^"), ("#009E73", "D"), ("#F0E442", "v"),
                  ("#0072B2", "P"), ("#D55E00", "X"), ("#CC79A7", "*"), ("#999999", "<"), ("#882255", ">")]


def hyperparameter_plots(rows, variants, space, metric, direction, path: Path) -> None:
    plt = _pyplot()
    dims = [d for d in space.searched]
    order = sorted(dims, key=lambda d: {"learning_rate": 0, "hidden_size": 1}.get(d.name, 2))
    columns = min(2, len(order))  # two panels a row: readable at the width of the HTML page
    rows_of_panels = math.ceil(len(order) / columns)
    width = 5.5 * columns
    legend_columns = max(1, min(len(variants), int(width / 1.2)))
    legend_height = 0.35 * math.ceil(len(variants) / legend_columns) + 0.2  # inches below the panels
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(width, 4.2 * rows_of_panels + legend_height),
                             squeeze=False)
    all_values = [r["test"] for r in rows if r["state"] == "COMPLETE" and r.get("test") is not None]
    upper = _robust_upper(all_values, direction)
    for ax, dim in zip(axes.flat, order):
        for k, variant in enumerate(variants):
            done = analysis.completed(rows, variant)
            xs = [r["hyperparameters"][dim.name] for r in done]
            ys = [r["test"] for r in done]
            if dim.distribution == "one_minus_log_uniform":
                xs = [1 - x for x in xs]
            color, marker = VARIANT_STYLES[k % len(VARIANT_STYLES)]
            ax.scatter(xs, ys, s=28, alpha=0.8, color=color, marker=marker, edgecolors="#333333", linewidths=0.3,
                       label=variant)
        if dim.distribution in ("log_uniform", "one_minus_log_uniform"):
            from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

            ax.set_xscale("log")
            decades = math.log10(dim.high / dim.low)
            # 1-2-5 ticks when the range is narrow (labelled even within one decade), one per decade otherwise
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if decades <= 2 else (1.0,)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("1 - " + dim.name if dim.distribution == "one_minus_log_uniform" else dim.name, fontsize=12)
        ax.set_ylabel(f"test {metric}", fontsize=12)
        ax.tick_params(labelsize=11)
        if upper is not None and all_values:
            low = min(all_values)
            ax.set_ylim(low - 0.05 * (upper - low), upper)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(order):]:
        ax.set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=legend_columns, fontsize=12, markerscale=1.5,
               frameon=False, columnspacing=1.0, handletextpad=0.3)
    fig.tight_layout(rect=(0, legend_height / fig.get_figheight(), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def importance_plot(importances: dict[str, dict | None], parameters: list[str], path: Path) -> None:
    import numpy as np

    plt = _pyplot()
    groups = [name for name, values in importances.items() if values]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(groups) + 2), 3.8))
    width = 0.8 / max(1, len(parameters))
    x = np.arange(len(groups))
    for k, parameter in enumerate(parameters):
        ax.bar(x + k * width, [importances[g].get(parameter, 0.0) for g in groups], width, label=parameter)
    ax.set_xticks(x + width * (len(parameters) - 1) / 2, groups, fontsize=10)
    ax.set_ylabel("fANOVA importance (fraction of variance)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=10, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=max(1, len(parameters)), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the report ----------------------------------------------------------------------------------------------------
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
    write_tables(rows, out)
    variants = [v for v in config.variants if any(r["variant"] == v for r in rows)] or config.variants
    metric = next((r["metric"] for r in rows if r.get("metric")), "metric")
    direction = analysis.metric_direction(metric)
    baseline = config.baseline
    summaries = analysis.summarize(rows, variants, direction)
    comparisons = analysis.compare(rows, variants, baseline, direction, paired=not config.independent, alpha=alpha)
    parameters = [d.parameter for d in config.space.searched]
    importances = {variant: analysis.importance(analysis.completed(rows, variant), parameters)
                   for variant in variants}
    importances["all variants"] = analysis.importance(rows, parameters)

    doc = Document()
    doc.heading(f"Ablation study: {', '.join(variants)} on {config.dataset}", 1)
    n_complete = sum(s.completed for s in summaries)
    n_failed = sum(s.failed for s in summaries)
    pending = sum(1 for r in rows if r["state"] in ("RUNNING", "WAITING"))
    import lstmcore

    doc.bullets([
        f"lstmcore {lstmcore.__version__}; report of {len(rows)} planned trials with a result or in progress.",
        f"Dataset `{config.dataset}` {json.dumps(config.dataset_options) if config.dataset_options else ''}; "
        f"metric: test `{metric}` at the epoch best on validation ({'lower' if direction == 'minimize' else 'higher'}"
        f" is better).",
        f"Trials planned: {config.trials} per variant ({len(config.variants) * config.trials} in all); "
        f"completed: {n_complete}; failed: {n_failed}; not finished: {pending}.",
        f"Design: {'independent sampling per variant (as the paper)' if config.independent else 'paired: every variant trained with the same sampled hyperparameter settings'}"
        f"; base seed {config.seed}.",
        "Search space: " + "; ".join(config.space.describe()) + ".",
        "Training: " + ", ".join(f"{k}={v}" for k, v in config.training.items() if v is not None) + "; model: "
        + ", ".join(f"{k}={v}" for k, v in config.model.items()) + ".",
        f"Baseline: `{baseline}`. Tests of each variant against it: Welch's t-test (the paper's) and Mann–Whitney's "
        f"U{', and in the paired design the paired t-test and Wilcoxon signed-rank test' if not config.independent else ''}"
        f"; p-values adjusted by {analysis.CORRECTION} over the {max(0, len(variants) - 1)} comparisons of each "
        f"family; significant at adjusted p < {alpha}.",
    ])

    doc.heading("Test performance per variant (Fig. 3 of the paper)")
    any_complete = any(s.completed for s in summaries)
    if any_complete:
        box_path = figures / "boxplots.png"
        clipped = box_plots(rows, variants, baseline, direction, comparisons, metric, box_path)
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
               for s in summaries])

    cell_diagrams(doc, summaries, comparisons, baseline, metric, figures)

    doc.heading(f"Tests against the baseline `{baseline}`")
    headers = ["variant", "trials", "test", "n", "n baseline", "mean diff", "HL shift",
               f"{int(100 * (1 - alpha))} % CI", "statistic", "df", "p", f"p ({CORRECTION_SHORT})", "verdict"]
    order = list(analysis.TESTS)
    table = []
    for c in sorted(comparisons, key=lambda c: (order.index(c.test), c.trials != "all", variants.index(c.variant))):
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

    doc.heading("Hyperparameters (Fig. 4 and 5 of the paper)")
    if any_complete and config.space.searched:
        hyper_path = figures / "hyperparameters.png"
        hyperparameter_plots(rows, variants, config.space, metric, direction, hyper_path)
        doc.figure(hyper_path, f"Test {metric} of every completed trial against each searched hyperparameter.")
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

    doc.heading("Cost: parameters and training time")
    doc.table(["variant", "parameters incl. readout (median)", "min", "max", "epochs (median)", "s/epoch (median)",
               "s/trial (median)", "total trial time (s)"],
              [[s.variant, s.parameter_count_median, s.parameter_count_min, s.parameter_count_max, s.epochs_median,
                s.seconds_per_epoch_median, s.wall_time_median, s.wall_time_total] for s in summaries])
    doc.paragraph("Parameter counts are of the whole model: the LSTM layers and the readout (the output layer, "
                  "`W_out` and `b_out`: (directions × hidden size + 1) × outputs), as `SequenceModel.parameter_count()` counts them; they vary "
                  "with each trial's hidden size. `lstmcore variants` lists the LSTM layer's count alone. Times are "
                  "wall-clock per trial (dataset loading, training and evaluation) on the machine that ran it.")

    failures = [r for r in rows if r["state"] == "FAIL"]
    if failures:
        doc.heading("Failed trials")
        doc.table(["trial", "status", "reason"], [[r["key"], r.get("status"), (r.get("reason") or "")[:160]]
                                                  for r in failures])

    (out / "report.md").write_text(doc.markdown(out))
    (out / "report.html").write_text(doc.html(f"lstmcore ablation: {config.dataset}"))
    summary = {"config": config.to_dict(), "metric": metric, "direction": direction, "alpha": alpha,
               "correction": analysis.CORRECTION, "variants": analysis.as_dicts(summaries),
               "comparisons": analysis.as_dicts(comparisons), "importance": importances}
    (out / "summary.json").write_text(json.dumps(_without_nan(summary), indent=1, default=str))
    return out / "report.md"


CORRECTION_SHORT = "Holm"


def cell_diagrams(doc: Document, summaries, comparisons, baseline: str, metric: str, figures: Path) -> None:
    """A section with each compared variant's cell (``lstmcore.diagram``), its results in the caption."""
    import lstmcore

    doc.heading("The compared cells")
    welch = {c.variant: c for c in comparisons if c.test == "welch" and c.trials == "all"}
    for s in summaries:
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

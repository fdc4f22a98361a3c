"""The report's figures (matplotlib, imported when one is drawn): the box plots of the test metric per variant
(the paper's Fig. 3), the test metric against each searched hyperparameter (Fig. 4 and 5) and the fANOVA importances.
Each function draws one PNG from the trials table and the statistics of ``lstmcore.ablation.analysis``."""
from __future__ import annotations

import math
from pathlib import Path

from lstmcore.ablation import analysis

BASELINE_COLOR = "#7f7f7f"
WORSE_COLOR = "#d62728"
BETTER_COLOR = "#2ca02c"
PLAIN_COLOR = "#1f77b4"


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

"""Ablation studies of gate variants in the style of "LSTM: A Search Space Odyssey" (Greff et al., 2017)::

    from lstmcore.ablation import StudyConfig, run_study, write_report

    config = StudyConfig.from_tables({"study": {"variants": "peephole,vanilla", "dataset": "adding", "trials": 4}})
    run_study(config, "study", jobs=2)          # resumable: run it again to continue
    write_report("study")                       # study/report/report.md, report.html, trials.csv, ...

Needs the ``ablation`` extra (Optuna, Dask, matplotlib, scikit-learn for fANOVA): ``pip install "lstmcore[ablation]"``.
Importing this package is light; the heavy dependencies are imported when a study runs or a report is written.
"""
from __future__ import annotations

import importlib.util

from lstmcore.ablation.config import ConfigError, StudyConfig, resolve_variants
from lstmcore.ablation.space import Dimension, SearchSpace

#: module name -> distribution name, for the error message
REQUIREMENTS = {"optuna": "optuna", "distributed": "dask[distributed]", "matplotlib": "matplotlib",
                "sklearn": "scikit-learn"}


def require(*modules: str) -> None:
    """Raise ``ImportError`` naming the ``[ablation]`` extra if a dependency of studies and reports is missing."""
    missing = [REQUIREMENTS.get(m, m) for m in (modules or REQUIREMENTS) if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"lstmcore ablation studies need {', '.join(missing)}: "
                          f"pip install \"lstmcore[ablation]\"")


def run_study(config, out_dir, **options):
    """Run or resume a study (see ``lstmcore.ablation.study.run_study``)."""
    from lstmcore.ablation.study import run_study as _run

    return _run(config, out_dir, **options)


def write_report(study_dir, out=None, **options):
    """Write a study's report (see ``lstmcore.ablation.report.write_report``)."""
    from lstmcore.ablation.report import write_report as _write

    return _write(study_dir, out, **options)


__all__ = ["StudyConfig", "SearchSpace", "Dimension", "ConfigError", "resolve_variants", "run_study", "write_report",
           "require"]

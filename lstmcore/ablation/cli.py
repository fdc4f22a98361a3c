"""``lstmcore ablate`` and ``lstmcore report``: the command-line side of ``lstmcore.ablation``."""
from __future__ import annotations

import argparse
import json
import signal
import sys

ABLATE_HELP = "run or resume an ablation study of gate variants (Greff et al. 2017 protocol)"
REPORT_HELP = "write the report of a study directory (Markdown, HTML, CSV, JSON)"


def _key_value(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip().replace("-", "_"), parsed


def add_commands(subparsers) -> None:
    """Add ``ablate`` and ``report`` to the ``lstmcore`` command's subparsers."""
    ablate = subparsers.add_parser(
        "ablate", help=ABLATE_HELP, description=ABLATE_HELP + ". Settings come from the defaults, then --quick, then "
        "--config FILE (TOML), then the options below. Re-running the same command resumes the study.")
    what = ablate.add_argument_group("what to study")
    what.add_argument("--variants", help="comma-separated variant names, or a group: odyssey (default)")
    what.add_argument("--dataset", help="built-in dataset (adding, temporal_order, copy, jsb_chorales) or "
                                        "package.module:function returning a lstmcore Dataset (default: adding)")
    what.add_argument("--dataset-option", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                      help="keyword argument of the dataset loader, e.g. length=50 or path=jsb.json (repeatable)")
    what.add_argument("--trials", type=int, help="trials per variant (default 10)")
    what.add_argument("--param", action="append", default=[], metavar="NAME=SPEC",
                      help="search-space override: NAME=VALUE fixes it, NAME=DIST:LOW:HIGH with DIST one of "
                           "uniform, log_uniform, one_minus_log_uniform (repeatable)")
    design = what.add_mutually_exclusive_group()
    design.add_argument("--independent", dest="independent", action="store_true", default=None,
                        help="sample hyperparameters independently per variant (the paper's design)")
    design.add_argument("--paired", dest="independent", action="store_false",
                        help="every variant gets the same sampled settings (the default, unless a config says "
                             "otherwise)")
    what.add_argument("--seed", type=int, help="base seed of the plan (default 0)")
    what.add_argument("--baseline", help="variant the others are tested against (default: peephole, the paper's V)")
    what.add_argument("--config", metavar="FILE", help="TOML file with [study], [dataset], [training], [model], "
                                                       "[space] tables (see docs/ablation.md)")
    what.add_argument("--quick", action="store_true",
                      help="a small study that runs offline in a few minutes on 2 cores (adding problem, "
                           "5 variants x 10 trials)")
    budget = ablate.add_argument_group("training budget per trial")
    budget.add_argument("--epochs", type=int, help="maximum epochs (default 30)")
    budget.add_argument("--patience", type=int, help="early-stopping patience in epochs (default 5)")
    budget.add_argument("--batch-size", type=int, help="minibatch size (default 1, as the paper)")
    budget.add_argument("--time-budget", type=float, metavar="SECONDS", help="wall-clock limit of one trial")
    where = ablate.add_argument_group("where and how")
    where.add_argument("--out", required=True, metavar="DIR", help="study directory (journal, study.json, report)")
    where.add_argument("--jobs", type=int, help="local worker processes (default: the number of cores)")
    where.add_argument("--dask", metavar="ADDRESS", help="run the trials on a Dask scheduler, e.g. "
                                                         "tcp://scheduler:8786")
    where.add_argument("--threads", type=int, help="BLAS threads per trial (default: cores // jobs locally, 1 on Dask)")
    where.add_argument("--storage", metavar="URL", help="Optuna RDB URL (postgresql://...) instead of the journal file "
                                                        "in DIR")
    where.add_argument("--retry-failed", action="store_true",
                       help="re-run trials that failed (diverged or raised) in an earlier run")
    where.add_argument("--accept-variant-changes", action="store_true",
                       help="resume although a variant changed since the study ran it (another plugin version or "
                            "spec); the change is recorded in study.json")
    where.add_argument("--quiet", action="store_true", help="log lines instead of the live progress display")
    where.add_argument("--report", action="store_true", help="write the report when the study is complete")
    ablate.set_defaults(func=ablate_command)

    report = subparsers.add_parser("report", help=REPORT_HELP, description=REPORT_HELP + ".")
    report.add_argument("dir", metavar="DIR", help="a study directory written by lstmcore ablate")
    report.add_argument("--out", metavar="OUT", help="where to write the report (default: DIR/report)")
    report.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    report.set_defaults(func=report_command)


def build_config(args):
    """The study configuration of ``lstmcore ablate``'s arguments."""
    from lstmcore.ablation.config import QUICK_PRESET, StudyConfig, load_toml
    from lstmcore.ablation.space import parse_param_option

    layers = []
    if args.quick:
        layers.append(QUICK_PRESET)
    if args.config:
        layers.append(load_toml(args.config))
    study = {k: v for k, v in {"variants": args.variants, "dataset": args.dataset, "trials": args.trials,
                               "seed": args.seed, "independent": args.independent,
                               "baseline": args.baseline}.items() if v is not None}
    training = {k: v for k, v in {"max_epochs": args.epochs, "patience": args.patience, "batch_size": args.batch_size,
                                  "time_budget": args.time_budget}.items() if v is not None}
    space = dict(parse_param_option(option) for option in args.param)
    layers.append({"study": study, "dataset": dict(args.dataset_option), "training": training, "space": space})
    return StudyConfig.from_tables(*layers)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def ablate_command(args) -> int:
    from lstmcore.ablation import require
    from lstmcore.ablation.config import ConfigError

    try:
        require()
        config = build_config(args)
    except (ConfigError, ValueError, KeyError, ImportError) as exc:
        print(f"lstmcore ablate: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    from lstmcore.ablation.report import write_report
    from lstmcore.ablation.study import StudyInterrupted, run_study

    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        summary = run_study(config, args.out, jobs=args.jobs, dask=args.dask, storage=args.storage,
                            blas_threads=args.threads, quiet=args.quiet, retry_failed=args.retry_failed,
                            accept_variant_changes=args.accept_variant_changes)
    except StudyInterrupted as exc:
        print(f"lstmcore ablate: {exc}", file=sys.stderr)
        return 130
    except ConfigError as exc:
        print(f"lstmcore ablate: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"lstmcore ablate: {summary.completed} of {summary.planned} planned trials complete, {summary.failed} "
          f"failed ({summary.ran} run now) in {args.out}")
    if args.report:
        path = write_report(args.out)
        print(f"report: {path} and {path.with_suffix('.html')}")
    return 0


def report_command(args) -> int:
    from lstmcore.ablation import require
    from lstmcore.ablation.report import write_report

    from lstmcore.ablation.config import ConfigError

    try:
        require()
        path = write_report(args.dir, args.out, alpha=args.alpha)
    except (FileNotFoundError, ImportError, ConfigError) as exc:
        print(f"lstmcore report: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the report's folder cannot be written (a file in the way, permissions)
        print(f"lstmcore report: cannot write the report to {exc.filename or args.out}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    print(f"report: {path} and {path.with_suffix('.html')} (trials.csv, trials.json, summary.json beside them)")
    return 0

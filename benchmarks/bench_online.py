#!/usr/bin/env python
"""The online update (one sequence per update, the Odyssey protocol on JSB Chorales): fit's NumPy loop against the
compiled update (``lstmcore.training.online``), in CPU time of this process (a shared machine's load changes the
wall time, much less the CPU time), one BLAS thread.

    python benchmarks/bench_online.py updates [--hidden 20,63,200] [--epochs 3] [--repeats 2]
    python benchmarks/bench_online.py trials [--epochs 10] [--per-variant 1] [--config examples/ablation/odyssey_jsb_full.toml]

``updates``: CPU ms per update (the best of ``--repeats`` runs) over ``--epochs`` epochs of the 229 training chorales (peephole, SGD with Nesterov
momentum, input noise, the loss summed over time; no validation), beside the floor: the LSTM driver's forward and
BPTT alone on the same sequences. ``trials``: CPU seconds of whole trials of the study's plan (the first
``--per-variant`` trials of each variant, their sampled hidden size, learning rate, momentum, noise), trained for
exactly ``--epochs`` epochs (no early stopping, so both paths do the same work), then validated and tested as a study
does. The data: ``$LSTMCORE_DATA`` or the cache, as the config finds it (``--data`` to name the file).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from lstmcore.datasets import load_jsb_chorales
from lstmcore.training import SequenceModel, fit

PATHS = ("numpy", "compiled")
ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def on_path(path: str, fn):
    """``fn()`` with ``LSTMCORE_ONLINE=path``."""
    previous = os.environ.get("LSTMCORE_ONLINE")
    os.environ["LSTMCORE_ONLINE"] = path
    try:
        return fn()
    finally:
        if previous is None:
            del os.environ["LSTMCORE_ONLINE"]
        else:
            os.environ["LSTMCORE_ONLINE"] = previous


def kernel_floor(model: SequenceModel, train) -> float:
    """CPU seconds of the driver's forward and BPTT alone, once over every training sequence."""
    lstm = model.lstm
    params = lstm._checked_params()
    cell, H = lstm.cells[0], lstm.hidden_size
    sequences = [np.ascontiguousarray(train.x[i, :n].reshape(n, 1, -1)) for i, n in enumerate(train.lengths)]

    def run():
        for x in sequences:
            out = np.zeros((x.shape[0], 1, H), model.dtype)
            state = tuple(np.zeros((1, H), model.dtype) for _ in cell.state_names)
            _, cache = cell.forward(params[0][0], x, state, np.array([x.shape[0]], np.int32), False, out)
            cell.backward(params[0][0], cache, out, state, None, False)

    return cpu_seconds(run)


def updates(args, data) -> None:
    print(f"| hidden | NumPy loop ms/update | compiled ms/update | speed-up | driver alone ms/update |")
    print("|---|---|---|---|---|")
    n = len(data.train)

    def one_run(path, hidden, train, epochs):
        model = SequenceModel(data.n_inputs, hidden, data.n_outputs, variant="peephole", seed=0)
        return on_path(path, lambda: cpu_seconds(lambda: fit(
            model, train, None, optimizer="sgd", nesterov=True, momentum=0.9, learning_rate=1e-5, input_noise=0.5,
            loss_normalization="sequence", batch_size=1, max_epochs=epochs, seed=0)))

    for path in PATHS:      # warm-up: first calls, lazy imports
        one_run(path, 20, data.train.subset(np.arange(8)), 1)
    for hidden in args.hidden:
        times = {path: min(one_run(path, hidden, data.train, args.epochs) for _ in range(args.repeats))
                 for path in PATHS}
        floor = kernel_floor(SequenceModel(data.n_inputs, hidden, data.n_outputs, variant="peephole", seed=0),
                             data.train)
        per = {path: times[path] / (args.epochs * n) * 1e3 for path in PATHS}
        print(f"| {hidden} | {per['numpy']:.3f} | {per['compiled']:.3f} | {per['numpy'] / per['compiled']:.2f}x "
              f"| {floor / n * 1e3:.3f} |", flush=True)


def trials(args) -> None:
    from lstmcore.ablation.config import StudyConfig, load_toml
    from lstmcore.ablation.plan import planned_trial
    from lstmcore.ablation.trial import load_study_dataset, make_task, run_trial

    options = {"path": args.data} if args.data else {}
    config = StudyConfig.from_tables(load_toml(args.config), {"dataset": options})
    load_study_dataset(config.dataset, config.dataset_options)     # loaded once per worker: not part of a trial
    print(f"| trial | hidden | NumPy loop s | compiled s | speed-up |")
    print("|---|---|---|---|---|")
    totals = dict.fromkeys(PATHS, 0.0)
    for index in range(args.per_variant):
        for variant in config.variants:
            planned = planned_trial(config, variant, index)
            task = make_task(config, planned, blas_threads=1)
            task["training"].update(max_epochs=args.epochs, patience=None)
            seconds = {}
            for path in PATHS:
                result = {}
                seconds[path] = on_path(path, lambda: cpu_seconds(lambda: result.update(run_trial(task))))
                if result["state"] != "COMPLETE" or result["epochs"] != args.epochs:
                    print(f"{planned.key} ({path}): {result['state']} {result.get('reason')}", file=sys.stderr)
                totals[path] += seconds[path]
            print(f"| {planned.key} | {planned.hyperparameters['hidden_size']} | {seconds['numpy']:.2f} | "
                  f"{seconds['compiled']:.2f} | {seconds['numpy'] / seconds['compiled']:.2f}x |", flush=True)
    count = args.per_variant * len(config.variants)
    print(f"| mean of {count} ({args.epochs} epochs each) | | {totals['numpy'] / count:.2f} | "
          f"{totals['compiled'] / count:.2f} | {totals['numpy'] / totals['compiled']:.2f}x |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("updates", "trials"))
    parser.add_argument("--hidden", type=lambda s: [int(v) for v in s.split(",")], default=[20, 63, 200])
    parser.add_argument("--epochs", type=int, default=None, help="3 for updates, 10 for trials")
    parser.add_argument("--per-variant", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="updates: the best of this many runs of each")
    parser.add_argument("--config", default=str(ROOT / "examples" / "ablation" / "odyssey_jsb_full.toml"))
    parser.add_argument("--data", help="the JSB Chorales file (default: $LSTMCORE_DATA or the cache)")
    args = parser.parse_args()
    if args.epochs is None:
        args.epochs = 3 if args.what == "updates" else 10
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; CPU time of this process, 1 BLAS thread")
    with threadpool_limits(1):
        if args.what == "updates":
            updates(args, load_jsb_chorales(args.data, download=False))
        else:
            trials(args)


if __name__ == "__main__":
    main()

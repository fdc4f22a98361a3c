"""The adding problem (Hochreiter & Schmidhuber 1997): read two marked numbers out of a long sequence and add them.
Always predicting 1 gives MSE 2/12 ≈ 0.167; "solved" means a test MSE below 0.01.

    OPENBLAS_NUM_THREADS=1 python examples/adding_problem.py --variant peephole --length 100
"""
import argparse
import json
import os
import time

from lstmcore.datasets import adding_problem
from lstmcore.training import SequenceModel, evaluate, fit

BASELINE_MSE = 2.0 / 12.0
SOLVED_MSE = 0.01


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="peephole")
    parser.add_argument("--length", type=int, default=100, help="sequence length T")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="adam")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--nesterov", action="store_true")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument("--clip", type=float, default=1.0, help="clip the gradient's global norm (0: off)")
    parser.add_argument("--stop-at", type=float, default=None, help="stop once the validation MSE is below this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the results and history here")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)

    data = adding_problem(length=args.length, n_train=args.n_train, n_valid=1000, n_test=1000, seed=args.seed)
    model = SequenceModel(data.n_inputs, args.hidden, data.n_outputs, variant=args.variant, output=data.output,
                          per_step=data.per_step, seed=args.seed)
    print(f"{data}\n{model}: {model.parameter_count()} parameters; baseline MSE {BASELINE_MSE:.4f}", flush=True)

    def report(record):
        print(f"epoch {record['epoch']:3d}  updates {record['updates']:6d}  train {record['train_loss']:.5f}  "
              f"valid {record['valid_loss']:.5f}  {record['seconds']:.1f} s", flush=True)
        return args.stop_at is not None and record["valid_loss"] < args.stop_at

    start = time.perf_counter()
    result = fit(model, data.train, data.valid, optimizer=args.optimizer, learning_rate=args.lr,
                 momentum=args.momentum, nesterov=args.nesterov, batch_size=args.batch_size,
                 max_epochs=args.epochs, patience=args.patience, clip_norm=args.clip or None, seed=args.seed,
                 progress=args.progress, callback=report)
    train_time = time.perf_counter() - start
    test_mse = evaluate(model, data.test)
    updates = result.history[result.best_epoch - 1]["updates"] if result.best_epoch else 0
    first_solved = next((r["updates"] for r in result.history if r["valid_loss"] < SOLVED_MSE), None)
    summary = {"variant": args.variant, "length": args.length, "status": result.status, "reason": result.reason,
               "best_epoch": result.best_epoch, "updates_to_best": updates,
               "updates_to_solve": first_solved, "valid_mse": result.best_valid,
               "test_mse": test_mse, "solved": test_mse < SOLVED_MSE, "baseline_mse": BASELINE_MSE,
               "train_seconds": train_time, "threads": os.environ.get("OPENBLAS_NUM_THREADS"),
               "hyperparameters": vars(args)}
    reached = "never" if first_solved is None else f"first after {first_solved} updates"
    print(f"{args.variant}: {result.status} ({result.reason}); test MSE {test_mse:.5f} (baseline "
          f"{BASELINE_MSE:.4f}) at the best epoch ({updates} updates); valid MSE below {SOLVED_MSE}: {reached}; "
          f"{'solved' if summary['solved'] else 'not solved'}; {train_time:.1f} s", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({**summary, "history": result.history}, handle, indent=1)
    return summary


if __name__ == "__main__":
    main()

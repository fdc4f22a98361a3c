"""Train one LSTM layer on JSB Chorales (next-step prediction of the 88-key piano roll) and report the test NLL per
step, the paper's metric (Greff et al. 2017 reach about 8.4-8.8 nats with the best settings).

    OPENBLAS_NUM_THREADS=1 python examples/train_jsb.py --data path/to/jsb-chorales --variant peephole
"""
import argparse
import json
import os
import time

import numpy as np

from lstmcore.datasets import load_jsb_chorales
from lstmcore.training import SequenceModel, evaluate, fit, save_checkpoint


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="the JSON/pickle or its folder (default: LSTMCORE_DATA, the "
                                                     "cache folder, else a download)")
    parser.add_argument("--variant", default="peephole")
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="adam")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--nesterov", action="store_true")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=15)
    parser.add_argument("--loss-normalization", choices=("step", "sequence"), default="step",
                        help="mean loss per step, or summed over time and averaged over the batch (the paper's scale)")
    parser.add_argument("--noise", type=float, default=0.0, help="std of Gaussian input noise")
    parser.add_argument("--clip", type=float, default=None, help="clip the gradient's global norm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--checkpoint", default=None, help="save the best model here (.npz)")
    parser.add_argument("--json", default=None, help="write the results and history here")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)

    data = load_jsb_chorales(args.data)
    model = SequenceModel(data.n_inputs, args.hidden, data.n_outputs, variant=args.variant, num_layers=args.layers,
                          output=data.output, per_step=data.per_step, seed=args.seed, dtype=np.dtype(args.dtype))
    print(f"{data}\n{model}: {model.parameter_count()} parameters", flush=True)
    start = time.perf_counter()
    result = fit(model, data.train, data.valid, optimizer=args.optimizer, learning_rate=args.lr,
                 momentum=args.momentum, nesterov=args.nesterov, batch_size=args.batch_size,
                 max_epochs=args.epochs, patience=args.patience, input_noise=args.noise, clip_norm=args.clip,
                 seed=args.seed, progress=args.progress, loss_normalization=args.loss_normalization,
                 callback=lambda r: print(f"epoch {r['epoch']:3d}  train {r['train_loss']:.4f}  valid "
                                          f"{r['valid_loss']:.4f}  {r['seconds']:.1f} s", flush=True))
    train_time = time.perf_counter() - start
    test_nll = evaluate(model, data.test)
    summary = {"variant": args.variant, "status": result.status, "reason": result.reason,
               "best_epoch": result.best_epoch, "valid_nll": result.best_valid, "test_nll": test_nll,
               "train_seconds": train_time, "epochs": result.epochs, "parameters": model.parameter_count(),
               "threads": os.environ.get("OPENBLAS_NUM_THREADS"), "hyperparameters": vars(args)}
    print(f"{result.status} ({result.reason}); best epoch {result.best_epoch}: valid NLL {result.best_valid:.4f}, "
          f"test NLL {test_nll:.4f} nats per step; {train_time:.1f} s", flush=True)
    if args.checkpoint:
        save_checkpoint(model, args.checkpoint, **{k: v for k, v in summary.items() if k != "hyperparameters"},
                        hyperparameters=vars(args))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({**summary, "history": result.history}, handle, indent=1)
    return summary


if __name__ == "__main__":
    main()

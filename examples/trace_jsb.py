"""Train a small LSTM briefly on JSB Chorales, then trace one test chorale through it and plot its gates and states
(the figure of docs/stepping-through-a-cell.md).

    OPENBLAS_NUM_THREADS=1 python examples/trace_jsb.py --data /path/to/jsb-chorales --out docs/images/jsb-trace.png
"""
import argparse
import time

import numpy as np

import lstmcore.plot
from lstmcore.datasets import load_jsb_chorales
from lstmcore.training import SequenceModel, evaluate, fit


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="the JSON/pickle or its folder")
    parser.add_argument("--variant", default="peephole")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--chorale", type=int, default=0, help="which test chorale to trace")
    parser.add_argument("--steps", type=int, default=48, help="trace this many of its first steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="jsb-trace.png")
    args = parser.parse_args(argv)

    data = load_jsb_chorales(args.data)
    model = SequenceModel(data.n_inputs, args.hidden, data.n_outputs, variant=args.variant, output=data.output,
                          per_step=data.per_step, seed=args.seed)
    start = time.perf_counter()
    result = fit(model, data.train, data.valid, optimizer="adam", learning_rate=1e-2, batch_size=8,
                 max_epochs=args.epochs, seed=args.seed)
    print(f"{model}: {result.epochs} epochs in {time.perf_counter() - start:.0f} s, valid NLL "
          f"{result.best_valid:.2f}, test NLL {evaluate(model, data.test):.2f} nats per step")
    print(model.summary())

    test = data.test
    length = min(int(test.lengths[args.chorale]), args.steps)
    x = test.x[args.chorale:args.chorale + 1, :length]          # (1, T, 88), batch-first like the model
    trace = model.lstm.trace(x)
    figure = lstmcore.plot.trace(trace, sequence=0, path=args.out)
    print(f"wrote {args.out} ({length} steps of test chorale {args.chorale})")
    return trace, figure


if __name__ == "__main__":
    main()

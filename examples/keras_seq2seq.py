"""The Keras seed's sequence-to-sequence model, on lstmcore: an LSTM returning sequences, a per-step Dense readout
(Keras' ``TimeDistributed(Dense)``), mean squared error, Adam, 10 epochs. The Keras original:

    model = keras.Sequential([keras.Input((T, 1)), keras.layers.LSTM(32, return_sequences=True),
                              keras.layers.TimeDistributed(keras.layers.Dense(1))])
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=10, batch_size=32, validation_data=(x_valid, y_valid))

The task: sine waves of random frequency, phase and amplitude, with a little noise; at every step predict the next
value of the clean wave. Predicting the current input (persistence) is the baseline to beat.

    python examples/keras_seq2seq.py              # any registered variant: --variant peephole, coupled, ...
"""
import argparse
import time

import numpy as np

from lstmcore.datasets import Split
from lstmcore.training import SequenceModel, evaluate, fit


def sine_waves(n: int, steps: int, rng: np.random.Generator) -> Split:
    """``x_t = A sin(ω t + φ) + noise``, target ``y_t = A sin(ω (t + 1) + φ)``."""
    t = np.arange(steps + 1)[None, :]
    omega = rng.uniform(0.1, 0.5, size=(n, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    amplitude = rng.uniform(0.5, 1.0, size=(n, 1))
    clean = amplitude * np.sin(omega * t + phase)
    x = clean[:, :-1] + 0.05 * rng.standard_normal((n, steps))
    return Split(x[..., None].astype(np.float32), clean[:, 1:, None].astype(np.float32),
                 np.full(n, steps, dtype=np.int64))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="vanilla", help="vanilla is Keras' LSTM")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (Keras' default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    train, valid, test = (sine_waves(n, args.steps, rng) for n in (args.n_train, 500, 500))
    model = SequenceModel(1, args.hidden, 1, variant=args.variant, output="linear", per_step=True, seed=args.seed)
    persistence = float(np.mean((test.x - test.y) ** 2))
    print(f"{model}: {model.parameter_count()} parameters; untrained test MSE {evaluate(model, test):.4f}, "
          f"persistence baseline {persistence:.4f}", flush=True)
    start = time.perf_counter()
    result = fit(model, train, valid, optimizer="adam", learning_rate=args.lr, batch_size=args.batch_size,
                 max_epochs=args.epochs, seed=args.seed, progress=args.progress,
                 callback=lambda r: print(f"epoch {r['epoch']:2d}  loss {r['train_loss']:.4f}  val_loss "
                                          f"{r['valid_loss']:.4f}  {r['seconds']:.1f} s", flush=True))
    test_mse = evaluate(model, test)
    print(f"{result.status}: test MSE {test_mse:.4f} (persistence {persistence:.4f}) at epoch {result.best_epoch}; "
          f"{time.perf_counter() - start:.1f} s", flush=True)
    return {"test_mse": test_mse, "persistence_mse": persistence, "status": result.status}


if __name__ == "__main__":
    main()

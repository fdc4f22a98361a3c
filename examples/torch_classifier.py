"""The PyTorch seed's classifier, on lstmcore: an LSTM whose last step feeds a Linear layer, cross-entropy, Adam.
The PyTorch original:

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(input_size=1, hidden_size=32, batch_first=True)
            self.fc = nn.Linear(32, 3)
        def forward(self, x):
            output, (h_n, c_n) = self.lstm(x)
            return self.fc(output[:, -1, :])
    loss_fn, optimizer = nn.CrossEntropyLoss(), torch.optim.Adam(model.parameters(), lr=1e-3)

lstmcore takes the ``lengths`` of a padded batch, so the readout sees each sequence's last *real* step (what PyTorch
needs ``pack_padded_sequence`` for). The task: which of three frequencies a noisy sine wave of random length has.
With ``--check-torch`` (torch installed, ``--variant vanilla``) the trained weights are copied into the
``nn.LSTM`` + ``nn.Linear`` above and both must give the same logits. The same model trained by PyTorch, with
lstmcore's cells as ``nn.Module``s: ``examples/torch_module_classifier.py``.

    python examples/torch_classifier.py
"""
import argparse
import time

import numpy as np

from lstmcore.datasets import Split, pad_sequences
from lstmcore.training import SequenceModel, accuracy, evaluate, fit

FREQUENCIES = (0.15, 0.3, 0.6)


def noisy_sines(n: int, rng: np.random.Generator, min_steps: int = 20, max_steps: int = 60) -> Split:
    labels = rng.integers(0, len(FREQUENCIES), size=n)
    sequences = []
    for label in labels:
        t = np.arange(rng.integers(min_steps, max_steps + 1))
        wave = np.sin(FREQUENCIES[label] * t + rng.uniform(0, 2 * np.pi))
        sequences.append((wave + 0.3 * rng.standard_normal(t.size))[:, None])
    x, lengths = pad_sequences(sequences, np.float32)
    return Split(x, labels.astype(np.int64), lengths)


def check_against_torch(model: SequenceModel, split: Split) -> float:
    """Copy the weights into nn.LSTM + nn.Linear and compare the logits of full-length sequences."""
    import torch

    from lstmcore.interop import to_torch

    lstm = to_torch(model.lstm)
    fc = torch.nn.Linear(model.hidden_size, model.output_size)
    with torch.no_grad():
        fc.weight.copy_(torch.from_numpy(model.params["W_out"]))
        fc.bias.copy_(torch.from_numpy(model.params["b_out"]))
        full = split.subset(np.flatnonzero(split.lengths == split.lengths.max()))
        output, _ = lstm(torch.from_numpy(full.x))
        theirs = fc(output[:, -1, :]).numpy()
    ours = model.forward(full.x, full.lengths)
    return float(np.max(np.abs(ours - theirs)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="vanilla", help="vanilla is PyTorch's nn.LSTM")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--n-train", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-torch", action="store_true")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    train, valid, test = (noisy_sines(n, rng) for n in (args.n_train, 300, 300))
    model = SequenceModel(1, args.hidden, len(FREQUENCIES), variant=args.variant, output="softmax", per_step=False,
                          seed=args.seed)
    print(f"{model}: {model.parameter_count()} parameters; chance accuracy 1/3", flush=True)
    start = time.perf_counter()
    result = fit(model, train, valid, optimizer="adam", learning_rate=args.lr, batch_size=args.batch_size,
                 max_epochs=args.epochs, patience=5, seed=args.seed, progress=args.progress,
                 callback=lambda r: print(f"epoch {r['epoch']:2d}  loss {r['train_loss']:.4f}  val_loss "
                                          f"{r['valid_loss']:.4f}  {r['seconds']:.1f} s", flush=True))
    summary = {"status": result.status, "test_cross_entropy": evaluate(model, test),
               "test_accuracy": accuracy(model, test)}
    print(f"{result.status}: test cross-entropy {summary['test_cross_entropy']:.4f}, accuracy "
          f"{summary['test_accuracy']:.3f}; {time.perf_counter() - start:.1f} s", flush=True)
    if args.check_torch:
        summary["max_abs_difference_vs_torch"] = check_against_torch(model, test)
        print(f"torch nn.LSTM + nn.Linear with the same weights: max |logit difference| "
              f"{summary['max_abs_difference_vs_torch']:.2e}", flush=True)
    return summary


if __name__ == "__main__":
    main()

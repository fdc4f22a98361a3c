"""The PyTorch seed's classifier in PyTorch, with its ``nn.LSTM`` swapped for ``lstmcore.torch.LSTM`` cells that
PyTorch does not have (``peephole``, ``coupled``), trained beside ``nn.LSTM`` by the same torch loop (Adam,
cross-entropy, ``PackedSequence`` batches) on the task of ``examples/torch_classifier.py``: which of three frequencies
a noisy sine wave of random length has. The seed:

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(input_size=1, hidden_size=32, batch_first=True)
            self.fc = nn.Linear(32, 3)
        def forward(self, x):
            output, (h_n, c_n) = self.lstm(x)
            return self.fc(output[:, -1, :])

Here ``forward`` takes a packed batch and reads ``h_n[-1]``, each sequence's last real step (``output[:, -1]`` would
read padding). Only the constructor line differs between the three models.

    python examples/torch_module_classifier.py                  # nn.LSTM, peephole, coupled; accuracy and time
    python examples/torch_module_classifier.py --cells vanilla,coupled --epochs 5
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import lstmcore.torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_classifier import FREQUENCIES, noisy_sines  # noqa: E402  (the same data)


class Classifier(nn.Module):
    def __init__(self, cell: str, hidden_size: int):
        super().__init__()
        if cell == "nn.LSTM":
            self.lstm = nn.LSTM(input_size=1, hidden_size=hidden_size, batch_first=True)
        else:
            self.lstm = lstmcore.torch.LSTM(input_size=1, hidden_size=hidden_size, variant=cell, batch_first=True)
        self.fc = nn.Linear(hidden_size, len(FREQUENCIES))

    def forward(self, x, lengths):
        output, (h_n, *_) = self.lstm(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        return self.fc(h_n[-1])


def train(cell, train_split, test_split, args):
    torch.manual_seed(args.seed)
    model = Classifier(cell, args.hidden)
    loss_fn, optimizer = nn.CrossEntropyLoss(), torch.optim.Adam(model.parameters(), lr=args.lr)
    x, y, lengths = (torch.from_numpy(a) for a in (train_split.x, train_split.y, train_split.lengths))
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    for _ in range(args.epochs):
        for batch in torch.randperm(len(y), generator=generator).split(args.batch_size):
            optimizer.zero_grad()
            loss = loss_fn(model(x[batch], lengths[batch]), y[batch])
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        logits = model(torch.from_numpy(test_split.x), torch.from_numpy(test_split.lengths))
        accuracy = float((logits.argmax(1).numpy() == test_split.y).mean())
    return {"cell": cell, "parameters": sum(p.numel() for p in model.lstm.parameters()), "train_loss": loss.item(),
            "test_accuracy": accuracy, "seconds": seconds}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", default="nn.LSTM,peephole,coupled",
                        help="nn.LSTM and/or any lstmcore variant (lstmcore variants lists them)")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--n-train", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    train_split, test_split = noisy_sines(args.n_train, rng), noisy_sines(300, rng)
    results = []
    for cell in args.cells.split(","):
        result = train(cell, train_split, test_split, args)
        results.append(result)
        print(f"{cell:9s} {result['parameters']:5d} parameters  train loss {result['train_loss']:.3f}  test accuracy "
              f"{result['test_accuracy']:.3f}  {result['seconds']:.1f} s (chance 1/3)", flush=True)
    return results


if __name__ == "__main__":
    main()

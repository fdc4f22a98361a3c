#!/usr/bin/env python
"""Time ``lstmcore.torch.LSTM`` (the nn.Module bridge) against lstmcore's own NumPy API, ``torch.nn.LSTM`` and a
peephole cell written the way PyTorch users write one (eager, and TorchScript), at bench_lstm.py's five configurations.

    python benchmarks/bench_torch.py                       # float32, 1 thread, all five configurations
    python benchmarks/bench_torch.py --threads 2 --configs small,large --quick

One single-layer, unidirectional layer per configuration, time-major ``(T, B, I)`` input; the timing (warm-up,
median of samples of at least 2 ms, retries on a disturbed machine, ``*`` when still noisy) is bench_lstm.py's.

- ``numpy API``: ``lstmcore.LSTM`` called and ``layer.backward(d_out)`` (the input gradient included).
- ``bridge``: ``lstmcore.torch.LSTM`` with the same variant; forward under ``torch.no_grad()``, forward+backward with
  autograd, ``output.backward(grad)`` with the input requiring grad (as the others).
- ``nn.LSTM``: PyTorch's fused LSTM (vanilla only), as in bench_lstm.py.
- ``custom eager`` / ``custom script``: a peephole cell and a layer looping over time, after PyTorch's own
  ``benchmarks/fastrnns/custom_lstms.py`` (``LSTMCell`` + ``LSTMLayer``, peepholes added as PyTorch users add them,
  issue 630), run eagerly and as ``torch.jit.script``.
The ratios: ``bridge ÷ numpy`` (target <= 1.1) and ``custom ÷ bridge`` for the peephole cell (target >= 5).
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_lstm  # noqa: E402
from bench_lstm import CONFIGS, environment, measure, ms, ratio, table  # noqa: E402

import lstmcore  # noqa: E402
import lstmcore.torch  # noqa: E402


class PeepholeCell(nn.Module):
    """``custom_lstms.py``'s ``LSTMCell`` with peepholes: i, f see c_{t-1}, o sees c_t (the paper's V)."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        bound = hidden_size ** -0.5
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size).uniform_(-bound, bound))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size).uniform_(-bound, bound))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size).uniform_(-bound, bound))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size).uniform_(-bound, bound))
        self.peephole = nn.Parameter(torch.empty(3, hidden_size).uniform_(-bound, bound))

    def forward(self, input: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        hx, cx = state
        gates = (torch.mm(input, self.weight_ih.t()) + self.bias_ih + torch.mm(hx, self.weight_hh.t())
                 + self.bias_hh)
        ingate, forgetgate, cellgate, outgate = gates.chunk(4, 1)
        ingate = torch.sigmoid(ingate + self.peephole[0] * cx)
        forgetgate = torch.sigmoid(forgetgate + self.peephole[1] * cx)
        cy = forgetgate * cx + ingate * torch.tanh(cellgate)
        hy = torch.sigmoid(outgate + self.peephole[2] * cy) * torch.tanh(cy)
        return hy, (hy, cy)


class Layer(nn.Module):
    """``custom_lstms.py``'s ``LSTMLayer``: the cell over the time steps, outputs stacked."""

    def __init__(self, cell: nn.Module):
        super().__init__()
        self.cell = cell

    def forward(self, input: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        inputs = input.unbind(0)
        outputs = torch.jit.annotate(list[Tensor], [])
        for i in range(len(inputs)):
            out, state = self.cell(inputs[i], state)
            outputs += [out]
        return torch.stack(outputs), state


def autograd_calls(module, x, d_out, state=None):
    """(forward under no_grad, forward+backward with the input's gradient) of a torch module."""
    tx, tg = torch.from_numpy(x), torch.from_numpy(d_out)
    tx_grad = tx.clone().requires_grad_(True)
    args = () if state is None else (state,)

    def fwd():
        with torch.no_grad():
            module(tx, *args)

    def fwd_bwd():
        module.zero_grad(set_to_none=True)
        tx_grad.grad = None
        module(tx_grad, *args)[0].backward(tg)
    return fwd, fwd_bwd


def numpy_api_calls(layer, x, d_out):
    def fwd_bwd():
        layer(x)
        layer.backward(d_out)
    return (lambda: layer(x)), fwd_bwd


def run(args) -> list[dict]:
    budget, max_samples = (0.1, 10) if args.quick else (0.4, 100)
    rows = []

    def timed(pair):
        return [measure(fn, budget, max_samples, args.retries, args.max_wait) for fn in pair]

    with threadpool_limits(limits=args.threads):
        torch.set_num_threads(args.threads)
        for name in args.configs:
            B, T, I, H = CONFIGS[name]
            rng = np.random.default_rng(0)
            x = rng.standard_normal((T, B, I)).astype(np.float32)
            d_out = rng.standard_normal((T, B, H)).astype(np.float32)
            row = {"config": name, "B": B, "T": T, "I": I, "H": H}
            for variant in ("vanilla", "peephole"):
                print(f"{name} {variant}", file=sys.stderr, flush=True)
                layer = lstmcore.LSTM(I, H, variant=variant, seed=0)
                row[f"numpy_{variant}"] = timed(numpy_api_calls(layer, x, d_out))
                torch.manual_seed(0)
                row[f"bridge_{variant}"] = timed(autograd_calls(lstmcore.torch.LSTM(I, H, variant=variant), x, d_out))
            torch.manual_seed(0)
            row["nn_lstm"] = timed(autograd_calls(nn.LSTM(I, H), x, d_out))
            state = (torch.zeros(B, H), torch.zeros(B, H))
            torch.manual_seed(0)
            eager = Layer(PeepholeCell(I, H))
            row["custom_eager"] = timed(autograd_calls(eager, x, d_out, state))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                script = torch.jit.script(Layer(PeepholeCell(I, H)))
                row["custom_script"] = timed(autograd_calls(script, x, d_out, state))
            rows.append(row)
    return rows


def report(rows) -> str:
    out = []
    for k, what in enumerate(("forward", "forward+backward")):
        lines = []
        for r in rows:
            m = {key: value[k] for key, value in r.items() if isinstance(value, list)}
            lines.append([f"{r['config']} ({r['B']}, {r['T']}, {r['I']}, {r['H']})",
                          ms(m["numpy_vanilla"]), ms(m["bridge_vanilla"]), ratio(m["bridge_vanilla"],
                                                                                 m["numpy_vanilla"]),
                          ms(m["nn_lstm"]), ratio(m["bridge_vanilla"], m["nn_lstm"]),
                          ms(m["numpy_peephole"]), ms(m["bridge_peephole"]), ratio(m["bridge_peephole"],
                                                                                   m["numpy_peephole"]),
                          ms(m["custom_eager"]), ms(m["custom_script"]),
                          ratio(m["custom_eager"], m["bridge_peephole"]),
                          ratio(m["custom_script"], m["bridge_peephole"])])
        header = ["config (B, T, I, H)", "vanilla: numpy API", "bridge", "bridge ÷ numpy", "nn.LSTM",
                  "bridge ÷ nn.LSTM", "peephole: numpy API", "bridge", "bridge ÷ numpy", "custom eager",
                  "custom script", "eager ÷ bridge", "script ÷ bridge"]
        out.append(f"### {what}, milliseconds (median)\n\n{table(header, lines)}")
    return "\n\n".join(out)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)} (default all)")
    p.add_argument("--threads", type=int, default=1, help="threads of the BLAS, the team and torch (default 1)")
    p.add_argument("--quick", action="store_true", help="short time budget and few repeats per measurement")
    p.add_argument("--retries", type=int, default=4, help="re-measure a noisy or disturbed timing up to N times")
    p.add_argument("--max-wait", type=float, default=30.0, help="seconds to wait for a quiet machine before a retry")
    p.add_argument("--cpu-time", action="store_true",
                   help="time the calling thread's CPU time (with --threads 1: immune to other jobs)")
    args = p.parse_args(argv)
    args.configs = args.configs.split(",")
    for name in args.configs:
        if name not in CONFIGS:
            p.error(f"unknown config {name!r}; choose from {', '.join(CONFIGS)}")
    if args.threads < 1:
        p.error("--threads must be a positive integer")
    if args.cpu_time and args.threads != 1:
        p.error("--cpu-time measures one thread: use it with --threads 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.cpu_time:
        bench_lstm.CLOCK = time.thread_time
    rows = run(args)
    print(f"torch bridge benchmark: {' '.join(sys.argv[1:]) or '(defaults)'}, float32, {args.threads} thread(s)\n\n"
          f"{environment()}\n\n{report(rows)}")
    return rows


if __name__ == "__main__":
    main()

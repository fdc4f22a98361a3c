#!/usr/bin/env python
"""What making a forward immune to later in-place changes costs: the copies of the parameters and of ``x`` that each
forward makes, against a forward, and against a fingerprint (CRC-32) that would only detect a change.

    python benchmarks/bench_copies.py [--threads 1] [--repeats 15]

For every config of ``bench_lstm.py`` (vanilla, float32, one layer): the best of ``--repeats`` timings of each.
"""
from __future__ import annotations

import argparse
import time
import zlib

import numpy as np
from threadpoolctl import threadpool_limits

import lstmcore
from bench_lstm import CONFIGS


def best(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    print(f"| config | MB copied | forward ms | copies ms | % of forward | CRC-32 ms | % of forward |")
    print("|---|---|---|---|---|---|---|")
    with threadpool_limits(args.threads):
        for name, (B, T, I, H) in CONFIGS.items():
            layer = lstmcore.LSTM(I, H, seed=0)
            x = np.random.default_rng(0).normal(size=(T, B, I)).astype(np.float32)
            arrays = [*layer.params.values(), x]
            forward = best(lambda: layer(x), args.repeats)
            copies = best(lambda: [np.array(a, order="C") for a in arrays], args.repeats)
            crc = best(lambda: [zlib.crc32(a.data) for a in arrays], args.repeats)
            mb = sum(a.nbytes for a in arrays) / 1e6
            print(f"| {name} | {mb:.2f} | {forward * 1e3:.3f} | {copies * 1e3:.3f} | {copies / forward:.1%} | "
                  f"{crc * 1e3:.3f} | {crc / forward:.1%} |")


if __name__ == "__main__":
    main()

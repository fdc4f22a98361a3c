"""The ``lstmcore`` command: ``lstmcore demo``, ``lstmcore variants``, ``lstmcore plugins``, ``lstmcore ablate`` and
``lstmcore report``."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _demo(args) -> int:
    """Forward and backward of the three core variants on random data, with a finite-difference spot check."""
    import lstmcore

    if not _known_variants(args.variants, "demo"):
        return 2
    rng = np.random.default_rng(args.seed)
    T, B, I, H = args.steps, args.batch, args.input_size, args.hidden_size
    x = rng.normal(size=(T, B, I)).astype(np.float32)
    lengths = rng.integers(1, T + 1, size=B)
    print(f"lstmcore {lstmcore.__version__}: forward + BPTT on x of shape (T={T}, B={B}, I={I}), H={H}, "
          f"lengths={lengths.tolist()}")
    print(f"{'variant':<10} {'params':>8} {'forward ms':>11} {'backward ms':>12} {'|h_n|':>8} {'grad check':>11}")
    for name in args.variants:
        layer = lstmcore.LSTM(I, H, variant=name, seed=args.seed)
        t0 = time.perf_counter()
        output, (h_n, c_n) = layer(x, lengths=lengths)
        t1 = time.perf_counter()
        layer.backward(np.ones_like(output))
        t2 = time.perf_counter()
        error = _spot_check(lstmcore, name, rng)
        print(f"{name:<10} {layer.parameter_count():>8} {1e3 * (t1 - t0):>11.2f} {1e3 * (t2 - t1):>12.2f} "
              f"{np.linalg.norm(h_n):>8.3f} {error:>11.1e}")
    print("grad check: largest |analytic - central difference| over 20 weights of a float64 copy")
    return 0


def _known_variants(names, command: str) -> bool:
    """Whether every name is a registered variant (else one line on stderr)."""
    import lstmcore

    for name in names:
        try:
            lstmcore.get_variant(name)
        except KeyError as exc:
            print(f"lstmcore {command}: {exc.args[0]}", file=sys.stderr)
            return False
    return True


def _spot_check(lstmcore, name, rng) -> float:
    layer = lstmcore.LSTM(3, 4, variant=name, dtype=np.float64, seed=1)
    x = rng.normal(size=(5, 2, 3))
    weights = rng.normal(size=(5, 2, 4))

    def loss():
        return float((layer(x)[0] * weights).sum())

    loss()
    layer.backward(weights)
    worst = 0.0
    for key, value in layer.params.items():
        for _ in range(5 if len(layer.params) == 4 else 4):
            idx = tuple(rng.integers(0, s) for s in value.shape)
            old = value[idx]
            value[idx] = old + 1e-6
            up = loss()
            value[idx] = old - 1e-6
            down = loss()
            value[idx] = old
            worst = max(worst, abs((up - down) / 2e-6 - layer.grads[key][idx]))
    return worst


def _variants(args) -> int:
    import lstmcore
    from lstmcore.plugins import registry

    if args.diagram:
        if not args.output:
            print("lstmcore variants: --diagram NAME needs -o FILE (.svg, or .png for a PNG)", file=sys.stderr)
            return 2
        if not _known_variants([args.diagram], "variants"):
            return 2
        try:
            lstmcore.diagram(args.diagram, args.output)
        except OSError as exc:
            print(f"lstmcore variants: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        print(f"wrote {args.output}")
        return 0
    if args.show:
        from lstmcore.summaries import describe_variant

        if not _known_variants(args.show, "variants"):
            return 2
        for k, name in enumerate(args.show):
            print(("\n" if k else "") + describe_variant(lstmcore.get_variant(name), registry.source(name)))
        return 0
    if args.check:
        from lstmcore.testing import check_variant

        if not _known_variants(args.check, "variants"):
            return 2

        failed = 0
        for name in args.check:
            report = check_variant(name)
            print(report)
            failed += not report.ok
        return 1 if failed else 0

    print(f"{'name':<12} {'source':<24} {'params/layer (I=' + str(args.input_size) + ', H=' + str(args.hidden_size) + ')':>24} "
          f"{'compiled':>9}  description")
    for name in lstmcore.list_variants():
        variant = lstmcore.get_variant(name)
        count = variant.parameter_count(args.input_size, args.hidden_size)
        print(f"{name:<12} {registry.source(name):<24} {count:>24} {'yes' if variant.compiled else 'no':>9}  "
              f"{variant.description}")
    return _report_failures(registry, "variants", "the variants above are", f"{'-':>24} {'-':>9}  ")


def _plugins(args) -> int:
    """What every plugin contributed: its variants, groups and datasets, a block per plugin, then the failures."""
    from lstmcore.plugins import registry

    for source, kinds in registry.contributions().items():
        print(source)
        for noun, names in kinds.items():
            if names:
                print(f"  {noun + 's':<9} {', '.join(names)}")
    return _report_failures(registry, "plugins", "what is listed above is", "")


def _report_failures(registry, command: str, usable: str, filler: str) -> int:
    """A row per plugin that failed to load (after ``filler``, the empty columns), and exit status 1 if any did."""
    for failure in registry.failures:  # a plugin that did not load still gets its row
        print(f"{'(failed)':<12} {failure.source:<24} {filler}{failure.problem}; {failure.consequence}")
    if registry.failures:
        print(f"lstmcore {command}: {len(registry.failures)} plugin problem(s); {usable} usable, the "
              f"failed rows are not (LSTMCORE_STRICT_PLUGINS=1 makes them errors)", file=sys.stderr)
        return 1
    return 0


def _integer_type(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive = _integer_type(1, "a positive integer")
_natural = _integer_type(0, "an integer >= 0")


class _Parser(argparse.ArgumentParser):
    """Bad command lines get one line (what is wrong and where the help is) and exit status 2, not the usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv=None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C while the command starts, before it runs
        print("lstmcore: interrupted", file=sys.stderr)
        return 130


def _main(argv) -> int:
    parser = _Parser(prog="lstmcore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="forward and backward of vanilla, peephole and coupled on random data")
    demo.add_argument("--variants", type=lambda s: s.split(","), default=["vanilla", "peephole", "coupled"])
    demo.add_argument("--steps", type=_positive, default=50)
    demo.add_argument("--batch", type=_positive, default=8)
    demo.add_argument("--input-size", type=_positive, default=16)
    demo.add_argument("--hidden-size", type=_positive, default=32)
    demo.add_argument("--seed", type=_natural, default=0)
    demo.set_defaults(func=_demo)
    variants = sub.add_parser("variants", help="list the registered variants")
    variants.add_argument("--input-size", type=_positive, default=88)
    variants.add_argument("--hidden-size", type=_positive, default=100)
    variants.add_argument("--check", nargs="+", metavar="NAME",
                          help="run the conformance kit (lstmcore.testing.check_variant) on these variants")
    variants.add_argument("--show", nargs="+", metavar="NAME",
                          help="print these variants' equations, parameter shapes and count, options")
    variants.add_argument("--diagram", metavar="NAME", help="draw this variant's cell into -o FILE")
    variants.add_argument("-o", "--output", metavar="FILE", help="where --diagram writes: .svg, or .png for a PNG")
    variants.set_defaults(func=_variants)
    plugins = sub.add_parser("plugins", help="list what every plugin contributed: variants, groups, datasets")
    plugins.set_defaults(func=_plugins)
    from lstmcore.ablation.cli import add_commands as add_ablation_commands  # light: no Optuna/Dask until run

    add_ablation_commands(sub)
    args = parser.parse_args(argv)
    return run_command(args)


def run_command(args) -> int:
    """Run a parsed command; every failure is one line on stderr, never a traceback: exit 2 for a problem with what
    was asked (bad arguments, files, storage, plugins), 130 for an interrupt, 1 for an unexpected internal error
    (``LSTMCORE_TRACEBACK=1`` shows its traceback)."""
    import os

    from lstmcore.plugins import PluginError

    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"lstmcore {args.command}: interrupted", file=sys.stderr)
        return 130
    except PluginError as exc:
        print(f"lstmcore {args.command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if os.environ.get("LSTMCORE_TRACEBACK", "").strip() not in ("", "0"):
            raise
        text = " ".join(str(exc).split())  # one line
        print(f"lstmcore {args.command}: internal error: {type(exc).__name__}: {text} (a bug: please report it; "
              f"LSTMCORE_TRACEBACK=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""An ablation study from Python: the configuration as tables (the same as a TOML file), local workers or a Dask
cluster, then the report. Run it as a script (worker processes are spawned: keep the ``__main__`` guard).

    python examples/ablation/run_study.py                      # local worker processes
    python examples/ablation/run_study.py --dask local         # a Dask LocalCluster on this machine
    python examples/ablation/run_study.py --dask tcp://scheduler:8786
"""
import argparse

from lstmcore.ablation import StudyConfig, run_study, write_report


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="adding-study")
    parser.add_argument("--dask", help="'local' for a LocalCluster, or a scheduler address")
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()

    config = StudyConfig.from_tables({
        "study": {"variants": ["peephole", "vanilla", "coupled", "nfg"], "dataset": "adding", "trials": args.trials},
        "dataset": {"length": 50, "n_train": 2000, "n_valid": 300, "n_test": 500},
        "training": {"batch_size": 16, "max_epochs": 25, "patience": 5},
        "space": {"hidden_size": {"distribution": "log_uniform", "low": 8, "high": 32},
                  "learning_rate": {"distribution": "log_uniform", "low": 1e-2, "high": 0.5},
                  "momentum": {"distribution": "one_minus_log_uniform", "low": 0.01, "high": 0.3},
                  "input_noise": 0.0},                                   # a number fixes a hyperparameter
    })
    if args.dask == "local":
        from distributed import Client, LocalCluster

        with LocalCluster(threads_per_worker=1, processes=True) as cluster, Client(cluster) as client:
            summary = run_study(config, args.out, dask=client)
    elif args.dask:
        summary = run_study(config, args.out, dask=args.dask)
    else:
        summary = run_study(config, args.out)            # --jobs: the number of cores
    print(f"{summary.completed} of {summary.planned} trials complete; report: {write_report(args.out)}")


if __name__ == "__main__":
    main()

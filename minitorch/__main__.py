"""The ``minitorch`` command line: ``python -m minitorch {train,bench,diagnostics}``.

Each subcommand's module is imported only when it runs, so ``--help`` and
``train`` do not pay for the benchmark or diagnostics code.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from . import train


def _run_train(args: argparse.Namespace) -> int:
    return train.main(args)


def _run_bench(args: argparse.Namespace) -> int:
    from . import bench

    return bench.main(args) or 0


def _run_diagnostics(args: argparse.Namespace) -> int:
    from . import diagnostics

    return diagnostics.main(args) or 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="python -m minitorch", description="minitorch command-line tools."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train_parser = commands.add_parser(
        "train", help="train the course's classifier on a toy 2-D dataset"
    )
    train.add_arguments(train_parser)
    train_parser.set_defaults(run=_run_train)

    bench_parser = commands.add_parser("bench", help="time the backends' operations")
    bench_parser.add_argument(
        "--output", metavar="PATH", default="docs/benchmarks.md", help="Markdown report path"
    )
    bench_parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    bench_parser.add_argument(
        "--no-startup", action="store_true", help="skip the cold/warm start measurement"
    )
    bench_parser.add_argument(
        "--cuda", action="store_true", help="also benchmark CudaOps (needs an NVIDIA GPU)"
    )
    bench_parser.set_defaults(run=_run_bench)

    diagnostics_parser = commands.add_parser(
        "diagnostics", help="show numba's parallel diagnostics for the fast kernels"
    )
    diagnostics_parser.add_argument(
        "--level", type=int, default=3, choices=range(1, 5), help="numba's detail level (1-4)"
    )
    diagnostics_parser.add_argument(
        "--dtype", choices=("float64", "float32", "both"), default="both",
        help="which dtypes' specialisations to compile and report",
    )  # fmt: skip
    diagnostics_parser.set_defaults(run=_run_diagnostics)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the process arguments) and run the chosen command."""
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())

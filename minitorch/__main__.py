"""The ``minitorch`` command line: ``python -m minitorch {train,bench,diagnostics}``.

Each subcommand's module is imported only when it runs, so ``--help`` and
``train`` do not pay for the benchmark or diagnostics code. Output paths are
checked before any work starts (a bad one is a usage error, exit code 2), and
Ctrl-C ends any command with one line, ``interrupted``, and exit code 130.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from collections.abc import Sequence

from . import train

# The exit code of a process ended by SIGINT, as shells report it.
INTERRUPTED = 130


def _exit_interrupted(signum: int, frame: object) -> None:
    """SIGINT handler: the line ``interrupted`` and exit code 130, at once.

    Raising ``KeyboardInterrupt`` instead unwinds through whatever is running:
    numba's compiler then prints dozens of frames, and inside a C++ extension
    (pybind11) the exception can abort the process. Stopping on the spot is
    safe because minitorch writes every file (kernel cache entries,
    checkpoints) under a temporary name and renames it into place.
    """
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    try:
        # On a terminal, leave the ^C (and any progress bar) on their own line.
        os.write(2, b"\ninterrupted\n" if sys.stderr.isatty() else b"interrupted\n")
    except (OSError, ValueError):
        pass
    os._exit(INTERRUPTED)


def exit_on_interrupt() -> None:
    """Make Ctrl-C end this process with one line and exit code 130 (for command-line
    entry points only: it replaces Python's ``KeyboardInterrupt`` for the whole process)."""
    signal.signal(signal.SIGINT, _exit_interrupted)


def output_path(path: str, default_name: str, suffix: str | None = None) -> str:
    """The file an output option names, checked writable now rather than after the run.

    A directory (existing, or any path ending in a separator) gets
    ``default_name`` inside it; with ``suffix``, a name without one gets it
    added and any other suffix is refused. Nothing is created: the nearest
    existing ancestor directory must accept a new file (checked with a
    temporary file that is removed at once), and an existing file must be
    writable. Raises ``ValueError`` saying what is wrong.
    """
    if not path:
        raise ValueError("an empty path")
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        path = os.path.join(path, default_name)
    if suffix is not None:
        ext = os.path.splitext(path)[1]
        if not ext:
            path += suffix
        elif ext.lower() != suffix:
            raise ValueError(f"{path!r}: the file is written as {suffix}, so name it *{suffix}")
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory")
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise ValueError(f"cannot write {path!r}: permission denied")
        return path
    ancestor = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise ValueError(f"cannot create {path!r}: {ancestor!r} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as e:
        raise ValueError(f"cannot create {path!r}: {ancestor!r}: {e.strerror or e}") from None
    return path


def _check_train(args: argparse.Namespace) -> None:
    if args.plot is not None:
        try:
            args.plot = output_path(args.plot, f"{args.dataset}.png", ".png")
        except ValueError as e:
            raise ValueError(f"argument --plot: {e}") from None


def _check_bench(args: argparse.Namespace) -> None:
    try:
        args.output = output_path(args.output, "benchmarks.md")
    except ValueError as e:
        raise ValueError(f"argument --output: {e}") from None


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
    train_parser.set_defaults(run=_run_train, check=_check_train, parser=train_parser)

    bench_parser = commands.add_parser("bench", help="time the backends' operations")
    bench_parser.add_argument(
        "--output",
        metavar="PATH",
        default="docs/benchmarks.md",
        help="Markdown report path (a directory gets benchmarks.md inside it)",
    )
    bench_parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    bench_parser.add_argument(
        "--no-startup", action="store_true", help="skip the cold/warm start measurement"
    )
    bench_parser.add_argument(
        "--cuda", action="store_true", help="also benchmark CudaOps (needs an NVIDIA GPU)"
    )
    bench_parser.add_argument(
        "--no-scaling",
        action="store_true",
        help="skip the digits CNN runs on 1 and 2 MPI ranks",
    )
    bench_parser.set_defaults(run=_run_bench, check=_check_bench, parser=bench_parser)

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
    check = getattr(args, "check", None)
    if check is not None:
        try:
            check(args)
        except ValueError as e:
            args.parser.error(str(e))  # exits with code 2, like any usage error
    try:
        return args.run(args)
    except KeyboardInterrupt:  # called in process, without exit_on_interrupt
        print("interrupted", file=sys.stderr, flush=True)
        return INTERRUPTED


def run() -> int:
    """The console entry point: ``main`` with Ctrl-C handled by ``exit_on_interrupt``."""
    exit_on_interrupt()
    return main()


if __name__ == "__main__":
    raise SystemExit(run())

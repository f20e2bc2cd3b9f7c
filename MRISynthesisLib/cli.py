"""The ``mrisynthesis`` command line: a thin dispatcher over ``commands/*``.

Each subcommand lives in ``commands/<name>.py`` (``-`` as ``_``) with ``add_parser(subparsers)`` setting
``func(args) -> int``. Heavy imports (torch, MONAI) happen inside ``func``, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import CancelledError, InputError

# Order = order in ``mrisynthesis --help``.
SUBCOMMANDS = ("tasks", "models", "synthesize", "segment-lesions", "serve", "phantom", "train", "evaluate", "worker")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mrisynthesis",
        description="Synthesize MR maps that were not acquired (myelin PSR, missing contrasts, DWI/ADC from "
        "CT perfusion, fMRI<->dMRI) with conditional 3D latent diffusion. Data never leaves this machine.",
        epilog="Run 'mrisynthesis COMMAND --help' for the options of each command. Exit codes: 0 success, "
        "1 internal error, 2 bad input, 3 model not installed, 130 cancelled.",
    )
    parser.add_argument("--version", action="version", version=f"mrisynthesis {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f".commands.{name.replace('-', '_')}", __package__).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as error:
        print(f"mrisynthesis: error: {error}", file=sys.stderr)
        return error.exit_code
    except CancelledError:
        print("mrisynthesis: cancelled", file=sys.stderr)
        return CancelledError.exit_code
    except BrokenPipeError:  # e.g. piped into `head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("mrisynthesis: interrupted", file=sys.stderr)
        return CancelledError.exit_code


if __name__ == "__main__":
    sys.exit(main())

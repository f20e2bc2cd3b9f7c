"""``mrisynthesis worker REQUEST.json``: one synthesis run speaking the JSON-lines protocol (for GUIs)."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "worker", help="run one request, printing JSON-lines progress (used by the Slicer module)",
        description="Run the synthesis described by REQUEST.json and print one JSON object per line on stdout "
        "(progress, then done/error/cancelled). Exit codes: 0 done, 1 internal error, 2 bad input, "
        "3 model not installed, 130 cancelled (SIGTERM/SIGINT).")
    parser.add_argument("request", help="request JSON: task, inputs {name: path}, output_dir, options")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..worker import run as run_worker

    return run_worker(args.request)

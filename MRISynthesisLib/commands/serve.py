"""``mrisynthesis serve``: the browser front end (``MRISynthesisLib.web``) on 127.0.0.1."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

from ..errors import InputError

INSTALL_HINT = 'the web app needs its optional dependencies: pip install "mrisynthesis[web]"'


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="web app: slice views, run tasks, download results (trame-slicer)",
        description="Serve the MRISynthesis web app: load volumes (upload, or files under --data), pick a task, run "
        "it with progress and cancel, see the map, uncertainty and lesion overlay in slice views, and download the "
        "results. It binds to 127.0.0.1 unless told otherwise, and has no authentication.",
        epilog="Example: mrisynthesis serve --port 8080 --data ./cases   (then open http://127.0.0.1:8080)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8080, help="TCP port (0: any free port, printed at start)")
    parser.add_argument("--data", type=Path, metavar="DIR", help="folder whose image files the page can load")
    parser.add_argument("--downloads", type=Path, metavar="DIR",
                        help="folder for finished runs' files (default: a new temporary folder)")
    parser.add_argument("--max-upload-mb", type=float, default=1024.0, help="largest accepted upload per file")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a --host other than loopback (anyone who reaches the port can use the app)")
    parser.add_argument("--open", action="store_true", help="open the page in the default browser")
    parser.set_defaults(func=run)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    if not is_loopback(args.host):
        if not args.allow_remote:
            raise InputError(f"{args.host} is not a loopback address; the app has no authentication, so binding to "
                             "other machines needs --allow-remote", "--host")
        print(f"WARNING: serving on {args.host}:{args.port} without authentication: anyone who can reach this port "
              "can read the loaded images and run tasks on this machine.", file=sys.stderr)
    if args.data is not None and not args.data.is_dir():
        raise InputError(f"is not a folder: {args.data}", "--data")
    if args.max_upload_mb <= 0:
        raise InputError("must be positive", "--max-upload-mb")
    try:
        from ..web.app import serve
    except ImportError as error:
        raise InputError(f"{INSTALL_HINT} ({error})", "serve") from None
    serve(host=args.host, port=args.port, data_dir=args.data, downloads_dir=args.downloads,
          max_upload_mb=args.max_upload_mb, open_browser=args.open)
    return 0

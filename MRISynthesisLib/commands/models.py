"""``mrisynthesis models list|install|verify|remove|path``: manage the per-user model cache."""

from __future__ import annotations

import json
import sys

_EXIT_CODES = "Exit codes: 0 success, 2 bad input (unreadable source, failed checksum, invalid card), 3 model not installed."


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "models", help="list, install, verify and remove models",
        description="Manage the models (card.json + .safetensors weights) used by the synthesis tasks. Models live "
        "in the per-user cache $MRISYNTHESIS_HOME/models/<id>/ (default ~/.mrisynthesis/models/<id>/) or are "
        "bundled with the package; the cache is searched first. Every weight file is checked against the sha256 "
        "and size in its card before it is installed and again before it is loaded; nothing is ever unpickled.",
        epilog=_EXIT_CODES)
    actions = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    listing = actions.add_parser(
        "list", help="list installed and available models",
        description="List the models in the user cache and those bundled with the package, with version, task, "
        "where each comes from (user/bundled) and its status (installed, or available for "
        "'mrisynthesis models install ID').", epilog=_EXIT_CODES)
    listing.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    listing.set_defaults(func=run_list)

    install = actions.add_parser(
        "install", help="install a model from a URL, a folder, a card.json or a bundled id",
        description="Install a model into the user cache. SOURCE is one of: a bundled model id (downloads the "
        "weights listed in its packaged card); a folder with card.json and its .safetensors files; a path to a "
        "card.json (weights next to it or at the 'url' of each files entry); an http(s):// URL of a card.json "
        "(weights at the 'url' of each files entry, resolved relative to the card URL, or next to the card). "
        "Every file is downloaded into a staging folder and checked (size, sha256, safetensors format) before "
        "the model replaces any installed version; on any failure the cache is left unchanged. Downloads honour "
        "HTTPS_PROXY/HTTP_PROXY; offline sites can copy the model folder and install it from disk.",
        epilog=_EXIT_CODES)
    install.add_argument("source", metavar="SOURCE", help="bundled model id, model folder, card.json path or URL")
    install.add_argument("--sha256", metavar="HEX", default=None,
                         help="expected sha256 of the card.json file itself (pins the whole model, since the card "
                         "holds the sha256 of every weight file)")
    install.add_argument("--quiet", action="store_true", help="no progress bars")
    install.set_defaults(func=run_install)

    verify = actions.add_parser(
        "verify", help="check installed weight files against their cards",
        description="Recompute the sha256 and size of every weight file of the given models (default: all "
        "installed models) and compare them with their cards. Reports every problem; exit code 2 when any "
        "model fails.", epilog=_EXIT_CODES)
    verify.add_argument("model_ids", metavar="ID", nargs="*", help="model ids (default: every installed model)")
    verify.set_defaults(func=run_verify)

    remove = actions.add_parser(
        "remove", help="delete models from the user cache",
        description="Delete models from the user cache. Bundled models cannot be removed; when a cached model "
        "overrides a bundled one, the bundled version is used again afterwards.", epilog=_EXIT_CODES)
    remove.add_argument("model_ids", metavar="ID", nargs="*", help="model ids to remove")
    remove.add_argument("--all", action="store_true", help="remove every model in the user cache")
    remove.set_defaults(func=run_remove)

    path = actions.add_parser(
        "path", help="print the cache folder (or a model's folder)",
        description="Print the user model cache folder, or the folder a model is loaded from when ID is given.",
        epilog=_EXIT_CODES)
    path.add_argument("model_id", metavar="ID", nargs="?", help="model id (optional)")
    path.set_defaults(func=run_path)


def _row(card, registry) -> dict:
    missing = card.missing_files()
    return {
        "id": card.id, "version": card.version, "task": card.task, "title": card.title, "source": card.source,
        "status": "available" if missing else "installed", "folder": str(card.folder), "licence": card.licence,
        "size_bytes": card.total_size, "files": [f.name for f in card.files],
        "install": registry.install_command(card.id) if missing else None,
    }


def run_list(args) -> int:
    from ..model_store.registry import ModelRegistry

    registry = ModelRegistry()
    rows = [_row(card, registry) for card in registry.list(include_available=True)]
    if args.json:
        print(json.dumps({"cache": str(registry.models_dir), "models": rows}, indent=2))
        return 0
    print(f"model cache: {registry.models_dir}")
    if not rows:
        print("no models installed; install one with: mrisynthesis models install <URL, folder or card.json>")
        return 0
    print(f"{'ID':<22} {'VERSION':<10} {'TASK':<18} {'SOURCE':<8} {'SIZE':>9}  STATUS")
    for row in rows:
        status = row["status"] if row["install"] is None else f"available: {row['install']}"
        print(f"{row['id']:<22} {row['version']:<10} {row['task']:<18} {row['source']:<8} "
              f"{row['size_bytes'] / 1e6:>7.1f}MB  {status}")
    return 0


def run_install(args) -> int:
    from ..model_store.download import TqdmProgress
    from ..model_store.registry import ModelRegistry

    registry = ModelRegistry()
    with TqdmProgress() as bars:
        card = registry.install(args.source, sha256=args.sha256, progress=None if args.quiet else bars)
    if card.source == "bundled":
        print(f"{card.id} {card.version} is bundled with MRISynthesis and already installed ({card.folder})")
    else:
        print(f"installed {card.id} {card.version} (task {card.task}, {len(card.files)} file(s), "
              f"{card.total_size / 1e6:.1f} MB) in {card.folder}")
    return 0


def run_verify(args) -> int:
    from ..errors import InputError, ModelNotInstalledError
    from ..model_store.registry import ModelRegistry

    registry = ModelRegistry()
    model_ids = args.model_ids or [card.id for card in registry.list()]
    if not model_ids:
        print("no models installed; nothing to verify")
        return 0
    code = 0
    for model_id in model_ids:
        try:
            card = registry.verify(model_id)
            print(f"ok      {card.id} {card.version} ({card.source}, {len(card.files)} file(s))")
        except ModelNotInstalledError as error:
            print(f"missing {model_id}: {error}", file=sys.stderr)
            code = max(code, error.exit_code)
        except InputError as error:
            print(f"FAILED  {model_id}: {error}", file=sys.stderr)
            code = code or error.exit_code
    return code


def run_remove(args) -> int:
    from ..errors import InputError
    from ..model_store.registry import ModelRegistry

    registry = ModelRegistry()
    if args.all == bool(args.model_ids):
        raise InputError("give model ids or --all (not both)", name="remove")
    if args.all:
        removed = registry.remove_all()
        print(f"removed {len(removed)} model(s) from {registry.models_dir}" + (f": {', '.join(removed)}" if removed else ""))
        return 0
    for model_id in args.model_ids:
        folder = registry.remove(model_id)
        still = " (the bundled version is used from now on)" if registry.is_installed(model_id) else ""
        print(f"removed {model_id} ({folder}){still}")
    return 0


def run_path(args) -> int:
    from ..model_store.registry import ModelRegistry

    registry = ModelRegistry()
    print(registry.card(args.model_id).folder if args.model_id else registry.models_dir)
    return 0

"""One module per ``mrisynthesis`` subcommand, each with ``add_parser(subparsers)``."""

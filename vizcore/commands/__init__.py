"""CLI subcommands, discovered by :mod:`vizcore.cli` (one module each, ``register(subparsers)``)."""

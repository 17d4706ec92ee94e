"""``python -m vizcore``: one subcommand per capability.

Each module in :mod:`vizcore.commands` defines ``register(subparsers)`` that adds
its subcommand and sets ``func(args) -> int``. Subcommands parse, call one
engine function and write JSON or files; heavy imports happen inside ``func``.
Errors exit non-zero with one line on stderr (``VIZCORE_DEBUG=1`` shows the traceback).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys

from vizcore import apply_speed_settings


def build_parser() -> argparse.ArgumentParser:
    import vizcore
    import vizcore.commands as commands

    parser = argparse.ArgumentParser(
        prog="vizcore", description="See what the layers of convolutional networks learn.")
    parser.add_argument("--version", action="version", version=f"vizcore {vizcore.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    mods = [m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")]
    for name in sorted(mods, key=lambda n: (getattr(importlib.import_module(f"vizcore.commands.{n}"), "ORDER", 50), n)):
        importlib.import_module(f"vizcore.commands.{name}").register(sub)
    return parser


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg.strip("'\"") if isinstance(e, KeyError) else msg


def main(argv: list[str] | None = None) -> int:
    apply_speed_settings()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("vizcore: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as e:  # noqa: BLE001 - the CLI's contract: one clear line, no traceback
        if os.environ.get("VIZCORE_DEBUG"):
            raise
        print(f"vizcore {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

"""The `counters` command: `counters node ...` runs a node, `counters up` a local cluster."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from node import __version__


def _seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a duration like 90s, 15m, 1h or 7d: {text}"
        ) from None


def token(argv: Sequence[str]) -> int:
    """`counters token`: an HS256 token for development, printed on stdout."""
    from node.http import auth

    parser = argparse.ArgumentParser(prog="counters token")
    parser.add_argument("--tenant", required=True)
    parser.add_argument(
        "--scopes", default="counters:read counters:write", help="space or comma separated"
    )
    parser.add_argument("--ttl", type=_seconds, default=3600.0, help="e.g. 1h (default)")
    parser.add_argument("--namespaces", default="", help="comma separated; default: all")
    parser.add_argument("--secret", default=os.environ.get("COUNTERS_JWT_SECRET", ""))
    args = parser.parse_args(list(argv))
    scopes = args.scopes.replace(",", " ").split()
    unknown = set(scopes) - set(auth.SCOPES)
    if not args.secret:
        parser.error("--secret (or COUNTERS_JWT_SECRET) is required")
    if unknown:
        parser.error(f"unknown scopes {sorted(unknown)}; use {' '.join(auth.SCOPES)}")
    namespaces = [n for n in args.namespaces.split(",") if n] or None
    print(auth.mint(args.secret, args.tenant, scopes, args.ttl, namespaces))
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="counters", description="Counters: a distributed counter service."
    )
    parser.add_argument("--version", action="version", version=f"counters {__version__}")
    parser.add_argument(
        "command",
        choices=["node", "up", "token"],
        help="node: run one node; up: a local cluster; token: mint a development token",
    )
    if not args or args[0].startswith("-"):
        parser.parse_args(args or ["--help"])
        return
    command, rest = args[0], args[1:]
    if command == "node":
        from node import app
        from node.base import config
        from node.base.errors import RefusedToStart
        from node.base.heap import pin_mmap_threshold, tune_gc

        pin_mmap_threshold()  # before the node allocates: large blocks in their own mappings
        tune_gc()
        try:
            settings = config.parse(rest, os.environ)
        except config.ConfigError as error:
            sys.exit(f"counters node: {error}")
        try:
            app.run(settings)
        except RefusedToStart as error:  # a message for the operator, not a traceback
            sys.exit(f"counters node: {error}")
    elif command == "up":
        from node import local_cluster

        sys.exit(local_cluster.main(rest))
    elif command == "token":
        sys.exit(token(rest))
    else:
        parser.parse_args(args)

"""The `counters` command: `counters node ...` runs a node, `counters up` a local cluster."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from node import __version__


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="counters", description="Counters: a distributed counter service."
    )
    parser.add_argument("--version", action="version", version=f"counters {__version__}")
    parser.add_argument(
        "command", choices=["node", "up"], help="node: run one node; up: a local cluster"
    )
    if not args or args[0].startswith("-"):
        parser.parse_args(args or ["--help"])
        return
    command, rest = args[0], args[1:]
    if command == "node":
        from node import app, config

        try:
            settings = config.parse(rest, os.environ)
        except config.ConfigError as error:
            sys.exit(f"counters node: {error}")
        app.run(settings)
    elif command == "up":
        from node import local_cluster

        sys.exit(local_cluster.main(rest))
    else:
        parser.parse_args(args)

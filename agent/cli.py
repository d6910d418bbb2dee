"""``coverwatch-probe``: the command a technician runs on a probe."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from coverwatch import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coverwatch-probe",
        description="coverwatch probe agent: measures signal, latency and power in a village "
        "and publishes the readings over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"coverwatch-probe {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``coverwatch``: the server-side command line.

Sub-commands import their component lazily, so that ``coverwatch --help`` works
(and says what to install) even where only part of the extras is installed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coverwatch import __version__, protocol
from coverwatch.errors import CoverwatchError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coverwatch",
        description="coverwatch server side: collector, coverage maps, dashboards.",
    )
    parser.add_argument("--version", action="version", version=f"coverwatch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    proto = commands.add_parser("protocol", help="check messages against the wire protocol")
    proto_commands = proto.add_subparsers(dest="protocol_command", metavar="ACTION")
    validate = proto_commands.add_parser(
        "validate",
        help="validate a message file as the collector would (exit 1 if it is rejected)",
        description="Decode a readings or status message exactly as the collector does and "
        "report every problem with the field that caused it.",
    )
    validate.add_argument(
        "--topic",
        required=True,
        help="topic the message is (to be) published on, e.g. coverwatch/v1/cb-001/readings",
    )
    validate.add_argument(
        "file", nargs="?", default="-", help="message file (JSON); '-' or omitted reads stdin"
    )
    validate.set_defaults(handler=_validate)

    _register_server_commands(commands)

    demo = commands.add_parser(
        "demo", help="the whole system on this machine with a simulated province"
    )
    try:
        from simulator.demo import add_arguments as add_demo_arguments
    except ImportError:  # the server extra is not installed
        pass
    else:
        add_demo_arguments(demo)
    demo.set_defaults(handler=_demo)
    return parser


# Server-side components and the top-level commands each one registers through its
# ``register(commands)``; listed here so the stubs can say what to install.
SERVER_COMMANDS: dict[str, tuple[str, ...]] = {
    "collector.cli": ("db", "collector", "import"),
    "geo.cli": ("villages", "report", "map", "serve"),
    "dashboards.cli": ("dashboards",),
    "provisioning.cli": ("probes", "deploy"),
}


def _register_server_commands(commands: Any) -> None:
    for module_name, names in SERVER_COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:  # the server extra is not installed
            if error.name == module_name:
                continue  # a component this checkout does not have
            missing = error.name or "a server-side library"
            for name in names:
                stub = commands.add_parser(
                    name, help=f"(needs: pip install '.[server]'; {missing} missing)"
                )
                stub.set_defaults(handler=_needs_server(missing))
            continue
        module.register(commands)


def _needs_server(missing: str) -> Any:
    def handler(_: argparse.Namespace) -> int:
        raise CoverwatchError(
            f"this command needs the server extra ({missing} is not installed): "
            "pip install '.[server]'"
        )

    return handler


def _validate(args: argparse.Namespace) -> int:
    payload = sys.stdin.buffer.read() if args.file == "-" else _read_file(Path(args.file))
    address = protocol.parse_topic(args.topic)
    if address.channel == "status":
        status = protocol.decode_status(args.topic, payload)
        print(f"ok: status {status.state!r} from probe {status.probe_id}")
        return 0
    decoded = protocol.decode_readings(args.topic, payload)
    for rejected in decoded.rejected:
        print(f"rejected: {rejected.error}", file=sys.stderr)
    kinds: dict[str, int] = {}
    for reading in decoded.batch.readings:
        kind = type(reading).__struct_config__.tag
        kinds[str(kind)] = kinds.get(str(kind), 0) + 1
    summary = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())) or "none"
    print(
        f"{'ok' if not decoded.rejected else 'partly rejected'}: probe {decoded.batch.probe_id}, "
        f"{len(decoded.batch.readings)} valid readings ({summary}), "
        f"{len(decoded.rejected)} rejected"
    )
    return 1 if decoded.rejected else 0


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise CoverwatchError(f"cannot read {path}: {error.strerror}") from None


def _demo(args: argparse.Namespace) -> int:
    try:
        from simulator.demo import main as demo_main
    except ImportError as error:
        raise CoverwatchError(
            f"the demo needs the server and embedded extras ({error.name} is not installed): "
            "pip install '.[server,embedded]' (make demo does this)"
        ) from None
    return demo_main(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        result: int = handler(args)
    except protocol.ProtocolError as error:
        print(f"rejected: {error}", file=sys.stderr)
        return 1
    except CoverwatchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())

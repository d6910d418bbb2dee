"""``coverwatch``: the server-side command line.

Sub-commands import their component lazily, so that ``coverwatch --help`` works
(and says what to install) even where only part of the extras is installed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

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
        help="validate a message file as the collector would (exit 1 if it is rejected, "
        "2 if it is not a JSON message at all)",
        description="Decode a readings or status message exactly as the collector does and "
        "report every problem with the field that caused it. Exit status: 0 valid, 1 the "
        "collector would reject the message or some of its readings, 2 the input is not a "
        "JSON message at all (unreadable, empty, too large, not UTF-8, not JSON).",
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
    source = "standard input" if args.file == "-" else args.file
    payload = _read_message(args.file)
    address = protocol.parse_topic(args.topic)
    problem = _not_a_json_message(payload)
    if problem:
        raise CoverwatchError(f"{source} {problem}")
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


def _read_message(file: str) -> bytes:
    """The message's bytes, read with a bound: never more than one byte over the limit."""
    limit = protocol.MAX_PAYLOAD_BYTES
    if file == "-":
        payload = sys.stdin.buffer.read(limit + 1)
        size = f"more than {limit}"
    else:
        path = Path(file)
        try:
            with path.open("rb") as handle:
                payload = handle.read(limit + 1)
                size = str(os.fstat(handle.fileno()).st_size or f"more than {limit}")
        except OSError as error:
            raise CoverwatchError(f"cannot read {path}: {error.strerror or error}") from None
    if len(payload) > limit:
        raise CoverwatchError(
            f"{'standard input' if file == '-' else file} is {size} bytes: a message may "
            f"be at most {limit} bytes (1 MiB); send at most "
            f"{protocol.MAX_READINGS_PER_BATCH} readings per message"
        )
    return payload


_BYTE_OFFSET = re.compile(r"\(byte (\d+)\)")
_SURROGATE_ESCAPE = re.compile(r"(\\+)u([dD][89a-fA-F][0-9a-fA-F]{2})")


def _not_a_json_message(payload: bytes) -> str | None:
    """Why ``payload`` is not a JSON text at all (and so cannot be a message), or None.

    Syntax only: a JSON document the protocol rejects (a wrong field, a number out of
    range, a reading nested too deeply) is the decoder's to explain, field by field, as
    the collector would: one bad reading costs only itself there.
    """
    if not payload.strip():
        return 'is empty: expected one message, a JSON object such as {"v": 1, ...}'
    if payload.startswith(b"\x1f\x8b"):
        return "is gzip-compressed: decompress it first (gunzip) and validate the message"
    head = payload[:64]
    nuls = head.count(0)
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or (nuls and abs(2 * nuls - len(head)) <= 1):
        return "is UTF-16 text: messages are UTF-8 JSON; save it as UTF-8"
    if b"\x00" in payload:
        return (
            f"contains a NUL byte at {_where(payload, payload.index(0))}: messages are "
            "UTF-8 JSON text, and JSON writes a NUL inside a string as \\u0000"
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as error:
        return (
            f"is not UTF-8 text: byte 0x{payload[error.start]:02x} at "
            f"{_where(payload, error.start)} is not valid UTF-8; messages are UTF-8 JSON, "
            "so convert it (e.g. iconv -f WINDOWS-1258 -t UTF-8 for Vietnamese text)"
        )
    if text.startswith("\ufeff"):
        return (
            "starts with a byte-order mark (U+FEFF), which the collector does not accept "
            "in a message: save it as UTF-8 without BOM"
        )
    try:
        msgspec.json.decode(payload, type=msgspec.Raw)  # syntax only: no numbers converted
    except RecursionError:
        if payload.lstrip().startswith(b"{"):
            return None  # an object: the decoder rejects what is too deep, as the collector
        return (
            "is nested too deeply to read (thousands of [ or {) and is not a JSON object: "
            "the protocol's messages are objects at most 3 levels deep"
        )
    except msgspec.DecodeError as error:
        lone = _lone_surrogate(text)
        if lone is not None:
            return (
                f"is not valid JSON: {text[lone : lone + 6]} at "
                f"{_where(payload, len(text[:lone].encode()))} is half of a UTF-16 surrogate "
                "pair; write the character as UTF-8 or as a full pair such as \\ud83d\\ude00"
            )
        detail = _BYTE_OFFSET.sub(lambda m: f"at {_where(payload, int(m[1]))}", str(error))
        return f"is not valid JSON ({detail})"
    return None


def _where(payload: bytes, offset: int) -> str:
    line = payload.count(b"\n", 0, offset) + 1
    column = offset - (payload.rfind(b"\n", 0, offset) + 1) + 1
    return f"line {line}, column {column} (byte {offset})"


def _lone_surrogate(text: str) -> int | None:
    """Where a \\uD800-\\uDFFF escape stands that is not half of a pair, if anywhere."""
    pending: tuple[int, int] | None = None  # (start of a high surrogate, where its pair must be)
    for match in _SURROGATE_ESCAPE.finditer(text):
        if len(match[1]) % 2 == 0:
            continue  # an escaped backslash followed by the letters "u d8.."
        start = match.end() - 6
        is_high = int(match[2], 16) < 0xDC00
        if pending is not None:
            if is_high or start != pending[1]:
                return pending[0]
            pending = None
            continue
        if not is_high:
            return start
        pending = (start, match.end())
    return None if pending is None else pending[0]


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
        # Input no decoder can read (nested past the stack, too large) is an unusable
        # input like a non-JSON file (2); a message the protocol refuses is 1.
        return 2 if error.undecodable else 1
    except CoverwatchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())

"""``coverwatch``: the server-side command line.

This module knows no component: each one registers its own top-level commands through
the entry-point group ``coverwatch.commands`` (declared in pyproject.toml), so that the
shared package imports nothing of the server side. A component whose libraries are not
installed still shows its commands, and running one says which extra to install:
``coverwatch --help`` works wherever only part of the extras is installed.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
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

    register_component_commands(commands)
    return parser


COMMANDS_GROUP = "coverwatch.commands"


def component_commands() -> dict[tuple[str, str], list[EntryPoint]]:
    """The installed ``coverwatch.commands`` entry points, by register function.

    Each entry point is one top-level command; the commands of one component share its
    ``register(commands)``, which adds them all. Ordered by module, so that the help
    lists each component's commands together, in the same order every time.
    """
    grouped: dict[tuple[str, str], list[EntryPoint]] = {}
    for point in entry_points(group=COMMANDS_GROUP):
        grouped.setdefault((point.module, point.attr), []).append(point)
    return dict(sorted(grouped.items()))


def register_component_commands(commands: Any) -> None:
    for (module, _), points in component_commands().items():
        try:
            register = points[0].load()
        except ImportError as error:  # the component's extra is not installed
            if error.name and (module + ".").startswith(error.name + "."):
                continue  # a component this installation does not have
            missing = error.name or "a library it needs"
            for point in points:
                _add_stub(commands, point, missing)
            continue
        register(commands)


def _add_stub(commands: Any, point: EntryPoint, missing: str) -> None:
    """A command whose component cannot be imported: running it says what to install."""
    extras = list(point.extras) or ["server"]
    install = f"pip install '.[{','.join(extras)}]'"
    stub = commands.add_parser(
        point.name,
        help=f"(needs: {install}; {missing} missing)",
        # No options of its own: whatever follows the command (an action, flags, --help)
        # ends in the message below rather than in a usage error about the arguments.
        prefix_chars="\0",
        add_help=False,
    )
    stub.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    needs = " and ".join(extras) + (" extras" if len(extras) > 1 else " extra")

    def handler(_: argparse.Namespace) -> int:
        raise CoverwatchError(
            f"this command needs the {needs} ({missing} is not installed): {install}"
        )

    stub.set_defaults(handler=handler)


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

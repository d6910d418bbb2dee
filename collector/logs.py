"""Log lines for a terminal (``text``) or for journald/Loki (``json``, one object per line).

Both formatters scrub passwords from whatever they print, as a last line of defence:
the code already logs URLs through :func:`coverwatch.settings.redact_url`, but a libpq
or paho error message, an exception traceback or an ``extra`` field could still carry a
``postgresql://user:secret@…`` URL or a ``password=secret`` conninfo string.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from coverwatch.settings import redact_url

TEXT_FORMAT = "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
LOG_FORMATS = ("text", "json")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.IGNORECASE)
_CONNINFO_PASSWORD = re.compile(r"\b(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'\"]+)", re.IGNORECASE)


def scrub(text: str) -> str:
    """``text`` with the password of every URL and conninfo string replaced by ``***``."""
    text = _URL.sub(lambda match: redact_url(match.group(0)), text)
    return _CONNINFO_PASSWORD.sub(r"\1***", text)


class TextFormatter(logging.Formatter):
    """The collector's ``key=value`` lines, scrubbed."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the ``extra`` fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in document:
                document[key] = _scrubbed(value)
        if record.exc_info:
            document["exc"] = scrub(self.formatException(record.exc_info))
        if record.stack_info:
            document["stack"] = scrub(self.formatStack(record.stack_info))
        return json.dumps(document, ensure_ascii=False)


def _scrubbed(value: Any) -> Any:
    """A JSON-ready copy of an ``extra`` value; strings (and what is not JSON) scrubbed."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(key): _scrubbed(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrubbed(item) for item in value]
    return scrub(value if isinstance(value, str) else str(value))


def configure(level: str, log_format: str = "text", *, stream: IO[str] | None = None) -> None:
    """Send every log record to ``stream`` (stderr by default) in ``log_format``."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler])

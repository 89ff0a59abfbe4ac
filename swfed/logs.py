"""Logging: one JSON object per line (or text for humans), event names first.

Every line has ``ts``, ``level`` and ``event`` (a stable dotted name such as
``federation.send.failed`` that admins grep for) plus the fields given.
Secrets never reach a log line: callers pass names and ids, not keys or
tokens.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_LOGGER = logging.getLogger("swfed")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": getattr(record, "event", record.getMessage()),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        tail = " ".join(f"{k}={v}" for k, v in fields.items())
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{ts} {record.levelname.lower():7} {getattr(record, 'event', record.getMessage())}"
        if tail:
            line += " " + tail
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(log_format: str = "json", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if log_format == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    _LOGGER.setLevel(level.upper())


def log(event: str, level: str = "info", **fields: Any) -> None:
    """Emit one log line named ``event`` with ``fields``."""
    _LOGGER.log(logging.getLevelName(level.upper()), event,
                extra={"event": event, "fields": fields})


def log_exception(event: str, **fields: Any) -> None:
    _LOGGER.exception(event, extra={"event": event, "fields": fields})

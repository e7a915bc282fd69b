"""Structured logging for the daemon: one JSON object per line.

Pass fields with ``log.info("decision", extra={"fields": {...}})``; they are merged into the
line. Exceptions are rendered as ``exc_type`` / ``exc`` (the message) and ``traceback``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any


class JsonFormatter(logging.Formatter):
    """``{"ts": ..., "level": ..., "logger": ..., "msg": ..., **fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for k, v in fields.items():
                line.setdefault(str(k), v)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line["exc_type"] = type(exc).__name__
            line["exc"] = str(exc)
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, allow_nan=True)


def configure(level: int | str = logging.INFO, stream: Any = None) -> None:
    """Route the root logger to ``stream`` (stderr) as JSON lines; idempotent."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_canaryd_json", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._canaryd_json = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)

"""Logs: one JSON object per line for machines, one readable line for a person at a terminal.

Both carry the same fields: time, level, logger, message and the ``extra=`` values (the Call-ID
when there is one). ``--log-format auto`` (the default) writes text when the log stream is a
terminal and JSON otherwise, so pipes, files and log shippers always get JSON.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

LOG_FORMATS = ("auto", "json", "text")
# Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
# A value with any of these is quoted in text lines, so "key=value" stays one token.
_NEEDS_QUOTES = frozenset(' "=\t\n\r')
_TEXT_SKIPPED = frozenset({"color_message"})  # uvicorn's message again, with terminal colour codes


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
            for key, value in vars(record).items() if key not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _text_value(value: Any) -> str:
    text = "" if value is None else str(value)
    if not text or any(c in _NEEDS_QUOTES for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    """``12:34:56.789 WARNING callbridge.http  HTTP request refused  client=127.0.0.1 path=/x`` (local time)."""

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{clock}.{int(record.msecs):03d} {record.levelname:<7} {record.name}  {record.getMessage()}"
        extras = {key: value for key, value in _extras(record).items()
                  if key not in _TEXT_SKIPPED and value is not None}  # "not set" needs no words on a terminal
        if extras:
            line += "  " + " ".join(f"{key}={_text_value(value)}" for key, value in extras.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def use_text(log_format: str, stream: IO[str]) -> bool:
    if log_format == "auto":
        isatty = getattr(stream, "isatty", None)
        return bool(isatty and isatty())
    return log_format == "text"


def setup_logging(level: str = "info", log_format: str = "auto") -> None:
    """Logs to stderr: JSON lines, or text lines (``text``, or ``auto`` on a terminal)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter() if use_text(log_format, sys.stderr) else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log duplicates what we log; keep its errors only.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.Formatter.converter = time.gmtime


__all__ = ["JsonFormatter", "LOG_FORMATS", "TextFormatter", "setup_logging", "use_text"]

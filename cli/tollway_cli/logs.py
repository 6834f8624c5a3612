"""Process logging for every `tollway` command: JSON lines on stderr, with the structured fields passed as `extra`."""

from __future__ import annotations

import logging
import sys
import time

import orjson
from tollway_dataplane import accesslog

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.name == "tollway.access":
            return record.getMessage()  # already a JSON line
        data = {
            "time": round(time.time(), 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


def setup(level: str = "info", access_log: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("tollway.access").setLevel(logging.INFO if access_log else logging.WARNING)
    accesslog.use_sink(sys.stderr.fileno() if access_log else None)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

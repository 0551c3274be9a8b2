"""Structured logs: one JSON object a line, for the service's own loggers and uvicorn's.

Every request is one line from the "semsearch.access" logger (method, route, path, status,
duration, request id, client), written by service/metrics.py's middleware; headers, bodies and
the API key are never logged.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

ACCESS = logging.getLogger("semsearch.access")
# An incoming X-Request-ID is kept when it looks like an id; anything else gets a fresh one.
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
FIELDS = ("method", "route", "path", "status", "duration_ms", "request_id", "client")


class JsonFormatter(logging.Formatter):
    """{"time", "level", "logger", "message", request fields when present, "error" with a traceback}."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        line.update({name: getattr(record, name) for name in FIELDS if hasattr(record, name)})
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def log_config(level: str) -> dict:
    """uvicorn's log_config: everything as JSON lines on stderr at this level; uvicorn's own
    access log is off (semsearch.access replaces it)."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    loggers = {name: {"handlers": ["json"], "level": level.upper(), "propagate": False}
               for name in ("semsearch", "indexer", "uvicorn", "uvicorn.error")}
    return {"version": 1, "disable_existing_loggers": False,
            "formatters": {"json": {"()": JsonFormatter}}, "handlers": {"json": handler},
            "loggers": loggers, "root": {"handlers": ["json"], "level": "WARNING"}}


def request_id(scope) -> str:
    """The client's X-Request-ID when it is a plausible id, else a new one."""
    for name, value in scope["headers"]:
        if name.lower() == b"x-request-id":
            given = value.decode("latin-1")
            if REQUEST_ID.fullmatch(given):
                return given
    return uuid.uuid4().hex


def log_request(scope, request: str, route: str, status: int, seconds: float) -> None:
    client = scope.get("client")
    ACCESS.info("%s %s %d", scope["method"], scope["path"], status, extra={
        "method": scope["method"], "route": route, "path": scope["path"], "status": status,
        "duration_ms": round(seconds * 1000, 2), "request_id": request,
        "client": f"{client[0]}:{client[1]}" if client else None})

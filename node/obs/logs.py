"""JSON logs: one object per line with time, level, node, event, trace id and the event's fields.

Fields come from `extra=` (`log.info("peer down", extra={"peer": "n2"})`). The trace id is the
request's: taken from its W3C `traceparent` header when it has one, else made up, and
echoed in the `X-Trace-Id` response header so a client can quote it. Request bodies and
tokens are never logged: no log call here or elsewhere is given them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import random
import re
import sys
import time

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

TRACE_ID: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="")
TRACE_HEADER = "X-Trace-Id"
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
# what every LogRecord has; anything else on a record came from `extra=`
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "node": self.node_id,
            "logger": record.name,
            "event": record.getMessage(),
        }
        trace_id = TRACE_ID.get()
        if trace_id:
            entry["trace_id"] = trace_id
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in entry:
                entry[name] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class ClientFaultsAsWarnings(logging.Filter):
    """aiohttp's server logs a request its HTTP parser refuses (a header line over the limit,
    a bad method, broken framing) as an error with a traceback, though it answers the client
    4xx and nothing in the node went wrong. Such a record becomes one warning line that names
    the fault, so the error level stays for what an operator must look at."""

    def filter(self, record: logging.LogRecord) -> bool:
        fault = record.exc_info[1] if record.exc_info else None
        if isinstance(fault, HttpProcessingError) and 400 <= fault.code < 500:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
            record.msg = "refused a malformed HTTP request from %s: %s"
            record.args = (remote, f"{type(fault).__name__}: {fault.message}"[:200])
            record.exc_info = record.exc_text = None
        return True


def setup(node_id: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(node_id))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(ClientFaultsAsWarnings())


def trace_id_of(traceparent: str) -> str:
    """The trace id of a W3C traceparent, or "" if it is not one."""
    found = TRACEPARENT.fullmatch(traceparent)
    return found.group(1) if found else ""


def start_trace(request: web.Request) -> None:
    """Give the request a trace id for its log lines: its traceparent's, or a new one
    (tracing, when on, replaces it with its span's)."""
    trace_id = trace_id_of(request.headers.get("traceparent", ""))
    TRACE_ID.set(trace_id or f"{random.getrandbits(128):032x}")

"""The service's logs: one JSON object per line, each carrying the order number and a trace id
(the order's tracking id) when it concerns an order, and never a secret.

Secrets are removed by a filter on the handler, with `Secrets.redact` (every value the service
has resolved), so a message built anywhere — an exception's text included — is scrubbed before
it is written. Per-order steps are in the journal; the log says what an operator must notice:
dead letters, orders held in doubt, refused callbacks, quarantined input, recovered jobs.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from dockyard.runtime.secrets import Secrets

__all__ = ["JsonFormatter", "RedactFilter", "TextFormatter", "event", "setup_logging"]

LOG = logging.getLogger("dockyard.service")
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "event": record.getMessage(),
        }
        data.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode("utf-8")


class TextFormatter(logging.Formatter):
    """One line for a person: time, level, the event, then its fields as key=value (order number,
    warehouse, flow, job and reason first; the trace id last), quoted when they hold spaces."""

    FIRST = ("order_no", "warehouse", "flow", "job", "reason")

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {k: v for k, v in record.__dict__.items()
                  if k not in _STANDARD and not k.startswith("_") and v is not None}
        order = [k for k in self.FIRST if k in fields]
        order += sorted(k for k in fields if k not in self.FIRST and k != "trace_id")
        order += ["trace_id"] if "trace_id" in fields else []
        return line + "".join(f" {k}={_shown(fields[k])}" for k in order)


def _shown(value: Any) -> str:
    text = str(value)
    if not text or any(ch.isspace() or ch in "\"=" for ch in text):
        return orjson.dumps(text).decode("utf-8")
    return text


class RedactFilter(logging.Filter):
    """Scrub every secret value the service has resolved from the message and every field."""

    def __init__(self, secrets: Secrets) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.secrets.redact(record.getMessage())
        record.args = ()
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, self.secrets.redact(value))
        return True


def setup_logging(secrets: Secrets, *, level: str = "INFO", fmt: str = "json",
                  stream: TextIO | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactFilter(secrets))
    LOG.addHandler(handler)
    LOG.setLevel(level.upper())
    LOG.propagate = False
    return handler


def event(level: int, what: str, *, order_no: str | None = None, trace_id: str | None = None,
          **fields: Any) -> None:
    """Log one event; cheap when the level is off. `trace_id` may be a tracking id of either form
    (tracing.py): the log carries its 32-digit trace id, which a tracing backend can search."""
    if LOG.isEnabledFor(level):
        LOG.log(level, what, extra={"order_no": order_no, "trace_id": trace_id[:32] if trace_id else trace_id,
                                    **fields})

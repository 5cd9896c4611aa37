"""The record's history: PREMIS-style events (what happened, when, by whom, how it ended)."""

from __future__ import annotations

import datetime as dt
import socket

from schemas.record import Event, EventType, Record

try:
    from importlib.metadata import version as _version

    KIROKU_VERSION = _version("kiroku")
except Exception:  # noqa: BLE001 - running from a source tree that is not installed
    KIROKU_VERSION = "0"


def kiroku_agent(stage: str) -> str:
    """The agent name for something kiroku did by itself, e.g. 'kiroku 0.1.0 (ingest-document on host1)'."""
    return f"kiroku {KIROKU_VERSION} ({stage} on {socket.gethostname()})"


def with_event(record: Record, type_: EventType, *, agent: str, detail: str | None = None,
               outcome: str = "success", at: dt.datetime | None = None) -> Record:
    """The record with one more event at the end of its history."""
    at = at or dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    event = Event(type=type_, at=at, agent=agent, outcome=outcome, detail=detail)  # type: ignore[arg-type]
    return record.model_copy(update={"events": [*record.events, event]})

"""``sensorml label``: operators' verdicts on alarms, stored in the gateway's buffer.

A label says an event (an alarm, a trip, a limit...) was a ``true_fault`` or a
``false_alarm``, with a note and who said it. It goes into the buffer's ``labels`` table
(the gateway may be running: one short transaction), the sync job uploads it under
``labels/<device>/...``, and ``training.ingest`` joins it back to its event.

>>> import tempfile, pathlib
>>> from sensorml.buffer.db import Buffer
>>> p = pathlib.Path(tempfile.mkdtemp()) / "b.db"
>>> with Buffer(p) as b:
...     eid = b.add_event("alarm", {"score": 4.2}, t=1000.0)
>>> label_event(p, eid, "false_alarm", note="pump cleaning", by="ana", t=1060.0)
1
>>> [(a.event.id, a.event.kind, a.labels[0].verdict) for a in alarm_events(p)]
[(1, 'alarm', 'false_alarm')]
"""

from __future__ import annotations

import datetime as _dt
import getpass
from pathlib import Path

from sensorml.buffer.queries import BufferQueries
from sensorml.buffer.rows import AlarmEvent
from sensorml.buffer.schema import LABEL_VERDICTS
from sensorml.errors import ConfigError

__all__ = ["alarm_events", "format_events", "label_event"]


def label_event(buffer_path: str | Path, event_id: int, verdict: str, *, note: str = "",
                by: str | None = None, t: float | None = None) -> int:
    """Record a verdict on event *event_id*; returns the label id."""
    if verdict not in LABEL_VERDICTS:
        raise ConfigError(f"--verdict: {verdict!r} is not one of {', '.join(LABEL_VERDICTS)}")
    if by is None:
        try:
            by = getpass.getuser()
        except (OSError, KeyError):
            by = ""
    with BufferQueries.open(buffer_path) as q:
        return q.add_label(int(event_id), verdict, note, by, t)


def alarm_events(buffer_path: str | Path, limit: int = 20,
                 min_severity: int = 2) -> list[AlarmEvent]:
    """Recent events of at least *min_severity* (2 alarm, 3 trip), newest first, each
    with its labels (oldest first)."""
    with BufferQueries.open(buffer_path, readonly=True) as q:
        return q.alarm_events(limit, min_severity)


def format_events(events: list[AlarmEvent]) -> str:
    """One line per event: id, UTC time, kind, the latest label if any."""
    if not events:
        return "no alarm or trip events in the buffer"
    lines = []
    for e, labels in events:
        when = _dt.datetime.fromtimestamp(e.t, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        d = e.detail
        what = d.get("reason") or d.get("detail") or (f"score {d['score']:.3g}"
                                                      if isinstance(d.get("score"), float) else "")
        lab = labels[-1] if labels else None
        tag = f"  [{lab.verdict} by {lab.author or '?'}]" if lab else "  [unlabelled]"
        lines.append(f"{e.id:>7}  {when}Z  {e.kind:<8} {str(what)[:50]}{tag}")
    return "\n".join(lines)

"""Typed rows: what the buffer's named queries return.

One ``NamedTuple`` per table, fields in the table's column order (``synced_at`` is None
until the cloud store confirmed the row), JSON columns already decoded: an event's
``detail`` is a dict, a raw window's ``channels`` and ``shape`` are tuples. NamedTuples,
not dataclasses: the sync job builds ~60k of them a second, and one costs ~0.3 µs from
a cursor's tuple (``_make``) where a frozen dataclass costs ~1.1 µs from a dict.

>>> r = ScoreRow(id=1, t=10.0, window_seq=0, score=0.5, verdict=0, model_version="1",
...              synced_at=None, features=b"\\x00\\x00\\x80?")
>>> r.feature_vector().tolist()
[1.0]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

__all__ = ["AlarmEvent", "AnomalyCounts", "EventLabel", "EventRow", "LabelRow", "Migration",
           "ModelSeen", "PendingBatch", "PendingTrip", "ROW_TYPES", "RawWindowRow", "Row", "ScoreColumns",
           "ScoreRow", "TableCount", "row_from_db"]


class EventRow(NamedTuple):
    """``events``: trips, alarms, warnings, resets, model and source changes..."""

    id: int
    t: float
    kind: str
    severity: int  # 0 info, 1 warn, 2 alarm, 3 trip
    priority: int
    device: str
    model_version: str | None
    synced_at: float | None
    detail: dict


class LabelRow(NamedTuple):
    """``labels``: an operator's verdict on an event."""

    id: int
    event_id: int
    t: float
    verdict: str  # true_fault | false_alarm
    note: str
    author: str
    synced_at: float | None


class ScoreRow(NamedTuple):
    """``scores``: one scored window; ``features`` is little-endian float32 or None."""

    id: int
    t: float
    window_seq: int
    score: float
    verdict: int  # sensorml.edge.decider.Verdict
    model_version: str | None
    synced_at: float | None
    features: bytes | None

    def feature_vector(self) -> np.ndarray | None:
        """The stored features as float32 (None when the window kept none)."""
        return None if self.features is None else np.frombuffer(self.features, "<f4")


class RawWindowRow(NamedTuple):
    """``raw_windows``: samples around an alarm (priority 2) or sampled normal ones (3)."""

    id: int
    t: float
    reason: str  # around_alarm | sample
    priority: int
    channels: tuple[str, ...]
    rate: float
    dtype: str  # numpy dtype string, e.g. "<f4"
    shape: tuple[int, ...]
    synced_at: float | None
    data: bytes

    def samples(self) -> np.ndarray:
        """The window as ``dtype[shape]`` (a read-only view of ``data``)."""
        return np.frombuffer(self.data, np.dtype(self.dtype)).reshape(self.shape)


Row = EventRow | LabelRow | ScoreRow | RawWindowRow


ROW_TYPES: dict[str, type] = {"events": EventRow, "labels": LabelRow, "scores": ScoreRow,
                              "raw_windows": RawWindowRow}


def row_from_db(table: str, values: Sequence[Any]) -> Row:
    """The typed row of *table* from its values in field order (JSON columns decoded)."""
    if table == "scores":
        return ScoreRow._make(values)
    if table == "labels":
        return LabelRow._make(values)
    v = list(values)
    if table == "events":
        v[8] = json.loads(v[8])
        return EventRow._make(v)
    v[4], v[7] = tuple(json.loads(v[4])), tuple(json.loads(v[7]))
    return RawWindowRow._make(v)


class TableCount(NamedTuple):
    rows: int
    unsynced: int


class Migration(NamedTuple):
    name: str
    applied_at: float  # unix seconds


class PendingTrip(NamedTuple):
    """The newest trip event when no reset came after it (a latch to restore)."""

    id: int
    t: float
    detail: dict


class AlarmEvent(NamedTuple):
    """An event of alarm severity or worse with its labels, oldest first."""

    event: EventRow
    labels: tuple[LabelRow, ...]


class EventLabel(NamedTuple):
    """A label joined to its event, and the first reset after the event (or None)."""

    event_id: int
    event_t: float
    kind: str
    severity: int
    verdict: str
    note: str
    author: str
    labelled_t: float
    next_reset_t: float | None


class PendingBatch(NamedTuple):
    """An upload the sync job began (name noted before the PUT) and has not confirmed."""

    name: str
    ids: tuple[int, ...]


class ModelSeen(NamedTuple):
    """The newest model version the buffer recorded (on a score or an event)."""

    version: str
    t: float


class AnomalyCounts(NamedTuple):
    """Windows of a recent span and how many were warn-or-worse, alarm-or-worse."""

    windows: int
    warn_or_worse: int
    alarm_or_worse: int


@dataclass(frozen=True)
class ScoreColumns:
    """Score rows that kept their features, in time order, as columns."""

    source: str
    t: np.ndarray  # float64 unix seconds
    X: np.ndarray  # float32 [rows, n_features]
    score: np.ndarray  # float64, as the gateway scored it
    verdict: np.ndarray  # int8 (sensorml.edge.decider.Verdict)
    model_version: tuple[str, ...]
    window_seq: np.ndarray
    skipped: int  # rows without features or with another width

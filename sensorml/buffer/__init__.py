"""The local SQLite buffer. The gateway's side: :mod:`~sensorml.buffer.recorder` (the
fast path's non-blocking front), :mod:`~sensorml.buffer.lanes` (its bounded queue),
:mod:`~sensorml.buffer.writer` (its thread), :mod:`~sensorml.buffer.db` (the writes, plain
sqlite3) holding a :mod:`~sensorml.buffer.space` keeper (size cap, free-space reserve,
ballast, checkpoints). Every other process's side: :mod:`~sensorml.buffer.queries`
(named queries returning :mod:`~sensorml.buffer.rows`, with sqlite-utils) and
:mod:`~sensorml.buffer.labels` (operators' verdicts). Schema and migrations:
:mod:`~sensorml.buffer.schema`, :mod:`~sensorml.buffer.migrate`; opening a file:
:mod:`~sensorml.buffer.connection`.
"""

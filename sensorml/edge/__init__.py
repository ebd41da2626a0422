"""The fast path, in the order a sample travels it: windowing → features → scorer →
decider (with hard limits, the watchdog and the trip latch) → trip; one thread, no I/O but
the trip itself (:mod:`sensorml.edge.fastpath`).
"""

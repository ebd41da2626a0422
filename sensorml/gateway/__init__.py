"""The gateway process around the fast path: its sources and reader threads, the model
slot (live and shadow), the control port, the metrics it serves (:mod:`sensorml.gateway.process`).
"""

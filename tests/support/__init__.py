"""What the tests share, one place each (importable as ``support``: pytest's
``pythonpath = ["tests"]``). Nothing here imports ``benchmarks``.

- :mod:`support.waiting`: :func:`~support.waiting.wait_until` (poll with a deadline) and
  :class:`~support.waiting.Signal` (a condition with a deadline);
- :mod:`support.devices`: a real pty playing the device (:class:`~support.devices.PtyDevice`,
  :class:`~support.devices.Responder`, :class:`~support.devices.FrameSensor`) and the
  :class:`~support.devices.Collector` of what a source emits;
- :mod:`support.procs`: the simulator and the gateway as real processes, their config and
  their structured log lines;
- :mod:`support.bundles`: a minimal manifest and tiny real ONNX graphs;
- :mod:`support.faultproxy`: a TCP proxy on 127.0.0.1 that cuts, refuses, blackholes or
  answers HTTP errors on demand.
"""

"""Trip by running a command hook (a relay board's CLI, a GPIO helper, a site script).

The command runs without a shell, with ``timeout_s`` for the whole run; exit status 0
is success, anything else (or the timeout) a failed attempt. Its output (stdout and
stderr together) is kept, truncated, in the result's detail. The program is looked up
on ``PATH`` once, when the actuator is opened: a missing one is a :class:`ConfigError`
then, not a surprise at trip time. The hook sees ``SENSORML_ACTION`` (``trip`` or
``reset``) and ``SENSORML_TRIP_REASON`` in its environment. It runs in its own process
group, and the whole group is killed when it overruns its timeout.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

from firmware_bridge.actuators.base import Actuator
from firmware_bridge.actuators.spec import ActuatorSpec
from firmware_bridge.errors import ConfigError, TripError

#: characters of output kept in a result's detail
MAX_OUTPUT = 300


def _tail(out: bytes) -> str:
    text = out.decode("utf-8", "replace").strip().replace("\n", " | ")
    return text if len(text) <= MAX_OUTPUT else "..." + text[-MAX_OUTPUT:]


def resolve_program(name: str, key: str) -> str:
    """The absolute path of ``name`` (searched on PATH unless it contains a slash)."""
    if os.sep in name:
        if not (os.path.isfile(name) and os.access(name, os.X_OK)):
            raise ConfigError(f"{key}: {name!r} is not an executable file")
        return os.path.abspath(name)
    path = shutil.which(name)
    if path is None:
        raise ConfigError(f"{key}: {name!r} not found on PATH")
    return path


class CommandActuator(Actuator):
    """``command``: run ``argv`` to trip and ``reset_argv`` (if any) to reset."""

    kind = "command"

    def __init__(self, spec: ActuatorSpec) -> None:
        super().__init__(spec)
        self.argv = {
            "trip": (resolve_program(spec.argv[0], f"{spec.key}.argv[0]"), *spec.argv[1:]),
            "reset": (
                (resolve_program(spec.reset_argv[0], f"{spec.key}.reset_argv[0]"), *spec.reset_argv[1:])
                if spec.reset_argv else ()
            ),
        }

    def target(self) -> str:
        return " ".join(self.spec.argv)

    def _attempt(self, action: str, reason: str) -> str:
        argv = self.argv[action]
        if not argv:
            return "no reset_argv configured: nothing to run"
        env = {**os.environ, "SENSORML_ACTION": action, "SENSORML_TRIP_REASON": reason}
        timeout = self.spec.timeout_s
        name = os.path.basename(argv[0])
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
            )
        except OSError as e:
            raise TripError(f"cannot run {argv[0]}: {e.strerror or e}") from None
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                out, _ = proc.communicate(timeout=1.0)
            except subprocess.TimeoutExpired:  # a grandchild left its own group and holds the pipe
                proc.kill()
                proc.wait()
                out = b""
            raise TripError(
                f"{name} did not finish within {timeout * 1e3:.0f} ms (killed)"
                + (f"; output: {_tail(out)}" if out.strip() else "")
            ) from None
        if proc.returncode != 0:
            what = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
                    else f"exited with status {proc.returncode}")
            raise TripError(f"{name} {what}" + (f"; output: {_tail(out)}" if out.strip() else ""))
        return f"{name} exited 0" + (f"; output: {_tail(out)}" if out.strip() else "")

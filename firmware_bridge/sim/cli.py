"""``sensorml simulate``: the simulated machine served the way a real device serves it.

``sensorml simulate`` mounts :func:`add_arguments` and :func:`run` in the one command
line; ``python -m firmware_bridge.sim.cli`` is the same command for a firmware_bridge-only
checkout (:func:`main`). It prints one line per endpoint (``serial: /dev/pts/7 format=frames``,
``modbus-tcp: 127.0.0.1:40123``), then ``ready``; then it streams in real time until
``quit`` on stdin, SIGTERM or SIGINT (stdin reaching EOF does not stop it, so it can run
detached). Stdin commands, each answered by one ``ok ...`` or ``error ...`` line::

    fault NAME [SEVERITY [RAMP]]   inject a fault now (e.g. "fault outer_race 1.0 10s")
    clear [NAME]                   heal one fault or all
    stop | reset                   stop the machine (coasts down) / restart it
    freeze [DURATION | off]        Modbus registers keep replaying their values (a hung device)
    nan [DURATION | off]           every fast sample is NaN (a dead ADC)
    status                         one line: state, speed, slow values, active faults
    quit                           exit cleanly
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections import deque

import numpy as np

from firmware_bridge.errors import BridgeError, ConfigError
from firmware_bridge.parsing import parse_duration
from firmware_bridge.sim.faults import FAULT_BITS, FAULTS, parse_fault_arg
from firmware_bridge.sim.lifesigns import HeartbeatMonitor, Spell, spell_command
from firmware_bridge.sim.machine import PROFILES, STATUS_CODES
from firmware_bridge.sim.replay import record
from firmware_bridge.sources.sim import Pacer, machine_from_query

EPILOG = f"""\
faults: {', '.join(FAULTS)}
  dropout: the sensor stops sending (the serial device goes silent; frame sequence
  numbers jump); stuck: the sensor repeats its last value; spikes: ±5..15 g single samples.

examples:
  sensorml simulate --serial --format frames --rate 25600
  sensorml simulate --serial --modbus-tcp 127.0.0.1:0 --fault outer_race --at 30s --ramp 10s
  sensorml simulate --serial --format csv --replay data/sim/pump_outer_race_2k.csv --columns ax,ay,az
  sensorml simulate --record run.csv --seconds 10 --rate 2048 --fault imbalance --at 5s
  sensorml simulate --modbus-rtu --rtu-baud 19200      (Modbus RTU on a pty)
  sensorml simulate --modbus-tcp 127.0.0.1:5020 --speed-schedule "0:2970,60s:2400/10s,2m:2970/5s"

stdin commands while running: fault NAME [SEV [RAMP]] | clear [NAME] | stop | reset |
  freeze [DUR|off] | nan [DUR|off] | status | quit

life signs: with --heartbeat-timeout S the machine stops itself (as on STOP) when the
gateway's heartbeat (serial "HB n" lines, or Modbus coil 1 toggled / holding register 100
incremented) has not arrived for S seconds since the last one; it is enforced from the
first beat on, and a reset while beats are missing stops it again.
"""


DESCRIPTION = """\
A simulated rotating machine (pump or motor) with fault injection, served in real
time on a pseudo-terminal (like a USB serial sensor) and/or as a Modbus TCP device."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the simulator's options to *p* (its ``fn`` default is :func:`run`)."""
    p.description, p.epilog = DESCRIPTION, EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.set_defaults(fn=run)
    g = p.add_argument_group("machine")
    g.add_argument("--profile", choices=sorted(PROFILES), default="pump", help="machine type (default pump)")
    g.add_argument("--rate", type=float, default=None, help="vibration samples/s per axis, 1000..25600 (default 25600)")
    g.add_argument("--seed", type=int, default=0, help="random seed; same seed, same signal (default 0)")
    g.add_argument("--rpm", type=float, help="starting speed set-point (default: the profile's nominal)")
    g.add_argument("--load", type=float, default=0.75, help="starting load, fraction of rated (default 0.75)")
    g.add_argument("--speed-schedule", metavar="SPEC", help='speed set-points "time:rpm[/ramp],..." or "auto"')
    g.add_argument("--load-schedule", metavar="SPEC", help='load set-points "time:load[/ramp],..."')
    g.add_argument("--coast", default="2s", help="coast-down time constant after STOP (default 2s)")
    g.add_argument("--start", default="3s", help="ramp-up time after RESET (default 3s)")
    g = p.add_argument_group("faults")
    g.add_argument("--fault", metavar="NAME", help="fault to inject on schedule (see below)")
    g.add_argument("--at", default="0s", help="when the fault starts, machine time (default 0s)")
    g.add_argument("--ramp", default="0s", help="time for the fault to reach full severity (default 0s)")
    g.add_argument("--severity", type=float, default=1.0, help="fault severity, 1.0 = clearly developed")
    g.add_argument("--faults", metavar="SPEC",
                   help='several scheduled faults: "name[@at][+ramp][*severity],..." '
                   '(e.g. "imbalance@30s+10s*0.5,outer_race@1m")')
    g = p.add_argument_group("replay instead of simulating")
    g.add_argument("--replay", metavar="FILE.csv", help="play a recorded CSV table instead of the model")
    g.add_argument("--columns", help="columns of the table to serve, comma-separated (default: all vibration columns)")
    g.add_argument("--no-loop", action="store_true", help="go silent at the end of the table instead of looping")
    g = p.add_argument_group("endpoints")
    g.add_argument("--serial", action="store_true", help="serve samples on a new pty; prints its path")
    g.add_argument("--format", choices=("csv", "frames"), default="frames", help="serial wire format (default frames)")
    g.add_argument("--link", metavar="PATH",
                   help="also make PATH a symlink to the serial pty (a stable name for configs, "
                        "like /dev/serial/by-id/...); removed on exit")
    g.add_argument("--block", type=int, default=256, help="samples per serial block/frame (default 256)")
    g.add_argument("--modbus-tcp", metavar="HOST:PORT", help="serve registers on Modbus TCP (port 0 = any free port)")
    g.add_argument("--modbus-rtu", action="store_true",
                   help="also serve the registers as Modbus RTU on a new pty; prints its path "
                   "(needs the TCP server, started on 127.0.0.1:0 if --modbus-tcp is not given)")
    g.add_argument("--rtu-baud", type=int, default=19200, help="baud rate of the RTU pty (default 19200)")
    g.add_argument("--map", default=None,
                   help="register map TOML (default: the simulated pump's own; "
                        "`sensorml examples DIR` writes a copy to DIR/maps/sim_pump.toml)")
    g.add_argument("--update-hz", type=float, default=10.0, help="register refresh rate (default 10)")
    g.add_argument("--speedup", type=float, default=1.0, help="run N times faster than real time (default 1)")
    g.add_argument("--duration", help="exit after this much machine time (default: run until quit)")
    g.add_argument("--heartbeat-timeout", metavar="DURATION",
                   help="stop the machine when the gateway's heartbeat is missing this long "
                        "(enforced from the first beat; default: not enforced)")
    g = p.add_argument_group("recording")
    g.add_argument("--record", metavar="OUT.csv", help="write --seconds of the machine to a replayable CSV and exit")
    g.add_argument("--seconds", type=float, default=2.0, help="length of the recording (default 2)")


class Simulator:
    """The running simulator: one machine, its endpoints, and the real-time loop."""

    def __init__(self, args: argparse.Namespace, out=sys.stdout) -> None:
        self.args, self.out = args, out
        q = {"seed": args.seed, "load": args.load, "coast": args.coast, "start": args.start}
        if args.rate is not None:
            q["rate"] = args.rate
        if args.rpm is not None:
            q["rpm"] = args.rpm
        if args.fault:
            q.update(fault=args.fault, at=args.at, ramp=args.ramp, severity=args.severity)
        if args.faults:
            q["faults"] = args.faults
        if args.speed_schedule:
            q["schedule"] = args.speed_schedule
        if args.load_schedule:
            q["load_schedule"] = args.load_schedule
        if args.replay:
            q.update(file=args.replay, loop="0" if args.no_loop else "1")
            if args.columns:
                q["columns"] = args.columns
        self.machine = machine_from_query("replay" if args.replay else args.profile, q)
        self.lock = threading.Lock()
        self.quit = threading.Event()
        self._plock = threading.Lock()
        self._ms: deque = deque()
        self.rms = np.zeros(len(self.machine.channels))
        self.serial = self.modbus = None
        self.heartbeat = None if not args.heartbeat_timeout else HeartbeatMonitor(
            parse_duration(args.heartbeat_timeout, "--heartbeat-timeout"))
        self.freeze, self.nan = Spell(), Spell()

    def say(self, line: str) -> None:
        with self._plock:
            self.out.write(line + "\n")
            self.out.flush()

    # ---------------------------------------------------------------- commands
    def command(self, line: str) -> str:
        """Apply one stdin/serial command; return the reply line."""
        words = line.split()
        if not words:
            return ""
        verb = words[0].lower()
        with self.lock:
            m = self.machine
            if verb == "stop":
                m.stop()
            elif verb == "reset":
                m.reset()
            elif verb == "fault":
                name, sev = parse_fault_arg(" ".join(words[1:3]))
                ramp = parse_duration(words[3], "ramp") if len(words) > 3 else 0.0
                m.inject(name, sev, ramp)
            elif verb == "clear":
                m.clear_faults(words[1] if len(words) > 1 else None)
            elif verb in ("freeze", "nan"):
                return "ok " + spell_command(getattr(self, verb), verb, words[1:])
            elif verb == "status":
                return "ok status " + self._status_text()
            elif verb == "quit":
                self.quit.set()
            else:
                raise ConfigError(f"unknown command {verb!r} (fault, clear, stop, reset, freeze, nan, status, quit)")
        return "ok " + " ".join(words)

    def _status_text(self) -> str:
        m = self.machine
        slow = " ".join(f"{k}={v:.2f}" for k, v in m.slow_values().items())
        faults = ",".join(f"{k}:{v:.2f}" for k, v in m.active_faults().items()) or "none"
        rms = " ".join(f"rms_{c}={r:.4f}" for c, r in zip(m.channels, self.rms))
        hb = "" if self.heartbeat is None else f" heartbeat={self.heartbeat.state}"
        spells = "".join(f" {n}={'on' if s.active() else 'off'}"
                         for n, s in (("freeze", self.freeze), ("nan", self.nan)))
        return f"{m.status} t={m.time:.2f} {slow} {rms} faults={faults}{hb}{spells}"

    def _heartbeat(self, via: str) -> None:
        if self.heartbeat is not None and (line := self.heartbeat.beat(via)) is not None:
            self.say(f"event {line}")

    def _enforce_heartbeat(self) -> None:
        """Stop the machine (as a STOP would) while the heartbeat is missing."""
        hb = self.heartbeat
        if hb is None or not hb.lost():
            return
        with self.lock:
            running = not self.machine.stopped
            if running:
                self.machine.stop()
        if running:
            self.say(f"event stop by heartbeat timeout (no heartbeat for {hb.silent_for():.2f} s, "
                     f"timeout {hb.timeout_s:g} s)")

    def _serial_command(self, word: str) -> str | None:
        if word == "HB" or word.startswith("HB "):
            self._heartbeat("serial")
            return None
        if word not in ("STOP", "RESET"):
            raise ConfigError(word)
        with self.lock:
            self.machine.stop() if word == "STOP" else self.machine.reset()
        if word == "RESET" and self.serial is not None:
            self.serial.resend_header()
        self.say(f"event {word.lower()} by serial")
        return f"ack {word}"

    def _coil(self, stopped: bool) -> None:
        with self.lock:
            self.machine.stop() if stopped else self.machine.reset()
        self.say(f"event {'stop' if stopped else 'reset'} by modbus coil")

    def _modbus_values(self) -> dict[str, float]:
        with self.lock:
            m = self.machine
            vals = dict(m.slow_values())
            vals["status"] = STATUS_CODES[m.status]
            code = 0
            for name in m.active_faults():
                code |= FAULT_BITS[name]
            vals["fault_code"] = code
            for c, r in zip(m.channels, self.rms.tolist()):
                vals[f"vib_rms_{c}"] = r
        return vals

    # ------------------------------------------------------------------ serving
    def open_endpoints(self) -> None:
        a = self.args
        if a.serial:
            from firmware_bridge.sim.serial_device import open_device

            self.serial = open_device(a.format, tuple(self.machine.channels), self._serial_command).start()
            if a.link:
                import os

                if os.path.lexists(a.link):
                    if not os.path.islink(a.link):
                        raise ConfigError(f"--link: {a.link} exists and is not a symlink")
                    os.unlink(a.link)
                os.symlink(self.serial.path, a.link)
                self._link = a.link
            self.say(f"serial: {self.serial.path} format={a.format}"
                     + (f" link={a.link}" if a.link else ""))
        if a.modbus_rtu and not a.modbus_tcp:
            a.modbus_tcp = "127.0.0.1:0"
        if a.modbus_tcp:
            from firmware_bridge.sim.modbus_device import ModbusDevice

            host, _, port = a.modbus_tcp.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"--modbus-tcp: {a.modbus_tcp!r} is not HOST:PORT (e.g. 127.0.0.1:0)")
            self.modbus = ModbusDevice(
                self._modbus_values, self._coil, lambda: self.machine.stopped,
                host=host, port=int(port), map_path=a.map, update_hz=a.update_hz,
            )
            self.modbus.on_heartbeat, self.modbus.frozen = self._heartbeat, self.freeze.active
            rtu = self.modbus.start_rtu(a.rtu_baud) if a.modbus_rtu else None
            self.modbus.start()
            self.say(f"modbus-tcp: {host}:{self.modbus.port}")
            if rtu:
                self.say(f"modbus-rtu: {rtu} baud={a.rtu_baud}")

    def run(self) -> None:
        """The real-time loop: generate a block when it is due, send it, update RMS."""
        m, block = self.machine, self.args.block
        pacer = Pacer(m.rate, self.args.speedup, stop=self.quit)
        duration = parse_duration(self.args.duration, "--duration") if self.args.duration else None
        n, seq = 0, 0
        window = max(1, round(0.1 * m.rate / block))  # RMS over the last ~0.1 s
        while pacer.wait_for(n + block):
            self._enforce_heartbeat()
            with self.lock:
                x = m.generate(block)
                silent = m.sensor_silent
            if self.nan.active():
                x = np.full_like(x, np.nan)
            if self.serial is not None and not silent:
                self.serial.send_block(seq, int(n * 1e6 / m.rate), x)
            self._ms.append(np.mean(np.square(x, dtype=np.float64), axis=0))
            if len(self._ms) > window:
                self._ms.popleft()
            self.rms = np.sqrt(np.mean(self._ms, axis=0))
            n += block
            seq += 1
            if duration is not None and n / m.rate >= duration:
                break

    def close(self) -> None:
        for ep in (self.serial, self.modbus):
            if ep is not None:
                ep.close()
        link = getattr(self, "_link", None)
        if link:
            import os

            try:
                if os.path.islink(link):
                    os.unlink(link)
            except OSError:
                pass


def _stdin_loop(sim: Simulator) -> None:
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            reply = sim.command(line)
        except BridgeError as exc:
            reply = f"error {exc}"
        sim.say(reply)
        if sim.quit.is_set():
            return


def run(args: argparse.Namespace) -> int:
    """Run the simulator until quit, SIGTERM, SIGINT or ``--duration``; returns the exit status.
    A mistake in the arguments raises :class:`BridgeError` before anything is served."""
    if args.block < 1:
        raise ConfigError(f"--block: {args.block} must be >= 1")
    sim = Simulator(args)
    if args.record:
        if args.replay:
            raise ConfigError("--record records the simulated machine; it cannot record a --replay")
        rows = record(args.record, sim.machine, args.seconds, slow=tuple(sim.machine.slow_channels))
        print(f"recorded {rows} rows at {sim.machine.rate:g}/s to {args.record}")
        return 0
    if not (args.serial or args.modbus_tcp or args.modbus_rtu):
        raise ConfigError(
            "nothing to serve: give --serial, --modbus-tcp HOST:PORT and/or --modbus-rtu (or --record)"
        )
    try:
        sim.open_endpoints()
    except BaseException:
        sim.close()  # an endpoint opened before the failing one (and its --link) goes too
        raise

    def on_signal(signum, frame):
        sim.quit.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    sim.say("ready")
    threading.Thread(target=_stdin_loop, args=(sim,), name="sim-stdin", daemon=True).start()
    t = time.monotonic()
    try:
        sim.run()
    finally:
        sim.close()
        for s, h in old.items():
            signal.signal(s, h)
    sim.say(f"bye after {time.monotonic() - t:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m firmware_bridge.sim.cli``: the same command as ``sensorml simulate``."""
    p = argparse.ArgumentParser(prog="sensorml simulate")
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except BridgeError as exc:
        print(f"sensorml simulate: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

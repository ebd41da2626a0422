"""``sensorml``: the one command line of the project.

Every command is one :class:`~sensorml.cli.tree.Command` in :data:`COMMANDS`, mounted as
a real subparser by its wiring function; the sub-tools (``simulate``, ``train``, ``score``)
mount their own arguments and subcommands the same way, so ``sensorml simulate --serial``
and ``sensorml train fit --help`` are parsed by one tree (``training`` is the same tree as
``sensorml train``). Adding a command: write ``add_arguments(parser)`` that sets the
``fn`` default, and add one line to :data:`COMMANDS` (and a row to the README's table).

Library code raises specific exceptions; :func:`sensorml.cli.tree.run` turns a user's
mistake into one line on stderr and exit status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import sys

from sensorml.cli.tree import Command, finish, mount, resolve, run

__all__ = ["COMMANDS", "Command", "build_parser", "main"]

OPS, DEPLOY = "sensorml.cli.ops:", "sensorml.cli.deploy:"

#: every ``sensorml`` command, in the order ``sensorml --help`` lists them
COMMANDS: tuple[Command, ...] = (
    Command("gateway", OPS + "add_gateway", "Run the gateway beside the machine until SIGTERM."),
    Command("check-config", OPS + "add_check_config",
            "Check a gateway.toml and print the resolved config, or the first error."),
    Command("status", OPS + "add_status",
            "Show the running gateway's state, model, counters and trip."),
    Command("reset", OPS + "add_reset",
            "Clear a latched trip and send the reset action to the machine."),
    Command("label", OPS + "add_label", "Mark an alarm or trip event as a true fault or a false "
                                        "alarm (or --list recent ones with their ids)."),
    Command("learn", OPS + "add_learn",
            "Record the features of a healthy run (input for `sensorml train fit`)."),
    Command("sync", OPS + "add_sync", "Upload the buffer to the cloud store (exactly once), "
                                      "send the heartbeat, run the redeploy step; once, or "
                                      "every --every."),
    Command("keygen", DEPLOY + "add_keygen",
            "Make an Ed25519 key pair for signing model bundles and desired-state files."),
    Command("desired", DEPLOY + "add_desired",
            "Name the model version a fleet or a device should run: write a signed "
            "desired/<fleet-or-device>.json into the cloud store."),
    Command("redeploy", DEPLOY + "add_redeploy",
            "Run the redeploy step of `sensorml sync` alone: fetch the desired state, stage "
            "the model it names and hand it to the gateway to try in shadow."),
    Command("rollback", DEPLOY + "add_rollback",
            "Make the last good model (or a staged --to VERSION) live again; a running "
            "gateway swaps it in."),
    Command("train", "training.cli:add_arguments",
            "Offline training (the [train] extra): fit, evaluate, export, publish, verify, "
            "sign, compact.", needs="training.cli:missing_extra"),
    Command("score", "sensorml.offline.score:add_arguments",
            "Score a table or a gateway buffer offline as the gateway would."),
    Command("simulate", "firmware_bridge.sim.cli:add_arguments",
            "Run a simulated machine on a pty and/or a Modbus TCP port."),
    Command("examples", OPS + "add_examples",
            "Write the example gateway configs and register maps into DIR/configs and "
            "DIR/maps (they run as written against `sensorml simulate`)."),
    Command("demo", OPS + "add_demo", "The whole loop on this machine: simulator, learn, "
                                      "train, sign, gateway, fault, trip, report."),
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole tree; with *only*, every command is listed but only that one is wired
    (``main`` wires just the command it runs, so ``sensorml status`` imports neither the
    simulator nor training)."""
    p = argparse.ArgumentParser(
        prog="sensorml",
        description="Predictive-maintenance anomaly detection beside the machine: read "
                    "sensors, score every window with a compact model, trip locally on faults.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS:
        mount(sub, cmd, wire=only is None or cmd.name == only)
    return finish(p)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 2 a user's mistake)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    name = next((x for x in argv if not x.startswith("-")), "")
    cmd = next((c for c in COMMANDS if c.name == name), None)
    needs = None
    if cmd is not None and cmd.needs:
        needs = lambda: resolve(cmd.needs)(f"sensorml {cmd.name}")  # noqa: E731
    return run(build_parser(only=name), argv, needs)

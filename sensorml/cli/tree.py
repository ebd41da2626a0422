"""The machinery of the one command line: a command is mounted as a real subparser by its
wiring function, and :func:`run` turns what a command raises into one line and an exit
status, the same for ``sensorml`` and for ``training`` (which is ``sensorml train``).

A command's wiring function takes the command's own parser, adds its arguments (or its
subcommands) and sets the ``fn`` default to the function that runs it::

    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", required=True, help="gateway.toml")
        p.set_defaults(fn=run)

Wiring imports nothing heavy: what a command needs (onnxruntime, scikit-learn, ...) is
imported inside the function that runs it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from firmware_bridge.errors import BridgeError
from sensorml.errors import SensormlError

__all__ = ["Command", "mount", "walk", "run"]


@dataclass(frozen=True)
class Command:
    """One ``sensorml`` subcommand: its name, its one-line help, and where its wiring is.

    ``wire`` and ``needs`` are ``"module:function"`` names, imported only when the command
    is mounted, so ``sensorml status`` loads neither the simulator nor training.
    ``needs()`` returns the line to print when the command cannot run in this install
    (e.g. a missing extra), else None.
    """

    name: str
    wire: str
    help: str
    needs: str = ""


def resolve(ref: str) -> Callable:
    """``"package.module:function"`` → the function."""
    mod, _, fn = ref.partition(":")
    return getattr(importlib.import_module(mod), fn)


def mount(sub: argparse._SubParsersAction, cmd: Command, wire: bool = True
          ) -> argparse.ArgumentParser:
    """Add *cmd*'s parser to *sub*; with *wire*, its arguments too (else only its help)."""
    p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
    if wire:
        resolve(cmd.wire)(p)
    return p


def walk(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """*parser* and every parser below it, depth first."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases map to one parser
                yield from walk(child)


def finish(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Record each parser's ``prog`` as the ``cmd_prog`` default: errors name the command
    the user typed (``sensorml train fit``, ``training fit``)."""
    for p in walk(parser):
        p.set_defaults(cmd_prog=p.prog)
    return parser


def run(parser: argparse.ArgumentParser, argv: list[str],
        needs: Callable[[], str | None] | None = None) -> int:
    """Parse *argv* with *parser* and run the chosen command; returns the exit status.

    A user's mistake (:class:`SensormlError`, :class:`BridgeError`, :class:`OSError` such
    as a missing file) is one line ``<command>: error: <what>`` on stderr and status 2.
    *needs* is asked first, before ``--help`` or a usage error can need what is missing.
    Output into a closed pipe (``sensorml status | head -1``) ends quietly.
    """
    try:
        try:
            why = needs() if needs else None
            if why:
                print(why, file=sys.stderr)
                return 2
            try:
                a = parser.parse_args(argv)
            except SystemExit as e:  # --help, or a usage error argparse already printed
                return 0 if e.code is None else e.code if isinstance(e.code, int) else 2
            try:
                code = a.fn(a)
            except ModuleNotFoundError:  # an extra's module the command imported as it ran
                why = needs() if needs else None
                if not why:
                    raise
                print(why, file=sys.stderr)
                return 2
            except BrokenPipeError:
                raise
            except (SensormlError, BridgeError, OSError) as e:
                print(f"{a.cmd_prog}: error: {e}", file=sys.stderr)
                return 2
            except KeyboardInterrupt:
                return 130
        finally:
            sys.stdout.flush()  # inside the try: a closed reader is seen here, not at exit
        return code
    except BrokenPipeError:
        # The reader went away (| head). Python's advice: point stdout at devnull so the
        # interpreter's own flush at exit does not raise again, and exit with status 1.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1

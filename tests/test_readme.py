"""The README runs as written: its "Trying it by hand" shell block is read out of README.md
and executed line by line, exactly as printed, against the simulator; every other ``sh``
block is run too, or listed in :data:`NOT_RUN` with the reason.

How the hand block is read (so the test follows the block when it changes):

- the block runs with ``sensorml`` on PATH, as the sentence above it says (after
  ``pip install sensorml`` or ``. .venv/bin/activate`` in a checkout): the venv's bin
  directory (the one running this test) goes first on PATH; an activate line in the block
  does the same;
- a line commented ``# leave it running`` runs in the background (the simulator: until it
  says ``ready``);
- the ``sensorml gateway`` line runs in the background until it is running and its status
  answers;
- ``# type "..." into the simulator``: that text is written to the simulator's stdin, and
  the gateway must trip (its ``TRIP`` log line);
- ``cd DIR`` changes the folder the next lines run in; any other line runs in bash and
  must exit 0.

The lines run in a temporary folder holding a copy of ``data/`` (the example configs and
register maps), so what they write under ``build/`` stays out of the checkout. The
README's commands use machine-wide names (the simulator's pty link under /tmp, the
config's metrics port): a lock file keeps two runs of this test on one machine apart.
"""

from __future__ import annotations

import fcntl
import os
import queue
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sensorml.demo.procs import Proc

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
HAND = "Trying it by hand"

#: README shell lines this test does not run, and why
NOT_RUN = {
    "make demo": "creates .venv and pip-installs the pinned set from the network; the demo it "
                 "runs is tests/sensorml/demo/test_demo.py (sensorml demo --quick)",
    "make test": "the test suite this test is part of",
}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def sh_blocks(text: str) -> list[tuple[str, str]]:
    """``(section heading, block text)`` of every fenced ``sh`` block."""
    out, heading = [], ""
    for m in re.finditer(r"^## ([^\n]*)$|^```sh\n(.*?)^```$", text, re.M | re.S):
        if m.group(1) is not None:
            heading = m.group(1).strip()
        else:
            out.append((heading, m.group(2)))
    return out


def shell_lines(block: str) -> list[tuple[str, str]]:
    """``(command, comment)`` per logical line (continuations joined); a comment-only
    line has an empty command."""
    out, pending = [], ""
    for raw in block.splitlines():
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line, pending = pending + raw, ""
        if not line.strip():
            continue
        # a comment starts at a # outside quotes that begins a word
        cmd, comment = line, ""
        for m in re.finditer(r"(?:^|\s)#", line):
            head = line[:m.start()]
            if head.count('"') % 2 == 0 and head.count("'") % 2 == 0:
                cmd, comment = head, line[m.end():]
                break
        out.append((" ".join(cmd.split()), comment.strip()))
    return out


def is_command(cmd: str, *words: str) -> bool:
    return shlex.split(cmd)[:len(words)] == list(words)


class Session:
    """One terminal (or several) of a user following the README, in *work*."""

    def __init__(self, work: Path, procs: list[Proc]) -> None:
        self.work, self.cwd, self.procs = work, work, procs
        self.env = dict(os.environ)
        self.sim: Proc | None = None
        self.gateway: Proc | None = None
        self.tripped = False
        self.ran: list[tuple[str, subprocess.CompletedProcess]] = []
        self.activate()

    def activate(self) -> None:
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env['PATH']}"
        self.env["VIRTUAL_ENV"] = str(Path(sys.executable).parent.parent)

    def run(self, cmd: str, readme: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(["bash", "-c", cmd], cwd=self.cwd, env=self.env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, f"README line failed ({r.returncode}): {cmd}\n{r.stderr[-2000:]}"
        if readme:
            self.ran.append((cmd, r))
        return r

    def background(self, cmd: str, name: str) -> Proc:
        p = Proc(["bash", "-c", f"cd {shlex.quote(str(self.cwd))} && exec {cmd}"], name,
                 self.work / f"{name}.log", env=self.env)
        self.procs.append(p)
        return p

    def line(self, cmd: str, comment: str) -> None:
        if cmd in (". .venv/bin/activate", "source .venv/bin/activate"):
            self.activate()
        elif is_command(cmd, "cd"):
            self.cwd = (self.cwd / shlex.split(cmd)[1]).resolve()
        elif is_command(cmd, "sensorml", "gateway"):
            self.gateway = self.background(cmd, "gateway")
            self.gateway.expect(lambda s: "running" in s, 60, "start")
            config = shlex.split(cmd)[shlex.split(cmd).index("--config") + 1]
            self.run(f"sensorml status --config {shlex.quote(config)}", readme=False)
        elif "leave it running" in comment:
            simulator = is_command(cmd, "sensorml", "simulate")
            p = self.background(cmd, "simulator" if simulator else f"bg{len(self.procs)}")
            if simulator:
                self.sim = p
                p.expect(lambda s: s == "ready", 30, "say ready")
        elif cmd:
            self.run(cmd)
        if m := re.search(r'type "([^"]+)" into the simulator', comment):
            self.type_into_simulator(m.group(1))

    def type_into_simulator(self, text: str) -> None:
        assert self.sim is not None and self.gateway is not None, \
            "the README types into the simulator before the simulator and gateway run"
        early = []
        while True:  # nothing tripped before the fault was typed
            try:
                early.append(self.gateway.err.get_nowait())
            except queue.Empty:
                break
        assert not [s for s in early if "TRIP" in s], early
        self.sim.send(text)
        self.sim.expect(lambda s: s == f"ok {text}", 10, f"accept {text!r}")
        self.gateway.expect(lambda s: "TRIP cause=" in s, 90, "trip", stream="err")
        self.tripped = True


def test_the_hand_block_runs_as_written_and_trips_the_simulated_pump(tmp_path, procs):
    blocks = [b for h, b in sh_blocks(README) if h == HAND]
    assert len(blocks) == 1, f"README: one sh block under '## {HAND}'"
    lines = shell_lines(blocks[0])
    shutil.copytree(ROOT / "data", tmp_path / "data")
    with open("/tmp/sensorml-readme-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        s = Session(tmp_path, procs)
        for cmd, comment in lines:
            s.line(cmd, comment)
        assert s.tripped, "the README never injects the fault it says trips the machine"
        status = [(c, r) for c, r in s.ran if is_command(c, "sensorml", "status")]
        resets = [c for c, _ in s.ran if is_command(c, "sensorml", "reset")]
        assert status and resets, "the README shows the trip with status and clears it with reset"
        # the status the user runs after the trip says why the machine stopped
        after = status[-1][1].stdout
        m = re.search(r"^state\s+TRIPPED: (.*)$", after, re.M)
        assert m, after
        assert re.search(r'"cause": "(model|limit)"', m.group(1)), m.group(1)
        # ... and once reset, the gateway runs again
        assert [c for c, _ in s.ran].index(resets[-1]) > [c for c, _ in s.ran].index(status[-1][0])
        again = s.run(status[-1][0], readme=False).stdout
        assert re.search(r"^state\s+running$", again, re.M), again


@pytest.mark.parametrize("heading, block", [(h, b) for h, b in sh_blocks(README) if h != HAND],
                         ids=lambda x: x if len(x) < 40 else None)
def test_every_other_block_runs_or_says_why_not(heading, block, tmp_path):
    shutil.copytree(ROOT / "data", tmp_path / "data")
    s = Session(tmp_path, [])
    s.activate()
    for cmd, _ in shell_lines(block):
        if cmd and cmd not in NOT_RUN:
            s.run(cmd)


def test_the_reasons_not_to_run_name_lines_that_exist():
    lines = {cmd for _, b in sh_blocks(README) for cmd, _ in shell_lines(b)}
    assert set(NOT_RUN) <= lines, set(NOT_RUN) - lines


def test_the_line_reader():
    block = ('. .venv/bin/activate\nsensorml simulate --serial   # leave it running\n'
             '# in another terminal:\nsensorml train fit --features a.npz \\\n'
             '    --out b   # a comment\n# type "fault x 1.0 10s" into the simulator\n'
             'echo "#not a comment"\n')
    assert shell_lines(block) == [
        (". .venv/bin/activate", ""), ("sensorml simulate --serial", "leave it running"),
        ("", "in another terminal:"), ("sensorml train fit --features a.npz --out b", "a comment"),
        ("", 'type "fault x 1.0 10s" into the simulator'), ('echo "#not a comment"', "")]
    assert [h for h, _ in sh_blocks("## A\n```sh\nx\n```\n## B\n```toml\ny\n```\n")] == ["A"]

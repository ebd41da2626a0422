"""The wheel is the product: built from the source, installed in a fresh venv, it works
from a directory outside the checkout.

One venv (``python -m venv`` under tmp, its own pip), two phases:

1. ``pip install -c constraints.txt sensorml-*.whl`` (the gateway only):
   ``sensorml --help``, ``sensorml examples DIR``, ``sensorml keygen``, ``sensorml
   check-config`` on each example config, ``sensorml simulate --modbus-tcp 127.0.0.1:0
   --duration 1s`` (the simulator's register map is package data); scikit-learn is not
   installed, and ``sensorml demo`` says in one line that it needs the ``[train]`` extra;
2. ``pip install 'sensorml-*.whl[train]'`` into the same venv (``--no-compile``: the
   demo compiles what it imports, and the install takes half the time): ``sensorml demo
   --quick`` runs the whole loop and writes its report.

Every command runs in a folder under tmp with ``PYTHONPATH`` cleared, so nothing can be
imported from the checkout. The wheel is built (``pip wheel --no-deps``, setuptools in
pip's isolated build environment) from a copy of the source, so the checkout gets no
``build/`` or ``*.egg-info`` and no file left in ``build/lib`` by an earlier build can
slip into the wheel. Real network: only pip's registry (its cache is warm here) and the
simulator on 127.0.0.1. The install size and the phases' wall times are printed, not
asserted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

#: not the product: left out of the copy the wheel is built from
NOT_SOURCE = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
              ".pytest_cache", ".ruff_cache", ".hypothesis")
#: what a venv brings by itself, left out of the install size
VENV_OWN = ("pip", "setuptools", "pkg_resources", "_distutils_hack", "distutils-precedence.pth")


def child_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def run(venv: Path, *argv: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``venv/bin/argv[0] argv[1:]`` in ``cwd``, with the venv's environment."""
    return subprocess.run([str(venv / "bin" / str(argv[0])), *map(str, argv[1:])], cwd=cwd,
                          env=child_env(venv), capture_output=True, text=True, timeout=timeout)


def ok(r: subprocess.CompletedProcess) -> str:
    """The stdout of a command that must succeed; a failure shows what it printed."""
    assert r.returncode == 0, f"{r.args}: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    out = tmp / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                        "--disable-pip-version-check", "-w", str(out), str(src)],
                       env=child_env(Path(sys.prefix)), capture_output=True, text=True,
                       timeout=300, cwd=tmp)
    ok(r)
    (wheel,) = out.glob("sensorml-*.whl")
    return wheel


def disk_usage(path: Path) -> int:
    """Bytes on disk under ``path`` (what ``du`` counts)."""
    if path.is_file() or path.is_symlink():
        return path.lstat().st_blocks * 512
    return sum(p.lstat().st_blocks * 512 for p in path.rglob("*")) + path.lstat().st_blocks * 512


def install_size(site: Path) -> tuple[int, list[tuple[str, int]]]:
    """Bytes installed in ``site`` beyond the venv's own pip/setuptools, and the largest
    distributions (a package folder with its ``.libs`` and ``.dist-info``)."""
    per: dict[str, int] = {}
    for entry in site.iterdir():
        name = entry.name.split("-")[0].removesuffix(".libs").lower()
        if name in VENV_OWN or entry.name in VENV_OWN or name == "__pycache__":
            continue
        per[name] = per.get(name, 0) + disk_usage(entry)
    return sum(per.values()), sorted(per.items(), key=lambda kv: -kv[1])[:6]


def test_the_wheel_installs_and_runs_outside_the_checkout(tmp_path, capsys):
    times: dict[str, float] = {}
    t = time.monotonic()
    wheel = build_wheel(tmp_path)
    times["wheel build"] = time.monotonic() - t
    t = time.monotonic()
    venv = tmp_path / "venv"
    ok(subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True,
                      text=True, timeout=300, env=child_env(venv)))
    times["venv"] = time.monotonic() - t
    t = time.monotonic()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    pip = ("python", "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt")
    ok(run(venv, *pip, wheel, cwd=outside))
    times["gateway install"] = time.monotonic() - t

    # ---- phase 1: the gateway only
    t = time.monotonic()
    where = ok(run(venv, "python", "-c", "import sensorml, firmware_bridge, training; "
                   "print(sensorml.__file__, firmware_bridge.__file__, training.__file__)",
                   cwd=outside)).split()
    assert all(Path(p).is_relative_to(venv) for p in where), where  # the wheel, not the checkout
    assert "examples" in ok(run(venv, "sensorml", "--help", cwd=outside))

    written = ok(run(venv, "sensorml", "examples", "try", cwd=outside)).split()
    assert "try/configs/modbus_pump.toml" in written and "try/maps/sim_pump.toml" in written
    ok(run(venv, "sensorml", "keygen", "--dir", "try/keys", cwd=outside))
    for cfg in sorted((outside / "try" / "configs").glob("*.toml")):
        r = run(venv, "sensorml", "check-config", cfg.relative_to(outside), cwd=outside)
        ok(r)
        assert f"{cfg.relative_to(outside)}: ok (" in r.stderr, r.stderr

    r = run(venv, "sensorml", "simulate", "--modbus-tcp", "127.0.0.1:0", "--duration", "1s",
            cwd=outside, timeout=60)
    lines = ok(r).splitlines()
    assert lines[0].startswith("modbus-tcp: 127.0.0.1:") and "ready" in lines
    assert lines[-1].startswith("bye after"), lines

    r = run(venv, "python", "-c", "import sklearn", cwd=outside)
    assert r.returncode != 0 and "No module named 'sklearn'" in r.stderr
    r = run(venv, "sensorml", "demo", "--quick", "--workdir", "demo", cwd=outside)
    assert (r.returncode, r.stderr.count("\n")) == (2, 1) and "sensorml[train]" in r.stderr
    size, largest = install_size(venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
                                 / "site-packages")
    times["gateway commands"] = time.monotonic() - t

    # ---- phase 2: the [train] extra, the whole loop
    t = time.monotonic()
    ok(run(venv, *pip, "--no-compile", f"{wheel}[train]", cwd=outside))  # ~2x faster
    times["[train] install"] = time.monotonic() - t
    t = time.monotonic()
    out = ok(run(venv, "sensorml", "demo", "--quick", "--workdir", "demo", cwd=outside,
                 timeout=600))
    report = outside / "demo" / "report.html"
    assert str(report) in out and "done in" in out.splitlines()[-1]
    html = report.read_text()
    assert "<h2>Trips</h2>" in html and "sample-to-trip" in html  # the fault tripped the pump
    assert "cloud (device demo-pump)" in html  # v2 was trained from what the sync uploaded
    assert (outside / "demo" / "sim_pump.toml").is_file()  # the map it gave the gateway
    times["demo --quick"] = time.monotonic() - t
    shutil.rmtree(venv)  # ~600 MB; pytest keeps the last three runs' tmp folders

    with capsys.disabled():
        print(f"\n[wheel] {wheel.name} {wheel.stat().st_size / 1e3:.0f} kB; gateway-only "
              f"install {size / 2**20:.0f} MiB beyond pip/setuptools; largest: "
              + ", ".join(f"{n} {b / 2**20:.1f}" for n, b in largest))
        print("[wheel] " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
              + f"; total {sum(times.values()):.0f} s")

"""Configuration mistakes: seeded random mutations of a valid register map and of a valid
gateway config (a wrong type, an out-of-range value, an unknown key, a missing key), each
one's outcome asserted:

- refused: the package's ``ConfigError``, one line (no traceback) that starts with a key
  path naming the mutated key (or its table, or a sibling, when the message names the
  mutated key: ``limits[1].below: -8.0 is not below 'above' (...)``);
- accepted: only a value the key can hold (an integer where a number goes, a number of
  seconds where a duration goes, a missing key that has a default; never an unknown key),
  and the result loads the rest of the way (the read plan of a map; the resolved config
  ``sensorml check-config`` prints);
- anything else (another exception, a refusal naming another key, garbage accepted) is a
  failure, and the test lists every such mutation.

Then through ``sensorml check-config``: the same verdicts, exit status 2, no traceback.
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

SEED = 6
# a key path: name, name.name, name[3].name ... followed by ':'
KEY_PATH = re.compile(r"^[A-Za-z_][\w-]*(\[\d+\])?(\.[A-Za-z_][\w-]*(\[\d+\])?)*(?=: )")
DURATION = re.compile(r"^\d+(\.\d+)?(us|ms|s|m|h)$")
ABSENT = object()  # the value of a key that is not there


def _leaves(d, path=()):
    """(path, value) of every leaf of nested dicts/lists."""
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(d, list) and d and all(isinstance(x, dict) for x in d):
        for i, v in enumerate(d):
            yield from _leaves(v, path + (i,))
    else:
        yield path, d


def _tables(d, path=()):
    if isinstance(d, dict):
        yield path, d
        for k, v in d.items():
            yield from _tables(v, path + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _tables(v, path + (i,))


def _get(d, path):
    for k in path:
        d = d[k]
    return d


def key_path(path: tuple) -> str:
    """``("points", 1, "address")`` as the loaders write it: ``points[1].address``."""
    out = ""
    for k in path:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    return out


WRONG = ["text", 7, -3, 2.5, -1e12, 1e300, True, [1, 2], ["a"], {"x": 1}, "", 0,
         float("inf"), float("nan"), 70000, "0s", "-5s"]
OUT_OF_RANGE = (-1, -10**9, 10**9, 0, -0.5, 1e308)


@dataclass(frozen=True)
class Mutation:
    """One change to a valid config: ``kind`` (type, range, unknown, missing), the key it
    touched, the value before and after (:data:`ABSENT` where there is none)."""

    kind: str
    path: tuple
    old: object
    new: object

    def __str__(self) -> str:
        show = lambda v: "(absent)" if v is ABSENT else repr(v)  # noqa: E731
        return f"{self.kind} {key_path(self.path)}: {show(self.old)} -> {show(self.new)}"

    def may_be_accepted(self) -> bool:
        """Whether a correct loader may take it: a missing key may have a default; a new
        value must be one the key can hold, judged from the valid value it replaced."""
        if self.kind == "unknown":
            return False
        if self.kind == "missing":
            return True
        old, new = self.old, self.new
        if isinstance(new, bool) or isinstance(old, bool):
            return type(new) is type(old)
        if isinstance(old, int):
            return isinstance(new, int)
        if isinstance(old, float):
            return isinstance(new, int | float) and math.isfinite(new)
        if isinstance(old, str) and DURATION.match(old):  # seconds stand for a duration
            return isinstance(new, int | float) and math.isfinite(new) and new >= 0
        if isinstance(old, list) and isinstance(new, list):  # a list of the same kind of thing
            return {type(x) for x in new} <= {type(x) for x in old}
        return False


def mutate(base: dict, rng: random.Random) -> tuple[dict, Mutation]:
    """One random mutation of ``base``: the new dict and what was done."""
    d = copy.deepcopy(base)
    kind = rng.choice(("type", "type", "range", "unknown", "missing"))
    if kind == "unknown":
        path, table = rng.choice(list(_tables(d)))
        name = rng.choice(("bogus", "timeout_ms", "Rate", "adress"))
        old = table.get(name, ABSENT)
        table[name] = 1
        return d, Mutation("unknown" if old is ABSENT else "type", path + (name,), old, 1)
    path, old = rng.choice(list(_leaves(d)))
    parent = _get(d, path[:-1])
    if kind == "missing":
        del parent[path[-1]]
        return d, Mutation(kind, path, old, ABSENT)
    if kind == "range" and isinstance(old, int | float) and not isinstance(old, bool):
        new = rng.choice(OUT_OF_RANGE)
    else:  # a value of another type (a "range" change of a text is a type change)
        kind = "type"
        new = rng.choice([w for w in WRONG if type(w) is not type(old)])
    parent[path[-1]] = new
    return d, Mutation(kind, path, old, new)


def refusal_problem(msg: str, m: Mutation, prefix: str = "") -> str | None:
    """None if ``msg`` is a good refusal of ``m``; else what is wrong with it."""
    if "\n" in msg or "Traceback" in msg:
        return "more than one line"
    if not msg.startswith(prefix):
        return f"does not start with {prefix!r}"
    rest = msg[len(prefix):]
    named = KEY_PATH.match(rest)
    if not named:
        return "does not start with a key path"
    key, table, leaf = key_path(m.path), key_path(m.path[:-1]), str(m.path[-1])
    said = named.group()
    if said == key or said.startswith((key + "[", key + ".")) or key in rest:
        return None  # the key, one of its items, or another key said to clash with it
    if table in (said, re.sub(r"(\.[^.\[]+|\[\d+\])$", "", said)) and (
            key in rest or f"'{leaf}'" in rest):
        return None  # a rule between keys of one table, naming the mutated one
    return f"names {said!r}, not {key!r}"


def run_mutations(base: dict, rng: random.Random, n: int, load, error: type[Exception],
                  prefix: str = "") -> tuple[dict, list[str]]:
    """Apply ``n`` mutations to ``base`` and check each outcome: ``load(d)`` either raises
    ``error`` with a good refusal or, for a mutation that may be accepted, returns.
    Returns the outcome counts per kind and the list of failures (one line each)."""
    counts: dict[str, dict[str, int]] = {}
    failures = []
    for _ in range(n):
        d, m = mutate(base, rng)
        try:
            load(d)
            outcome = "accepted"
            problem = None if m.may_be_accepted() else "accepted"
        except error as e:
            outcome = "refused"
            problem = refusal_problem(str(e), m, prefix)
            if problem:
                problem = f"refused with {str(e)!r}: {problem}"
        except Exception as e:  # noqa: BLE001 - neither refused nor loaded: listed below
            outcome = "other"
            problem = f"raised {type(e).__name__}: {e}"
        by_kind = counts.setdefault(m.kind, {})
        by_kind[outcome] = by_kind.get(outcome, 0) + 1
        if problem:
            failures.append(f"{m}: {problem}")
    return counts, failures


def listing(failures: list[str]) -> str:
    """The failures, each distinct one once with how often it happened."""
    seen: dict[str, int] = {}
    for f in failures:
        seen[f] = seen.get(f, 0) + 1
    return f"{len(failures)} mutations neither refused nor loaded:\n" + "\n".join(
        f"{f}" + (f" (x{n})" if n > 1 else "") for f, n in seen.items())


def test_the_outcome_checks_catch_a_wrong_refusal_and_a_wrong_acceptance():
    m = Mutation("type", ("points", 1, "address"), 10, "text")
    assert refusal_problem("pump.toml: points[1].address: 'text' is not an integer", m,
                           "pump.toml: ") is None
    assert refusal_problem("pump.toml: points[2].address: 'text' is not an integer", m,
                           "pump.toml: ") == "names 'points[2].address', not 'points[1].address'"
    assert refusal_problem("points[1].address: bad\nTraceback (most recent call last):", m) \
        == "more than one line"
    assert refusal_problem("invalid value", m) == "does not start with a key path"
    between = Mutation("range", ("limits", 1, "above"), 8.0, -1e9)  # a rule between two keys
    assert refusal_problem("limits[1].below: -8.0 is not below 'above' (-1e9)", between) is None
    assert refusal_problem("limits[1].below: -8.0 is too low", between) is not None
    assert not m.may_be_accepted() and not Mutation("unknown", ("x",), ABSENT, 1).may_be_accepted()
    assert Mutation("type", ("watchdog", "timeout"), "500ms", 2.5).may_be_accepted()
    assert not Mutation("type", ("watchdog", "timeout"), "500ms", math.inf).may_be_accepted()
    assert not Mutation("type", ("source", "baud"), 921600, 2.5).may_be_accepted()
    assert Mutation("type", ("decision", "hysteresis"), 0.1, 0).may_be_accepted()


MAP = {"defaults": {"device_id": 1, "byte_order": "big", "word_order": "big"},
       "plan": {"max_gap": 4},
       "points": [
           {"name": "temperature_c", "table": "input", "address": 0, "type": "float32",
            "unit": "degC", "scale": 1.0, "offset": 0.0},
           {"name": "speed", "device_id": 2, "table": "holding", "address": 10,
            "type": "uint16", "byte_order": "little", "word_order": "little"},
           {"name": "stopped", "table": "coil", "address": 0, "type": "bool"}]}


def test_register_map_mutations_are_refused_naming_the_key_or_load(fault_report):
    from firmware_bridge.errors import ConfigError
    from firmware_bridge.modbus.plan import plan_reads
    from firmware_bridge.modbus.regmap import parse_map

    def load(d: dict) -> None:  # config -> check -> plan
        plan_reads(parse_map(d, source="pump.toml"))

    load(MAP)
    counts, failures = run_mutations(MAP, random.Random(SEED), 3000, load, ConfigError,
                                     "pump.toml: ")
    fault_report.add("bad_input_register_maps", mutations=3000, outcomes=counts,
                     failures=len(failures))
    assert failures == [], listing(failures)


def _toml(d: dict) -> str:
    """A small TOML writer for the configs here (tables, arrays of tables, scalars)."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float):
            return "nan" if v != v else ("inf" if v == math.inf else
                                         "-inf" if v == -math.inf else repr(v))
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {val(x)}" for k, x in v.items()) + "}"
        raise TypeError(v)

    def is_aot(v):
        return isinstance(v, list) and v and all(isinstance(x, dict) for x in v)

    out = [f"{k} = {val(v)}" for k, v in d.items() if not isinstance(v, dict) and not is_aot(v)]
    for k, v in d.items():
        if isinstance(v, dict):
            out.append(f"\n[{k}]")
            out += [f"{kk} = {val(vv)}" for kk, vv in v.items()]
        elif is_aot(v):
            for t in v:
                out.append(f"\n[[{k}]]")
                out += [f"{kk} = {val(vv)}" for kk, vv in t.items()]
    return "\n".join(out) + "\n"


def _valid_config(tmp_path: Path, pub: Path) -> dict:
    return {
        "device_id": "pump-7", "state_dir": str(tmp_path / "state"),
        "source": {"url": "serial:///dev/ttyUSB0?format=frames", "channels": ["ax", "ay", "az"],
                   "rate": 25600.0, "baud": 921600},
        "features": {"window": 1024, "hop": 512},
        "model": {"bundle": str(tmp_path / "bundle"), "trusted_keys": [str(pub)],
                  "allow_unsigned": False, "watch": "1s"},
        "decision": {"k": 3, "n": 5, "hysteresis": 0.1, "startup_inhibit": "5s"},
        "limits": [{"channel": "ax", "above": 8.0}, {"channel": "az", "above": 8.0,
                                                     "below": -8.0}],
        "watchdog": {"timeout": "500ms", "max_gap": 8, "on_silence": "trip",
                     "on_gap": "alarm", "on_model_failure": "alarm", "model_failures": 3},
        "trip": [{"kind": "modbus-coil", "url": "modbus-tcp://127.0.0.1:5020", "address": 0},
                 {"kind": "command", "argv": ["/bin/true"], "timeout": "2s"}],
        "buffer": {"max_mb": 64.0, "raw_sample_every": 600, "queue_size": 20000},
        "sync": {"store": "file:///tmp/lake", "every": "60s", "batch_rows": 5000,
                 "upload_raw": True},
        "metrics": {"host": "127.0.0.1", "port": 9108},
        "deploy": {"fleet": "default", "shadow_windows": 600, "max_alarm_rate": 0.01},
    }


def load_as_check_config(d: dict, base: Path) -> dict:
    """What ``sensorml check-config`` does with a config: check it, derive its feature
    spec, and print it resolved (JSON)."""
    from sensorml.config import parse_config

    cfg = parse_config(d, base, base / "gateway.toml")
    out = cfg.to_dict()
    out["feature_spec"] = cfg.feature_spec().to_dict()
    return json.loads(json.dumps(out, default=str))


def test_gateway_config_mutations_are_refused_naming_the_key_or_load(
        tmp_path, keys, fault_report):
    from sensorml.errors import ConfigError

    base = _valid_config(tmp_path, keys[1])
    load_as_check_config(copy.deepcopy(base), tmp_path)
    counts, failures = run_mutations(  # huge windows included: bounded by features.MAX_WINDOW
        base, random.Random(SEED), 3000, lambda d: load_as_check_config(d, tmp_path),
        ConfigError)
    fault_report.add("bad_input_gateway_config", mutations=3000, outcomes=counts,
                     failures=len(failures))
    assert failures == [], listing(failures)


HUGE_WINDOW = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from sensorml.errors import ConfigError
from sensorml.edge.features import FeatureSpec
try:
    FeatureSpec.from_dict({"channels": ["ax"], "sample_rate": 25600, "window": 10**9})
except ConfigError as e:
    print(e); sys.exit(0)
except MemoryError:
    print("MemoryError"); sys.exit(1)
print("accepted"); sys.exit(1)
"""


def test_a_huge_feature_window_is_a_config_error_not_an_allocation():
    r = subprocess.run([sys.executable, "-c", HUGE_WINDOW], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("features.window: "), r.stdout


def test_check_config_cli_gives_the_same_verdicts(tmp_path, keys, fault_report):
    """Mutated configs through ``sensorml check-config`` as files: a refusal is exit 2 and
    one line ``sensorml check-config: error: <file>: <key path>: ...`` naming the mutated
    key; an acceptance is exit 0 with the resolved config on stdout; either way the same
    verdict as the library's. Runs until 12 refusals were seen."""
    from sensorml.errors import ConfigError

    base = _valid_config(tmp_path, keys[1])
    rng = random.Random(SEED + 1)
    refused = accepted = 0
    failures = []
    for i in range(200):
        d, m = mutate(base, rng)
        if m.kind == "missing" and m.path[-1] not in ("device_id", "url", "channels", "kind"):
            continue  # most missing keys have defaults: keep the subprocesses for errors
        p = tmp_path / f"m{i}.toml"
        p.write_text(_toml(d))
        d = tomllib.loads(p.read_text())  # what the file really says
        try:
            load_as_check_config(d, tmp_path)
            library = "accepted"
        except ConfigError:
            library = "refused"
        r = subprocess.run([sys.executable, "-m", "sensorml.cli", "check-config", str(p)],
                           capture_output=True, text=True, timeout=30)
        if r.returncode == 0 and library == "accepted" and m.may_be_accepted():
            json.loads(r.stdout)
            accepted += 1
        elif r.returncode == 2 and library == "refused":
            problem = refusal_problem(r.stderr.strip(), m, f"sensorml check-config: error: {p}: ")
            if problem:
                failures.append(f"{m}: {r.stderr.strip()!r}: {problem}")
            refused += 1
        else:
            failures.append(f"{m}: exit {r.returncode}, library {library}: {r.stderr[-300:]!r}")
        if refused == 12:
            break
    assert failures == [], "\n".join(failures)
    assert refused == 12
    fault_report.add("bad_input_check_config_cli", refused=refused, accepted=accepted,
                     tracebacks=0)

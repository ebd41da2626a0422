"""`sensorml label`: operators' verdicts on alarms, from the command line into the buffer."""

from __future__ import annotations

from sensorml.buffer.db import Buffer
from sensorml.buffer.queries import BufferQueries
from sensorml.cli import main


def gateway(tmp_path):
    db = tmp_path / "buffer.db"
    with Buffer(db, device="gw1") as b:
        b.add_event("reload", {"model_version": "1"}, t=1.0e9)
        b.add_event("alarm", {"score": 4.25}, t=1.0e9 + 60)
        b.add_event("trip", {"reason": "score 9.1 >= trip 8"}, t=1.0e9 + 61)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'device_id = "gw1"\nstate_dir = "{tmp_path}"\n[source]\nurl = "sim://pump"\n'
                   f'[buffer]\npath = "{db}"\n')
    return str(cfg), db


def test_list_shows_alarms_and_trips_with_ids_and_labels(tmp_path, capsys):
    cfg, db = gateway(tmp_path)
    assert main(["label", "--config", cfg, "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["3", "2"]  # newest first; no info events
    assert "trip" in out[0] and "score 9.1 >= trip 8" in out[0] and "[unlabelled]" in out[0]
    assert main(["label", "--config", cfg, "--event", "3", "--verdict", "false_alarm",
                 "--note", "sensor cable loose", "--by", "bo"]) == 0
    assert "event 3 is false_alarm" in capsys.readouterr().out
    main(["label", "--config", cfg, "--list"])
    assert "[false_alarm by bo]" in capsys.readouterr().out.splitlines()[0]
    with BufferQueries.open(db, readonly=True) as q:
        (row,) = q.unsynced("labels")
    assert (row.event_id, row.verdict, row.note, row.author) == \
        (3, "false_alarm", "sensor cable loose", "bo")


def test_mistakes_are_one_line_errors(tmp_path, capsys):
    cfg, db = gateway(tmp_path)
    assert main(["label", "--config", cfg, "--event", "99", "--verdict", "true_fault"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "event 99 does not exist" in err
    assert main(["label", "--config", cfg, "--event", "2"]) == 2
    assert "give --verdict true_fault or --verdict false_alarm" in capsys.readouterr().err
    db.unlink()  # a wrong buffer.path: said, and no empty buffer made in its place
    assert main(["label", "--config", cfg, "--list"]) == 2
    assert "buffer.db: no buffer here" in capsys.readouterr().err
    assert main(["label", "--config", cfg, "--event", "3", "--verdict", "true_fault"]) == 2
    assert "buffer.db: no buffer here" in capsys.readouterr().err and not db.exists()

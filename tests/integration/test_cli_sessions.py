"""``ocpp-gateway sessions`` on a real history file written by ``SqliteHistoryStore``: the table,
the totals, the CSV, the filters, and the one-line errors (no file, unreadable, damaged, newer,
history off), without ever writing to the file or creating its folder."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import sqlite3
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.storage.history_db import FILE_NAME, SCHEMA_VERSION, SqliteHistoryStore
from gateway import cli_sessions
from gateway.cli import main
from gateway.closed_stdout import EXIT_CLOSED_STDOUT
from gateway.config import load_config
from gateway.domain.authorization import mask_id_tag
from gateway.domain.history import (
    DeliveryState,
    HistoryWrite,
    SessionDelivery,
    SessionNumbered,
    SessionStarted,
    SessionStopped,
)
from gateway.services.history_report import CSV_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 2, 28, 23, 30, tzinfo=UTC)  # 1 March, 00:30 in Berlin
TAG = "04A1B2C3D4E5F6"
TWIN = "FFFFFFFFD4E5F6"  # another card that ends in the same four characters


def site_rows() -> list[HistoryWrite]:
    """A finished, delivered session; one of another card; a stop whose start was missed; a
    running one; one in April."""
    return [
        SessionStarted("a", 1, "carport-left", TAG, T0, 1_000),
        SessionNumbered("a", 17),
        SessionStopped("a", 1, "carport-left", TAG, T0 + timedelta(hours=1, minutes=5), 8_400, "ev_disconnected", 7e3),
        SessionDelivery("a", DeliveryState.DELIVERED),
        SessionStarted("b", 2, "carport-right", TWIN, T0 + timedelta(days=2), 500),
        SessionStopped("b", 2, "carport-right", TWIN, T0 + timedelta(days=2, hours=3), 12_845, "local", 11e3),
        SessionStopped("c", 2, "carport-right", "FREE", T0 + timedelta(days=3, hours=3), 22_845, "power_loss", None),
        SessionDelivery("c", DeliveryState.PARKED),
        SessionStarted("d", 1, "carport-left", TAG, T0 + timedelta(days=5), 9_000),
        SessionStarted("e", 1, "carport-left", TAG, datetime(2026, 4, 1, 6, tzinfo=UTC), 20_000),
        SessionStopped("e", 1, "carport-left", TAG, datetime(2026, 4, 1, 8, tzinfo=UTC), 22_000, "remote", None),
    ]


def write_config(path: Path, state_dir: Path | str, history: str = "") -> Path:
    path.write_text(
        f"""
[site]
id = "history"
state_dir = "{state_dir}"
[upstream]
url = "ws://127.0.0.1:9/ocpp"
charge_point_id = "GW-HISTORY"
[mqtt]
host = "127.0.0.1"
[[chargers]]
name = "left"
profile = "abb-terra-ac"
host = "127.0.0.1"
connectors = [1]
{history}
"""
    )
    return path


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A config whose state holds the history of ``site_rows`` (closed, as after a clean stop)."""
    store = SqliteHistoryStore(tmp_path / "state" / "history")
    store.write(site_rows())
    store.close()
    return write_config(tmp_path / "site.toml", tmp_path / "state")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["sessions", *args])
    out, err = capsys.readouterr()
    return code, out, err


def line_of(out: str, start: str) -> list[str]:
    """The words of the one line that starts with ``start``."""
    lines = [line for line in out.splitlines() if line.startswith(start)]
    assert len(lines) == 1, (start, out)
    return lines[0].split()


def block(out: str, title: str) -> list[list[str]]:
    """The words of each line of the totals table under ``title`` (without its header)."""
    lines = out.splitlines()
    start = lines.index(title) + 2
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return [line.split() for line in lines[start:end]]


def test_the_table_lists_every_session_oldest_first_with_totals(site: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = run(capsys, "--config", str(site), "--tz", "Europe/Berlin")
    assert (code, err) == (0, "")
    assert out.startswith("all sessions; times in Europe/Berlin\n")
    assert line_of(out, "2026-03-01 00:30") == [
        *("2026-03-01", "00:30", "1", "carport-left", "****E5F6/1", "7.400", "1:05", "ev_disconnected", "delivered")
    ]
    assert line_of(out, "2026-03-03 00:30") == [
        *("2026-03-03", "00:30", "2", "carport-right", "****E5F6/2", "12.345", "3:00", "local", "queued")
    ]
    assert line_of(out, "?") == ["?", "2", "carport-right", "****", "?", "?", "power_loss", "parked"]
    running = ["2026-03-06", "00:30", "1", "carport-left", "****E5F6/1", "-", "-", "running"]
    assert line_of(out, "2026-03-06 00:30") == running
    assert line_of(out, "2026-04-01 08:00") == [
        *("2026-04-01", "08:00", "1", "carport-left", "****E5F6/1", "2.000", "2:00", "remote", "queued")
    ]
    table = out.splitlines()[1:7]
    assert [line[:16] for line in table[1:]] == [  # oldest first; the missed start placed by its stop
        "2026-03-01 00:30",
        "2026-03-03 00:30",
        "?               ",
        "2026-03-06 00:30",
        "2026-04-01 08:00",
    ]
    kwh_end = table[0].index("kWh") + 3
    assert {line[:kwh_end].split()[-1] for line in table[1:]} == {"7.400", "12.345", "?", "-", "2.000"}  # aligned
    assert block(out, "per connector") == [["1", "2", "9.400"], ["2", "1", "12.345"]]
    assert block(out, "per month") == [["2026-03", "2", "19.745"], ["2026-04", "1", "2.000"]]
    assert block(out, "per id tag and month") == [  # the two cards that end alike stay apart
        ["2026-03", "****E5F6/1", "1", "7.400"],
        ["2026-03", "****E5F6/2", "1", "12.345"],
        ["2026-04", "****E5F6/1", "1", "2.000"],
    ]
    assert "total: 3 sessions, 21.745 kWh" in out
    assert "1 session is still running (-): not in the totals, no meter stop yet" in out
    assert "1 session has an unknown meter start (?): not in the totals" in out
    assert TAG not in out and TWIN not in out


def test_the_table_fits_80_columns(site: Path, capsys: pytest.CaptureFixture) -> None:
    """With device names up to 12 characters and tags that mask apart (a longer name, or two
    tags masked alike, widen it by their extra characters)."""
    code, out, _ = run(capsys, "--config", str(site), "--connector", "1", "--tz", "UTC")
    assert code == 0
    assert "carport-left ****E5F6" in out
    assert max(len(line) for line in out.splitlines()[1:]) == 80


def test_control_characters_never_reach_the_terminal(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tag = "04A1B2C3D4\x1b[2J"  # the last four characters show: here an escape sequence that clears the screen
    store = SqliteHistoryStore(tmp_path / "state" / "history")
    store.write(
        [SessionStarted("a", 1, "left\rX", tag, T0, 0), SessionStopped("a", 1, "left", tag, T0, 9, "x\ny", None)]
    )
    store.close()
    code, out, _ = run(capsys, "--config", str(write_config(tmp_path / "s.toml", tmp_path / "state")), "--tz", "UTC")
    assert code == 0
    assert "\x1b" not in out and "\r" not in out
    row = ["2026-02-28", "23:30", "1", "left?X", "****?[2J", "0.009", "0:00", "x?y", "queued"]
    assert line_of(out, "2026-02-28 23:30") == row


def test_months_follow_the_zone_asked_for(site: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run(capsys, "--config", str(site), "--tz", "UTC")
    assert code == 0
    assert "times in UTC" in out.splitlines()[0]
    assert block(out, "per month") == [["2026-02", "1", "7.400"], ["2026-03", "1", "12.345"], ["2026-04", "1", "2.000"]]
    assert line_of(out, "2026-02-28 23:30")[:2] == ["2026-02-28", "23:30"]


def test_the_box_zone_is_the_default_and_the_command_runs_as_a_process(site: Path, tmp_path: Path) -> None:
    """A relative state_dir is found from the working directory, as the gateway finds it."""
    write_config(tmp_path / "relative.toml", "state")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TZ": "Europe/Berlin"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "sessions", "--config", "relative.toml", "--month", "2026-03"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines()[0] == "sessions of 2026-03; times in the box's local time (CET/CEST)"
    assert block(result.stdout, "per month") == [["2026-03", "2", "19.745"]]


def test_into_a_closed_pipe_it_ends_quietly(site: Path) -> None:
    """``ocpp-gateway sessions --csv | head -1``, once head has gone."""
    read, write = os.pipe()
    os.close(read)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        command = [sys.executable, "-m", "gateway.cli", "sessions", "--config", str(site), "--csv"]
        result = subprocess.run(command, stdout=write, stderr=subprocess.PIPE, text=True, timeout=60, env=env)
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (EXIT_CLOSED_STDOUT, "")


def test_csv_round_trip_has_the_store_fields_and_full_tags(site: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = run(capsys, "--config", str(site), "--csv")
    assert (code, err) == (0, "")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == [*CSV_COLUMNS[:4], "id_tag_full", *CSV_COLUMNS[4:]]
    assert [r["local_ref"] for r in rows] == ["a", "b", "c", "d", "e"]  # by time; "c" by its stop
    assert [r["id_tag_full"] for r in rows] == [TAG, TWIN, "FREE", TAG, TAG]
    assert [r["id_tag"] for r in rows] == [mask_id_tag(t) for t in (TAG, TWIN, "FREE", TAG, TAG)]
    first = rows[0]
    assert first["started_at"] == "2026-02-28T23:30:00.000Z"
    assert first["stopped_at"] == "2026-03-01T00:35:00.000Z"
    assert (first["meter_start_wh"], first["meter_stop_wh"], first["energy_wh"]) == ("1000", "8400", "7400")
    assert (first["csms_transaction_id"], first["delivery"], first["stop_reason"]) == (
        "17",
        "delivered",
        "ev_disconnected",
    )
    assert float(first["duration_s"]) == 3_900.0
    running = rows[3]
    assert (running["stopped_at"], running["energy_wh"], running["delivery"]) == ("", "", "")
    store = SqliteHistoryStore.open_read_only(site.parent / "state" / "history")
    try:
        stored = {s.local_ref: s for s in store.sessions()}
    finally:
        store.close()
    for row in rows:
        record = stored[row["local_ref"]]
        assert row["meter_stop_wh"] == ("" if record.meter_stop_wh is None else str(record.meter_stop_wh))
        assert row["device"] == record.device and int(row["connector_id"]) == record.connector_id


@pytest.mark.parametrize(
    ("args", "refs"),
    [
        (["--month", "2026-04"], ["e"]),
        (["--since", "2026-03-03", "--until", "2026-03-03"], ["b"]),  # a DATE to --until includes that day
        (["--since", "2026-03-03", "--until", "2026-03-04"], ["b", "c"]),  # "c" by its stop, 03:30 on the 4th
        (["--since", "2026-03-01T00:30"], ["a", "b", "c", "d", "e"]),  # a time without zone is in --tz
        (["--since", "2026-03-01T00:31"], ["b", "c", "d", "e"]),
        (["--until", "2026-03-01T00:30+01:00"], []),  # exclusive, with its own zone
        (["--connector", "2"], ["b", "c"]),
        (["--id-tag", TAG], ["a", "d", "e"]),  # the full tag: its twin that masks alike is not in
        (["--id-tag", TAG.lower(), "--month", "2026-03"], ["a", "d"]),  # tags compare as OCPP does
        (["--id-tag", "D4E5F6"], []),
        (["--connector", "99999"], []),
    ],
)
def test_filters(site: Path, capsys: pytest.CaptureFixture, args: list[str], refs: list[str]) -> None:
    code, out, _ = run(capsys, "--config", str(site), "--tz", "Europe/Berlin", "--csv", *args)
    assert code == 0
    assert [row["local_ref"] for row in csv.DictReader(io.StringIO(out))] == refs


def test_more_sessions_than_one_read_holds_says_so(
    site: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The newest ``MAX_ROWS`` are read (100,000: more than a year of a busy site); 3 here."""
    monkeypatch.setattr(cli_sessions, "MAX_ROWS", 3)
    code, out, err = run(capsys, "--config", str(site), "--csv")
    assert code == 0
    assert [row["local_ref"] for row in csv.DictReader(io.StringIO(out))] == ["b", "d", "e"]  # by start: "c" has none
    assert err == "sessions: only the newest 3 sessions were read: older ones are not in this\n"


def test_an_empty_selection_says_so(site: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run(capsys, "--config", str(site), "--month", "2025-01", "--id-tag", TAG, "--tz", "UTC")
    assert code == 0
    assert out == "sessions of 2025-01 of id tag ****E5F6; times in UTC\nno sessions\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--month", "2026-13"], "expected a month as YYYY-MM (2026-03), got '2026-13'"),
        (["--month", "2026-03", "--since", "2026-03-02"], "--month is a shortcut for --since and --until"),
        (["--since", "yesterday"], "expected a date (2026-03-01) or an ISO time"),
        (["--connector", "-1"], "a connector is a number 0..999999"),
        (["--connector", "9" * 40], "a connector is a number 0..999999"),
        (["--tz", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
        (["--tz", "../../etc/passwd"], "unknown time zone"),
    ],
)
def test_a_bad_option_is_a_usage_error(
    site: Path, capsys: pytest.CaptureFixture, args: list[str], expected: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["sessions", "--config", str(site), *args])
    assert exit_.value.code == 2
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--since", "2026-03-05", "--until", "2026-03-01"], "sessions: --since must be before --until"),
        (["--until", "9999-12-31"], "sessions: --since/--until: a time out of range"),
        (["--since", "0001-01-01", "--tz", "Asia/Tokyo"], "sessions: --since/--until: a time out of range"),
        (["--month", "9999-12"], "sessions: --since/--until: a time out of range"),
    ],
)
def test_a_period_that_cannot_be_is_one_line(
    site: Path, capsys: pytest.CaptureFixture, args: list[str], expected: str
) -> None:
    code, out, err = run(capsys, "--config", str(site), *args)
    assert (code, out, err) == (2, "", expected + "\n")


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file in ``folder``: its mtime (ns) and the hash of its bytes (a folder: its listing)."""
    return {
        p.name: (
            p.stat().st_mtime_ns,
            str(sorted(p.iterdir())) if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(folder.iterdir())
    }


def test_reading_writes_nothing_and_creates_nothing(site: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    history = tmp_path / "state" / "history"
    before = snapshot(history)
    assert list(before) == [FILE_NAME]
    for args in ([], ["--csv"], ["--month", "2026-03"]):
        assert run(capsys, "--config", str(site), *args)[0] == 0
    assert snapshot(history) == before  # no -wal or -shm left behind, not a byte changed


def test_reads_beside_a_running_gateway(site: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The writer holds the file open (WAL): rows it committed are seen, and it goes on writing."""
    writer = SqliteHistoryStore(tmp_path / "state" / "history")
    try:
        writer.write([SessionStarted("f", 3, "garage", "GARAGE-CARD-0001", datetime(2026, 4, 2, tzinfo=UTC), 0)])
        code, out, _ = run(capsys, "--config", str(site), "--csv", "--connector", "3")
        assert code == 0
        assert [row["id_tag_full"] for row in csv.DictReader(io.StringIO(out))] == ["GARAGE-CARD-0001"]
        writer.write(
            [
                SessionStopped(
                    "f", 3, "garage", "GARAGE-CARD-0001", datetime(2026, 4, 2, 1, tzinfo=UTC), 5, "local", None
                )
            ]
        )
        code, out, _ = run(capsys, "--config", str(site), "--connector", "3", "--tz", "UTC")
        assert "total: 1 session, 0.005 kWh" in out
    finally:
        writer.close()


def one_line_error(capsys: pytest.CaptureFixture[str], config: Path) -> str:
    code, out, err = run(capsys, "--config", str(config))
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("sessions: "), err
    return err.strip()


def test_no_history_yet_creates_no_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = write_config(tmp_path / "site.toml", tmp_path / "state")
    path = tmp_path / "state" / "history" / FILE_NAME
    assert one_line_error(capsys, config) == (
        f"sessions: no history yet at {path}: the gateway keeps one while it runs with [history] enabled"
    )
    assert not (tmp_path / "state").exists()


def test_a_relative_state_dir_is_named_in_the_error(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "site.toml", "elsewhere")
    assert "([site] state_dir 'elsewhere' is relative to where it runs)" in one_line_error(capsys, config)


def test_history_disabled_is_one_line(site: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = write_config(tmp_path / "off.toml", tmp_path / "state", "[history]\nenabled = false")
    assert (
        one_line_error(capsys, config)
        == f"sessions: [history] enabled = false in {config}: the gateway keeps no history"
    )


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: p.write_bytes(b"this is not a database at all, just text" * 100), "not an SQLite database"),
        (lambda p: p.write_bytes(b""), "not an SQLite database"),
        (lambda p: _set_version(p, SCHEMA_VERSION + 1), f"written by a newer version (schema {SCHEMA_VERSION + 1}"),
        (lambda p: _set_version(p, 0), "not a history file (no schema)"),
        (lambda p: _wreck_pages(p), "malformed"),
        (lambda p: (p.unlink(), p.mkdir()), "a folder stands where the history file belongs"),
    ],
    ids=["text", "empty", "newer", "no-schema", "damaged-pages", "folder"],
)
def test_a_file_it_cannot_read_is_one_line_and_left_as_it_is(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture, damage, reason: str
) -> None:
    path = tmp_path / "state" / "history" / FILE_NAME
    damage(path)
    before = snapshot(path.parent)
    error = one_line_error(capsys, site)
    assert error.startswith(f"sessions: cannot read {path}: ")
    assert reason in error
    assert snapshot(path.parent) == before  # never set aside, never repaired


@pytest.mark.parametrize(
    ("column", "value", "reason", "csv_too"),
    [
        ("started_at", "yesterday", "Invalid isoformat string: 'yesterday'", True),
        ("stopped_at", "2026-13-45", "month must be in 1..12", True),
        ("delivery", "lost", "'lost' is not a valid DeliveryState", True),
        ("energy_wh", "lots", "a row it cannot show", False),  # the CSV carries what is stored
        ("energy_wh", 1.5, "a row it cannot show", False),
    ],
)
def test_a_row_the_gateway_never_wrote_is_one_line(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture, column: str, value: object, reason: str, csv_too: bool
) -> None:
    path = tmp_path / "state" / "history" / FILE_NAME
    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE sessions SET {column} = ? WHERE local_ref = 'a'", (value,))
    db.close()
    for args in ([], ["--csv"]) if csv_too else ([],):
        code, out, err = run(capsys, "--config", str(site), *args)
        assert (code, out) == (2, "")
        assert err.startswith(f"sessions: cannot read {path}: a row it cannot show (") and err.count("\n") == 1, err
        assert reason in err
    if not csv_too:
        code, out, _ = run(capsys, "--config", str(site), "--csv")
        assert code == 0
        assert next(csv.DictReader(io.StringIO(out)))["energy_wh"] == str(value)


def _set_version(path: Path, version: int) -> None:
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={version}")
    db.commit()
    db.close()


def _wreck_pages(path: Path) -> None:
    """Many sessions, then garbage over every page but the first (the header stays valid)."""
    store = SqliteHistoryStore(path.parent)
    store.write([SessionStarted(f"x{n}", 1, "left", TAG, T0, n) for n in range(2_000)])
    store.close()
    data = bytearray(path.read_bytes())
    data[4096:] = b"\xa5" * (len(data) - 4096)
    path.write_bytes(bytes(data))


def test_an_unreadable_file_says_whose_it_is(site: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Not the gateway's user: chmod 000, or for root (who reads anything) the unprivileged
    ``nobody`` in a forked child, against the state as the gateway keeps it (0700 folder)."""
    path = tmp_path / "state" / "history" / FILE_NAME
    if os.geteuid() != 0:
        path.chmod(0)
        try:
            error = one_line_error(capsys, site)
        finally:
            path.chmod(0o600)
    else:
        error = _as_nobody(site)
    assert error == f"sessions: cannot read {path}: permission denied; run as the gateway's user or root"


def _as_nobody(site: Path) -> str:
    """``main(["sessions", ...])`` in a forked child that dropped to uid/gid 65534; its stderr."""
    with tempfile.TemporaryDirectory() as public:  # the config where nobody can read it
        Path(public).chmod(0o755)
        config = Path(public) / "site.toml"
        config.write_text(site.read_text())
        config.chmod(0o644)
        load_config(config)  # every import the child needs, done while /root's Python is readable
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - the child
            os.close(read)
            code = 99
            try:
                os.setgid(65534)
                os.setuid(65534)
                sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
                code = main(["sessions", "--config", str(config)])
                os.write(write, f"{code}\n{sys.stdout.getvalue()}{sys.stderr.getvalue()}".encode())
            finally:
                os._exit(code)
        os.close(write)
        with os.fdopen(read) as answer:
            code_line, *rest = answer.read().splitlines()
        assert os.waitpid(child, 0)[1] >> 8 == 2
        assert code_line == "2" and len(rest) == 1, rest
        return rest[0]


def test_the_example_in_the_docs_is_what_it_prints(site: Path, capsys: pytest.CaptureFixture) -> None:
    """docs/history.md shows this very site's report: it must not drift from what the command says."""
    docs = (ROOT / "docs" / "history.md").read_text()
    command = "$ ocpp-gateway sessions --config /etc/ocpp-gateway/config.toml --tz Europe/Berlin\n"
    example = docs[docs.index(command) + len(command) :].split("```", 1)[0]
    code, out, _ = run(capsys, "--config", str(site), "--tz", "Europe/Berlin")
    assert code == 0
    assert out == example

"""``[history]``: on by default with 400 days, strict like every section, and off means no history."""

from __future__ import annotations

from pathlib import Path

from gateway.app import build_history, build_site
from gateway.config import parse_config
from tests.unit.test_config import base, problems


def with_history(tmp_path: Path, **section: object) -> dict:
    data = base()
    data["site"]["state_dir"] = str(tmp_path / "state")
    if section:
        data["history"] = section
    return data


def test_on_by_default_keeping_sessions_and_events_400_days(tmp_path: Path) -> None:
    config = parse_config(with_history(tmp_path))
    assert (config.history.enabled, config.history.retention_days) == (True, 400)
    history = build_history(config, build_site(config))
    assert history is not None
    assert (history.retention.sessions_days, history.retention.events_days, history.retention.series_days) == (
        400,
        400,
        7,
    )
    assert (tmp_path / "state" / "history" / "history.sqlite3").exists()
    history.store.close()


def test_retention_days_is_configurable(tmp_path: Path) -> None:
    config = parse_config(with_history(tmp_path, retention_days=30))
    history = build_history(config, build_site(config))
    assert history is not None and history.retention.sessions_days == history.retention.events_days == 30
    history.store.close()


def test_off_keeps_nothing_and_writes_nothing(tmp_path: Path) -> None:
    config = parse_config(with_history(tmp_path, enabled=False))
    assert build_history(config, build_site(config)) is None
    assert not (tmp_path / "state" / "history").exists()


def test_bad_values_and_unknown_keys_name_the_key(tmp_path: Path) -> None:
    assert [path for path, _ in problems(with_history(tmp_path, retention_days=0))] == ["history.retention_days"]
    assert [path for path, _ in problems(with_history(tmp_path, keep_days=10))] == ["history.keep_days"]

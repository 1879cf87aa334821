"""Reading the config file: what an editor saved, not what the TOML says (issue 15)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.domain.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SITE = '[site]\nid = "cafe"\nname = "Café Nord"\n[upstream]\nurl = "ws://csms.example/ocpp"\ncharge_point_id = "GW1"\n'


def problems_of(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def test_latin1_names_the_line_and_column_of_the_first_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_bytes(SITE.encode("latin-1"))  # an editor set to Latin-1: 'é' is the one byte 0xe9
    [(key, reason)] = problems_of(path)
    assert key == str(path)
    assert reason.startswith("not UTF-8 text: byte 0xe9 at line 3, column 12;")
    assert "save the file as UTF-8" in reason


def test_the_column_counts_characters_not_bytes(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_bytes('[site]\nname = "Zürich '.encode() + b"\xe9")  # a valid two-byte ü, then a stray byte
    [(_, reason)] = problems_of(path)
    assert "byte 0xe9 at line 2, column 16;" in reason


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    """Windows Notepad saves UTF-8 with a BOM; tomllib would call it an "Invalid statement"."""
    path = tmp_path / "site.toml"
    path.write_bytes(b"\xef\xbb\xbf" + SITE.encode())
    config = load_config(path)
    assert config.site.name == "Café Nord"


def test_utf16_says_so(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(SITE, encoding="utf-16")  # with its BOM, as Notepad's "Unicode" writes it
    [(key, reason)] = problems_of(path)
    assert key == str(path)
    assert reason.startswith("the file is saved as UTF-16; save it as UTF-8")


def test_a_directory_is_not_a_config(tmp_path: Path) -> None:
    [(key, reason)] = problems_of(tmp_path)
    assert key == str(tmp_path) and reason.startswith("cannot read the file:")


def test_the_demo_site_installed_with_the_package_is_the_shipped_config_toml() -> None:
    """``ocpp-gateway demo`` without a checkout simulates gateway/demo_site.toml: it must not drift
    from config.toml, which the README shows and the checkout's demo reads."""
    shipped, packaged = ROOT / "config.toml", ROOT / "gateway" / "demo_site.toml"
    assert packaged.read_bytes() == shipped.read_bytes(), "copy config.toml to gateway/demo_site.toml"


@pytest.mark.parametrize(
    ("text", "reason"),
    [("a = " + "[" * 50_000, "nested too deep"), ("[status_page]\nport = " + "9" * 5000, "not valid TOML")],
)
def test_toml_the_parser_cannot_take_is_a_config_error_not_a_traceback(tmp_path: Path, text: str, reason: str) -> None:
    """Found in review: tomllib raises RecursionError and ValueError besides TOMLDecodeError."""
    path = tmp_path / "site.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert reason in str(caught.value)

"""Device profiles: one TOML file per device family says which registers hold what.

A profile is data, not code (as evcc's templates are): adding a device means adding a file to
``adapters/profiles/``. The engine (``device.py``) and the simulator (``simulator.py``) are both
built from the same file, so every profile can be tested without the hardware.

Loading validates everything an installer can get wrong and reports *all* problems at once as
``ConfigError([(key path, reason), ...])``, the key path naming the file and the TOML key, e.g.
``phoenix-ev-eth.toml: values.voltage_v.type``. The format is documented in ``docs/profiles.md``;
its models are in ``profile_schema.py`` and the cross-key rules in ``profile_checks.py``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import ValidationError

from adapters.modbus.profile_checks import Checker, pydantic_problems
from adapters.modbus.profile_schema import (
    ANY_CODE,
    BIT_TABLES,
    NO_FAULT,
    READ_ONLY_TABLES,
    ROLES,
    TABLE_NAMES,
    Condition,
    CurrentLimitWrite,
    EnableWrite,
    FaultSpec,
    IdentifyMatch,
    IdentifySpec,
    ModbusSettings,
    Profile,
    RegisterSpec,
    Role,
    ScaleFactorSpec,
    Scope,
    SerialSettings,
    SimulatorSettings,
    Table,
    ValueSpec,
    WatchdogSpec,
    WordOrder,
    WriteTarget,
)
from gateway.domain.errors import ConfigError

__all__ = [
    "ANY_CODE",
    "BIT_TABLES",
    "NO_FAULT",
    "PROFILE_DIR",
    "READ_ONLY_TABLES",
    "ROLES",
    "TABLE_NAMES",
    "Condition",
    "CurrentLimitWrite",
    "EnableWrite",
    "FaultSpec",
    "IdentifyMatch",
    "IdentifySpec",
    "ModbusSettings",
    "Profile",
    "RegisterSpec",
    "Role",
    "ScaleFactorSpec",
    "Scope",
    "SerialSettings",
    "SimulatorSettings",
    "Table",
    "ValueSpec",
    "WatchdogSpec",
    "WordOrder",
    "WriteTarget",
    "code_key",
    "load_profile",
    "profile_names",
]

PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"


def profile_names() -> list[str]:
    """The profiles shipped in ``adapters/profiles``, by name (file stem), sorted."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name: str | Path) -> Profile:
    """Load and validate a profile by name (file stem in ``adapters/profiles``) or by path to a .toml file.

    Raises ``ConfigError`` listing every problem with its key path.
    """
    text = str(name)
    path = Path(text) if isinstance(name, Path) or text.endswith(".toml") or "/" in text else None
    if path is None:
        path = PROFILE_DIR / f"{text}.toml"
        if not path.is_file():
            known = ", ".join(profile_names()) or "none"
            raise ConfigError([(text, f"no profile named '{text}' (available: {known})")])
    file = path.name
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([(file, f"cannot read the profile: {exc.strerror or exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([(file, f"not valid TOML: {exc}")]) from None
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([(f"{file}: {path_}", reason) for path_, reason in pydantic_problems(exc)]) from None
    problems: list[tuple[str, str]] = []
    Checker(profile, path.stem, lambda key, reason: problems.append((f"{file}: {key}", reason))).run()
    if problems:
        raise ConfigError(problems)
    profile._path = path
    return profile


def code_key(raw: object) -> str:
    """The ``map`` / ``codes`` key a raw value is looked up under (integers in decimal)."""
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    return str(raw)

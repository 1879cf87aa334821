"""Profile loading and validation, read planning and role decoding, without sockets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from adapters.modbus import profile_schema as schema
from adapters.modbus.layout import DeviceMap, Location, ReadBlock, RegisterImage, plan_reads
from adapters.modbus.profile import PROFILE_DIR, ROLES, load_profile, profile_names
from gateway.domain.errors import ConfigError
from gateway.domain.model import Fault, FaultKind, VehicleState

METER = """
id = "{id}"
kind = "meter"
vendor = "Test"
model = "Meter"
source = "tests"
[values.power_w]
table = "input"
address = 0
type = "f32"
"""


def write_profile(tmp_path: Path, text: str, name: str = "test-device") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text.replace("{id}", name), encoding="utf-8")
    return path


def problems(path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    return dict(info.value.problems)


@pytest.mark.parametrize("name", profile_names())
def test_every_shipped_profile_loads(name: str) -> None:
    profile = load_profile(name)
    assert profile.id == name
    assert profile.path == PROFILE_DIR / f"{name}.toml"
    assert set(profile.values) <= set(ROLES)
    assert profile.source and profile.vendor and profile.model
    if profile.kind == "charger":
        assert "vehicle_state" in profile.values
    assert DeviceMap(profile).read_blocks()


def test_the_four_first_profiles_are_shipped() -> None:
    assert {"eastron-sdm630", "abb-terra-ac", "phoenix-ev-eth", "bender-cc613"} <= set(profile_names())


def test_a_session_counter_is_never_lifetime_energy() -> None:
    abb = load_profile("abb-terra-ac")
    assert "session_energy_wh" in abb.values
    assert "energy_wh" not in abb.values


def test_load_by_path(tmp_path: Path) -> None:
    assert load_profile(write_profile(tmp_path, METER)).kind == "meter"
    assert load_profile(str(write_profile(tmp_path, METER))).id == "test-device"


def test_unknown_profile_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        load_profile("abb-terra-ac2")
    ((key, reason),) = info.value.problems
    assert key == "abb-terra-ac2"
    assert "no profile named 'abb-terra-ac2'" in reason and "abb-terra-ac" in reason


def test_unknown_key_names_its_path(tmp_path: Path) -> None:
    path = write_profile(tmp_path, METER.replace('table = "input"', 'table = "input"\ntabel = "input"'))
    assert problems(path) == {
        "test-device.toml: values.power_w.tabel": "unknown key (see docs/profiles.md for the keys a profile may use)"
    }


def test_wrong_type_name_says_what_is_expected(tmp_path: Path) -> None:
    reason = problems(write_profile(tmp_path, METER.replace('"f32"', '"u33"')))["test-device.toml: values.power_w.type"]
    assert reason.startswith("unknown type 'u33' (expected one of u16, i16, u32")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = METER.replace('"f32"', '"u33"') + '[values.power_kw]\ntable = "holding"\naddress = 1\ntype = "u16"\n'
    found = problems(write_profile(tmp_path, text))
    assert set(found) == {"test-device.toml: values.power_w.type", "test-device.toml: values.power_kw"}
    assert found["test-device.toml: values.power_kw"].startswith("unknown role 'power_kw' (expected one of energy_wh")


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        (('table = "input"', 'table = "inputs"'), "values.power_w.table", "unknown value 'inputs' (expected"),
        (('kind = "meter"', 'kind = "inverter"'), "kind", "unknown value 'inverter'"),
        (("address = 0", "address = 70000"), "values.power_w.address", "less than or equal to 65535"),
        (("address = 0", ""), "values.power_w.address", "required key is missing"),
        (('type = "f32"', 'type = "string"'), "values.power_w.length", "required for strings"),
        (('type = "f32"', 'type = "u32"\nbyte = "low"'), "values.power_w.byte", "half of a 16-bit register"),
        (('type = "f32"', 'type = "u16"\nascii = true'), "values.power_w.ascii", "one byte"),
        (('type = "f32"', 'type = "f32"\nscale = 0'), "values.power_w.scale", "must not be 0"),
        (('type = "f32"', ""), "values.power_w.type", "required for input and holding registers"),
        (('table = "input"', 'table = "coil"'), "values.power_w.type", "type must be 'bool'"),
        (('type = "f32"', 'type = "f32"\nphases = 3'), "values.power_w.phases", "one value, not one per phase"),
        (('id = "test-device"', 'id = "other"'), "id", "must equal the file name without .toml ('test-device')"),
    ],
)
def test_invalid_entries_name_key_and_reason(tmp_path: Path, change: tuple[str, str], key: str, reason: str) -> None:
    text = METER.replace("{id}", "test-device").replace(*change)
    found = problems(write_profile(tmp_path, text))
    assert reason in found[f"test-device.toml: {key}"]


CHARGER = """
id = "{id}"
kind = "charger"
vendor = "Test"
model = "Charger"
source = "tests"
[modbus]
word_order = "little"
[values.vehicle_state]
table = "holding"
address = 10
type = "u16"
map = { "0x1" = "A", "2" = "B", "3" = "C" }
[faults.error]
table = "holding"
address = 11
type = "u16"
codes = { "0" = "none", "9" = "over_current" }
[faults.flags]
table = "holding"
address = 12
type = "u32"
bits = { "0" = "over_temperature", "17" = "ground_fault" }
"""


def test_charger_rules(tmp_path: Path) -> None:
    found = problems(write_profile(tmp_path, CHARGER.replace("[values.vehicle_state]", "[values.vehicle_statex]")))
    assert "test-device.toml: values.vehicle_state" in found
    found = problems(write_profile(tmp_path, CHARGER.replace('"2" = "B"', '"2" = "G"')))
    assert "unknown value 'G'" in found["test-device.toml: values.vehicle_state.map.2"]
    found = problems(write_profile(tmp_path, CHARGER.replace('"over_current"', '"overload"')))
    assert "unknown fault kind 'overload'" in found["test-device.toml: faults.error.codes.9"]
    found = problems(write_profile(tmp_path, CHARGER.replace('"17" = ', '"40" = ')))
    assert "bit numbers are 0..31" in found["test-device.toml: faults.flags.bits.40"]
    found = problems(write_profile(tmp_path, CHARGER.replace("bits = {", 'codes = { "0" = "none" }\nbits = {')))
    assert "exactly one of codes" in found["test-device.toml: faults.flags"]


def test_meter_cannot_carry_charger_values(tmp_path: Path) -> None:
    text = METER + '[values.vehicle_state]\ntable = "input"\naddress = 5\ntype = "u16"\nmap = { "1" = "A" }\n'
    found = problems(write_profile(tmp_path, text))
    assert "a meter profile cannot have it" in found["test-device.toml: values.vehicle_state"]


def test_word_order_default_and_hex_keys_are_resolved(tmp_path: Path) -> None:
    profile = load_profile(write_profile(tmp_path, CHARGER))
    assert profile.values["vehicle_state"].word_order == "little"
    assert list(profile.values["vehicle_state"].map or {}) == ["1", "2", "3"]


def test_decoding_states_codes_and_bits(tmp_path: Path) -> None:
    device = DeviceMap(load_profile(write_profile(tmp_path, CHARGER)), unit_id=7)
    image = RegisterImage()
    image.put(7, "holding", 10, [3, 9, 0x0001, 0x0002])  # state C, code 9, bits 0 and 17 (LSW first)
    decoded = device.decode(image, 1)
    assert decoded.vehicle_state is VehicleState.C
    assert decoded.faults == (
        Fault(FaultKind.OVER_CURRENT, vendor_code="9", info="error"),
        Fault(FaultKind.OVER_TEMPERATURE, vendor_code="bit 0", info="flags"),
        Fault(FaultKind.GROUND_FAULT, vendor_code="bit 17", info="flags"),
    )
    image.put(7, "holding", 10, [4, 14, 0, 0])  # unmapped state -> unknown; unlisted code -> "other"
    decoded = device.decode(image, 1)
    assert decoded.vehicle_state is None
    assert decoded.faults == (Fault(FaultKind.OTHER, vendor_code="14", info="error"),)


def test_plan_merges_contiguous_registers_within_the_block_limit() -> None:
    locs = [Location(1, "input", a, 2) for a in (0, 2, 4, 6, 8, 10)] + [Location(1, "input", 100, 2)]
    assert plan_reads(locs, max_block_registers=8, max_gap_registers=0) == [
        ReadBlock(1, "input", 0, 8),
        ReadBlock(1, "input", 8, 4),
        ReadBlock(1, "input", 100, 2),
    ]
    assert plan_reads(locs, max_block_registers=125, max_gap_registers=88) == [ReadBlock(1, "input", 0, 102)]
    assert plan_reads(locs, max_block_registers=125, max_gap_registers=87) == [
        ReadBlock(1, "input", 0, 12),
        ReadBlock(1, "input", 100, 2),
    ]


def test_plan_keeps_tables_and_units_apart() -> None:
    locs = [Location(1, "input", 0, 1), Location(1, "holding", 1, 1), Location(2, "input", 1, 1)]
    assert plan_reads(locs, 125, 10) == [
        ReadBlock(1, "holding", 1, 1),
        ReadBlock(1, "input", 0, 1),
        ReadBlock(2, "input", 1, 1),
    ]


def test_more_sockets_than_the_profile_describes_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="serves 1 socket"):
        DeviceMap(load_profile("bender-cc613"), sockets=2)


def test_several_sockets_need_a_way_to_address_them(tmp_path: Path) -> None:
    text = CHARGER.replace('word_order = "little"', 'word_order = "little"\nsockets = 2')
    assert (
        "socket_address_stride or socket_unit_ids"
        in problems(write_profile(tmp_path, text))["test-device.toml: modbus.sockets"]
    )
    text = CHARGER.replace('word_order = "little"', "sockets = 2\nsocket_unit_ids = [1, 2, 3]")
    assert (
        "one unit id per socket (2)"
        in problems(write_profile(tmp_path, text))["test-device.toml: modbus.socket_unit_ids"]
    )


def test_the_worked_example_in_the_docs_is_the_shipped_heidelberg_profile(tmp_path: Path) -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "profiles.md").read_text(encoding="utf-8")
    example = docs.split("```toml\n", 1)[1].split("```", 1)[0]
    assert example == (PROFILE_DIR / "heidelberg-ec.toml").read_text(encoding="utf-8")
    path = tmp_path / "heidelberg-ec.toml"
    path.write_text(example, encoding="utf-8")
    profile = load_profile(path)
    assert DeviceMap(profile).read_blocks() == [ReadBlock(1, "holding", 261, 1), ReadBlock(1, "input", 5, 14)]


def test_every_key_of_the_schema_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "profiles.md").read_text(encoding="utf-8")
    models: list[type[BaseModel]] = [
        schema.Profile,
        schema.ModbusSettings,
        schema.ValueSpec,
        schema.FaultSpec,
        schema.ScaleFactorSpec,
        schema.CurrentLimitWrite,
        schema.EnableWrite,
        schema.WatchdogSpec,
        schema.IdentifyMatch,
        schema.SimulatorSettings,
        schema.SerialSettings,
    ]
    keys = {key for model in models for key in model.model_fields}
    assert [key for key in sorted(keys) if f"`{key}`" not in docs and f"`[{key}" not in docs] == []


def test_at_least_eight_meters_and_seven_charger_families_are_shipped() -> None:
    kinds = [load_profile(name).kind for name in profile_names()]
    assert kinds.count("meter") >= 8
    vendors = {load_profile(name).vendor for name in profile_names() if load_profile(name).kind == "charger"}
    assert len(vendors) >= 7


WRITER = """
id = "{id}"
kind = "charger"
vendor = "Test"
model = "Charger"
source = "tests"
[values.vehicle_state]
table = "holding"
address = 10
type = "u16"
map = { "1" = "A", "2" = "B", "3" = "C" }
[values.current_a]
table = "holding"
address = 20
type = "u32"
phases = 3
scale = 0.001
[writes.current_limit]
table = "holding"
address = 100
type = "u16"
[watchdog]
table = "holding"
address = 200
type = "u16"
value = 1
timeout_s = 10
"""


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        # overlapping registers: a u16 inside the second phase of a u32 triple
        (("address = 100", "address = 23"), "writes.current_limit", "holding registers 23 overlap values.current_a"),
        (("address = 10\n", "address = 21\n"), "values.vehicle_state", "holding registers 21 overlap values.current_a"),
        # unknown type
        (('type = "u16"\n[watchdog]', 'type = "u17"\n[watchdog]'), "writes.current_limit.type", "unknown type 'u17'"),
        # a write to a read-only table
        (
            ('[writes.current_limit]\ntable = "holding"', '[writes.current_limit]\ntable = "input"'),
            "writes.current_limit.table",
            "input registers are read-only: a write needs table = 'holding'",
        ),
        (('table = "holding"\naddress = 200', 'table = "input"\naddress = 200'), "watchdog.table", "read-only"),
        (('table = "holding"\naddress = 200', 'table = "discrete"\naddress = 200'), "watchdog.table", "read-only"),
        # commands that cannot be encoded or sent as the profile says
        (
            ('address = 100\ntype = "u16"', 'address = 100\ntype = "u32"\nfunction = 6'),
            "writes.current_limit.function",
            "FC6 writes one register",
        ),
        (("timeout_s = 10", ""), "watchdog", "give timeout_s"),
        (("value = 1", "value = 70000"), "watchdog.value", "does not fit into u16"),
        (
            ('address = 100\ntype = "u16"', 'address = 100\ntype = "u16"\nmin_a = 40'),
            "writes.current_limit.min_a",
            "above max_a",
        ),
        (
            ('address = 100\ntype = "u16"', 'address = 100\ntype = "u16"\noff = "disable"'),
            "writes.current_limit.off",
            "needs a [writes.enable]",
        ),
        (
            ('address = 100\ntype = "u16"', 'address = 100\ntype = "u16"\nfunction = 5'),
            "writes.current_limit.function",
            "function 6 or 16",
        ),
    ],
)
def test_bad_commands_name_key_and_reason(tmp_path: Path, change: tuple[str, str], key: str, reason: str) -> None:
    text = WRITER.replace(*change)
    assert text != WRITER
    found = problems(write_profile(tmp_path, text))
    assert reason in found[f"test-device.toml: {key}"], found


def test_the_writer_fixture_is_valid(tmp_path: Path) -> None:
    profile = load_profile(write_profile(tmp_path, WRITER))
    assert profile.writes.current_limit is not None and profile.writes.current_limit.resolution_a == 1.0
    assert profile.watchdog is not None and profile.watchdog.word_order == "big"


def test_the_same_register_may_be_read_and_written_with_the_same_type(tmp_path: Path) -> None:
    text = WRITER + '[values.offered_current_a]\ntable = "holding"\naddress = 100\ntype = "u16"\n'
    assert load_profile(write_profile(tmp_path, text)).values["offered_current_a"].address == 100
    text = WRITER + '[values.offered_current_a]\ntable = "holding"\naddress = 100\ntype = "i16"\n'
    assert "overlap" in problems(write_profile(tmp_path, text))["test-device.toml: writes.current_limit"]


def test_sockets_must_not_overlap_each_other(tmp_path: Path) -> None:
    text = WRITER.replace('source = "tests"', 'source = "tests"\n[modbus]\nsockets = 2\nsocket_address_stride = 4')
    found = problems(write_profile(tmp_path, text))
    assert "for socket 2 overlap values.current_a" in found["test-device.toml: values.current_a"]


SUNSPEC = """
id = "{id}"
kind = "meter"
vendor = "Test"
model = "SunSpec"
source = "tests"
[modbus.sentinels]
i16 = [0x8000]
[scale_factors.w]
table = "holding"
address = 40092
[values.power_w]
table = "holding"
address = 40088
type = "i16"
scale_factor = "w"
"""


def test_a_missing_scale_factor_register_names_the_key(tmp_path: Path) -> None:
    found = problems(write_profile(tmp_path, SUNSPEC.replace('scale_factor = "w"', 'scale_factor = "watts"')))
    reason = "no [scale_factors.watts] register in this profile (defined: w)"
    assert found == {"test-device.toml: values.power_w.scale_factor": reason}
    found = problems(write_profile(tmp_path, SUNSPEC.replace("[scale_factors.w]", "[scale_factors.x]")))
    assert "no [scale_factors.w] register" in found["test-device.toml: values.power_w.scale_factor"]


def test_scale_factors_decode_with_their_sign_and_sentinels(tmp_path: Path) -> None:
    profile = load_profile(write_profile(tmp_path, SUNSPEC))
    assert profile.values["power_w"].sentinel == [0x8000]  # the [modbus.sentinels] default of the type
    device = DeviceMap(profile)
    image = RegisterImage()
    image.put(1, "holding", 40088, [12345])
    image.put(1, "holding", 40092, [0xFFFE])  # W_SF = -2
    assert device.read_role(image, "power_w") == pytest.approx(123.45)
    image.put(1, "holding", 40092, [2])
    assert device.read_role(image, "power_w") == 1_234_500
    image.put(1, "holding", 40092, [0x8000])  # scale factor "not implemented": the value is unknown
    assert device.read_role(image, "power_w") is None
    image.put(1, "holding", 40092, [0])
    image.put(1, "holding", 40088, [0x8000])  # the value itself "not implemented"
    assert device.read_role(image, "power_w") is None


def test_exponent_offset_and_inversion(tmp_path: Path) -> None:
    text = METER.replace('type = "f32"', 'type = "i16"\nexponent = -1\ninvert = true\noffset = 2')
    device = DeviceMap(load_profile(write_profile(tmp_path, text)))
    image = RegisterImage()
    image.put(1, "input", 0, [125])
    assert device.read_role(image, "power_w") == pytest.approx(-12.5 + 2)
    device.write_role(image, "power_w", -40.0)
    assert image.get(1, "input", 0) == [420]


def test_identify_matches_need_a_condition_of_the_right_kind(tmp_path: Path) -> None:
    text = METER + '[[identify.match]]\ntable = "input"\naddress = 5\ntype = "u16"\n'
    assert (
        "give equals, one_of, or min/max"
        in problems(write_profile(tmp_path, text))["test-device.toml: identify.match[0]"]
    )
    text = METER + '[[identify.match]]\ntable = "input"\naddress = 5\ntype = "u16"\nequals = "SunS"\n'
    assert "holds numbers" in problems(write_profile(tmp_path, text))["test-device.toml: identify.match[0].equals"]


def test_a_meter_takes_no_commands(tmp_path: Path) -> None:
    text = METER + '[writes.current_limit]\ntable = "holding"\naddress = 5\ntype = "u16"\n'
    assert problems(write_profile(tmp_path, text)) == {"test-device.toml: writes": "a meter takes no commands"}


def test_station_and_socket_unit_ids(tmp_path: Path) -> None:
    alfen = DeviceMap(load_profile("alfen-ng9xx"), sockets=2)
    temperature = alfen.profile.values["temperature_c"]
    assert [loc.unit_id for loc in alfen.locations(temperature, 2)] == [200]
    assert {block.unit_id for block in alfen.read_blocks()} == {1, 2, 200}
    charx = DeviceMap(load_profile("phoenix-charx"), sockets=2)
    assert charx.locations(charx.profile.values["vehicle_state"], 2)[0].address == 2299


CHARGER_STATE = """
[[identify.match]]
table = "input"
address = 5
type = "u16"
min = 0
max = 5
"""


def test_identify_needs_a_match_that_zeros_cannot_satisfy(tmp_path: Path) -> None:
    reason = problems(write_profile(tmp_path, METER + CHARGER_STATE + CHARGER_STATE.replace("5", "6", 1)))[
        "test-device.toml: identify"
    ]
    assert "answers 0 in every register" in reason
    for evidence in ("min = 6", "equals = 3", "one_of = [1, 2]"):  # each fails on a zero register
        text = METER + CHARGER_STATE + CHARGER_STATE.replace("min = 0\nmax = 5", evidence).replace("5", "6", 1)
        assert load_profile(write_profile(tmp_path, text)).identify is not None, evidence


@pytest.mark.parametrize("name", profile_names())
def test_every_shipped_identification_has_positive_evidence(name: str) -> None:
    from adapters.modbus.conditions import satisfied_by_zeros

    identify = load_profile(name).identify
    assert identify is not None, "probe cannot suggest a profile without [identify]"
    assert not all(satisfied_by_zeros(match) for match in identify.match)


GATED = (
    METER.replace('kind = "meter"', 'kind = "charger"').replace("[values.power_w]", "[values.soc_percent]")
    + 'valid_when = [{ table = "input", address = 9, type = "u16", equals = 1 }, '
    '{ table = "input", address = 0, type = "f32", max = 100 }]\n'
    '[values.vehicle_state]\ntable = "input"\naddress = 4\ntype = "u16"\nmap = { "1" = "A" }\n'
)


def test_valid_when_makes_a_plain_number_unknown(tmp_path: Path) -> None:
    device = DeviceMap(load_profile(write_profile(tmp_path, GATED)))
    [entry] = [e for e in device.entries() if e.key == "values.soc_percent"]
    assert Location(1, "input", 9, 1) in entry.locations  # the condition is read with the value
    image = RegisterImage()
    image.put(1, "input", 0, [0x4264, 0x0000])  # 57.0
    assert device.read_role(image, "soc_percent") is None  # input 9 reads 0: the 57 means nothing
    image.put(1, "input", 9, [1])
    assert device.read_role(image, "soc_percent") == 57.0
    image.put(1, "input", 0, [0x4316, 0x0000])  # 150.0: above the declared range
    assert device.read_role(image, "soc_percent") is None


def test_the_simulator_encodes_unknown_through_the_condition(tmp_path: Path) -> None:
    device = DeviceMap(load_profile(write_profile(tmp_path, GATED)))
    image = RegisterImage()
    device.write_role(image, "soc_percent", 42.0)
    assert image.get(1, "input", 9) == [1] and device.read_role(image, "soc_percent") == 42.0
    device.write_role(image, "soc_percent", None)
    assert image.get(1, "input", 9) == [0] and device.read_role(image, "soc_percent") is None


def test_valid_when_conditions_are_checked_like_matches(tmp_path: Path) -> None:
    text = GATED.replace("equals = 1 }", 'equals = "x" }')
    found = problems(write_profile(tmp_path, text))
    assert "holds numbers" in found["test-device.toml: values.soc_percent.valid_when[0].equals"]
    text = GATED.replace('address = 9, type = "u16"', 'address = 1, type = "u16"')
    assert "overlap" in " ".join(problems(write_profile(tmp_path, text)).values())  # inside the f32 at 0..1

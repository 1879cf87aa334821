"""Does the device on the other end fit a profile? The profile's ``[identify]`` section says.

``ocpp-gateway probe`` calls ``identify`` once per profile with a ``read`` function bound to one
connection. Each ``[[identify.match]]`` names a register and what it must hold (``equals``,
``one_of`` or a ``min``/``max`` range); all must hold for a fit, and the loader has made sure at
least one of them is something a device answering only zeros cannot show. A SunSpec device, for instance,
fits ``sunspec-203`` when holding register 40000 reads "SunS", 40002 reads model 1 and 40070
reads model 203. After a fit the profile's own values are read and decoded, so probe can show a
few plausible numbers (and a misfit with implausible ones stands out to the installer).

Nothing here opens a connection: ``read`` is the caller's. It must raise ``DecodeError`` (such as
``errors.ExceptionResponse``) when the device answers with an exception or garbage, and may raise
``DeviceTimeout``: both mean "does not fit" here, as many RTU devices stay silent on registers
they do not have. ``DeviceUnavailable`` (no connection at all) is not a misfit and propagates.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from adapters.modbus.codec import decode_raw
from adapters.modbus.conditions import holds
from adapters.modbus.layout import DeviceMap, EntryId, RegisterImage, RoleValue
from adapters.modbus.profile import TABLE_NAMES, Profile, Table
from gateway.domain.errors import DecodeError, DeviceTimeout

ReadFn = Callable[[Table, int, int, int], Awaitable[list[int]]]
"""``await read(table, address, count, unit_id)``: the words (or bits as 0/1) of one read request."""

_NOT_A_FIT = (DecodeError, DeviceTimeout)


@dataclass(frozen=True, slots=True)
class IdentifyResult:
    """A profile that fits, the evidence (one line per matched register) and what its values read.

    ``values`` maps each role the profile maps (and ``vehicle_state``, ``charging_enabled``) to its
    value in the role's unit for socket 1, None where the device did not give it.
    """

    profile: Profile
    unit_id: int
    evidence: tuple[str, ...]
    values: dict[str, RoleValue] = field(default_factory=dict)


async def identify(
    profile: Profile, read: ReadFn, *, unit_id: int | None = None, read_values: bool = True
) -> IdentifyResult | None:
    """The fit of ``profile`` to the device behind ``read``, or None if it does not fit.

    ``unit_id`` replaces the profile's station unit id (``[modbus] unit_id``), as a device config
    would. A profile without ``[identify]`` cannot be recognised and gives None.
    """
    if profile.identify is None:
        return None
    device_map = DeviceMap(profile, unit_id=unit_id)
    evidence = []
    for match in profile.identify.match:
        loc = device_map.locations(match, 1)[0]
        try:
            words = await read(loc.table, loc.address, loc.width, loc.unit_id)
            raw = decode_raw(match, words[: loc.width]) if len(words) >= loc.width else None
        except _NOT_A_FIT:
            return None
        except ValueError:  # undecodable (a string that is not text): not this device
            return None
        if not holds(match, raw):
            return None
        evidence.append(f"{TABLE_NAMES[loc.table]} {loc.address} of unit {loc.unit_id} = {raw!r}")
    values = await _read_values(device_map, read) if read_values else {}
    return IdentifyResult(profile, device_map.station_unit_id, tuple(evidence), values)


async def _read_values(device_map: DeviceMap, read: ReadFn) -> dict[str, RoleValue]:
    """Socket 1's values, best effort: a block the device refuses leaves its values None."""
    image = RegisterImage()
    unavailable: set[EntryId] = set()
    entries = device_map.entries()
    for block in device_map.read_blocks():
        try:
            words = await read(block.table, block.address, block.count, block.unit_id)
        except _NOT_A_FIT:
            words = []
        if len(words) < block.count:
            unavailable.update(e.id for e in entries if e.within(block))
            continue
        image.put(block.unit_id, block.table, block.address, words[: block.count])
    try:
        decoded = device_map.decode(image, 1, unavailable)
    except ValueError:
        return {}
    if device_map.profile.kind == "meter":
        return dict(decoded.values)
    return {**decoded.values, "vehicle_state": decoded.vehicle_state, "charging_enabled": decoded.charging_enabled}

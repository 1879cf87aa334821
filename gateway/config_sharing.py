"""Config of site power sharing: ``[load_management]`` and how each charger is wired to the grid.

A site's chargers share one grid connection with the building. ``[load_management]`` names the
meter at the grid connection and the main fuse; the gateway then keeps all chargers together under
the fuse (docs/load-management.md). Without the section the grid meter is only shown, and only
the CSMS's ChargePointMaxProfile and an MQTT site limit are shared between the connectors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from gateway.config_strict import Name, Strict

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

GridPhase = Literal["L1", "L2", "L3"]


def _distinct(phases: list[GridPhase]) -> list[GridPhase]:
    if len(set(phases)) != len(phases):
        raise ValueError(f"a grid phase appears twice in {phases}")
    return phases


# The grid phases a charger's own L1, L2, L3 are wired to, in that order: ["L2", "L3", "L1"] for a
# rotated three-phase charger, ["L3"] for a single-phase one on L3. Left out: a three-phase charger
# is wired L1-L1, L2-L2, L3-L3, and a single-phase charger is counted on every phase (safe whatever
# its wiring, at the cost of keeping room for it on the two phases it does not use).
GridPhases = Annotated[list[GridPhase], Field(min_length=1, max_length=3), AfterValidator(_distinct)]


class LoadManagementConfig(Strict):
    """``[load_management]``: keep the chargers together under the main fuse, per phase."""

    grid_meter: Name  # a [[meters]] name: the meter at the grid connection (building and chargers)
    fuse_a: Annotated[float, Field(gt=0, le=10_000)]  # the main fuse, A per phase
    margin_a: Annotated[float, Field(ge=0, le=10_000)] = 2.0  # kept free below the fuse
    # What all chargers together may draw per phase while the grid meter does not answer: choose it
    # so that the fuse holds with the building at its highest.
    fallback_a: Annotated[float, Field(ge=0, le=10_000)]
    # When not every car can have 6 A, the paused ones take turns of this many minutes.
    rotation_min: Annotated[float, Field(ge=1, le=1440)] = 15.0

    @model_validator(mode="after")
    def _room_under_the_fuse(self) -> LoadManagementConfig:
        if self.margin_a >= self.fuse_a:
            raise ValueError(f"margin_a ({self.margin_a:g} A) must be below fuse_a ({self.fuse_a:g} A)")
        if self.fallback_a > self.fuse_a - self.margin_a:
            room = self.fuse_a - self.margin_a
            raise ValueError(f"fallback_a ({self.fallback_a:g} A) must not be above fuse_a - margin_a ({room:g} A)")
        return self


def load_management_problems(config: GatewayConfig) -> list[tuple[str, str]]:
    """The cross-checks of ``[load_management]`` that need the rest of the config, by key path."""
    section = config.load_management
    if section is None:
        return []
    meters = {meter.name: meter for meter in config.meters}
    meter = meters.get(section.grid_meter)
    if meter is None:
        known = ", ".join(sorted(meters)) or "none configured"
        return [("load_management.grid_meter", f"no [[meters]] named {section.grid_meter!r} (meters: {known})")]
    if meter.connector:
        reason = (
            f"{meter.name!r} is connector {meter.connector}'s billing meter; the grid meter measures the whole "
            "site (connector = 0, or no connector)"
        )
        return [("load_management.grid_meter", reason)]
    return []

"""Home Assistant entities of the sessions' tally (gateway.services.session_tally): each
connector's last finished session and the site's sessions today, read from their own retained
topics (``<prefix>/connector/<n>/last_session``, ``<prefix>/site/sessions``; docs/mqtt.md).

The gateway knows both whether or not a charger answers now, so they follow the gateway's
availability only.
"""

from __future__ import annotations

from dataclasses import replace

from adapters.mqtt.ha_entities import Entity, sensor, value

#: Every connector: the energy its last finished session billed, with its start, stop and masked tag.
LAST_SESSION_ENTITIES: tuple[Entity, ...] = (
    replace(
        sensor(
            "last_session_energy",
            "Last session energy",
            value("energy_wh"),
            "energy_of_one",
            attrs=("started_at", "stopped_at", "id_tag"),
        ),
        follows_device=False,
    ),
)

#: The gateway: sessions started since the box's local midnight. ``total_increasing`` is HA's
#: class for a count that starts again from 0 each day ("a daily amount of consumed gas"): a
#: decrease is read as a new cycle, so no ``last_reset`` is needed; a restart keeps the count
#: (the tally is seeded from the history), so it does not fake one.
SESSIONS_TODAY: Entity = sensor(
    "sessions_today", "Sessions today", value("sessions_today"), "counter", attrs=("day", "since")
)

"""Commands the Site takes, named without any protocol: what was asked, by whom, and how it ended.

The operator's event log records every command that changes something on the site with its
source, so "who stopped my session?" has an answer whether it came from the CSMS, a home
automation over MQTT or the status page. The adapters translate their protocol's request into a
Site command and say where it came from; the words here are the gateway's own.
"""

from __future__ import annotations

from enum import StrEnum


class CommandSource(StrEnum):
    """Where a command came from."""

    CSMS = "csms"  # the back office (OCPP)
    MQTT = "mqtt"  # a command topic (home automation, HEMS)
    PAGE = "page"  # the status page's buttons


class Command(StrEnum):
    """What was asked."""

    START = "start"  # start a session (RemoteStartTransaction, MQTT session start)
    STOP = "stop"  # stop a session (RemoteStopTransaction, MQTT session stop, the page)
    AVAILABILITY = "availability"  # take a connector out of service or put it back
    CURRENT_CEILING = "current_ceiling"  # cap a connector's current
    SOC_TARGET = "soc_target"  # pause charging at a state of charge
    SITE_LIMIT = "site_limit"  # what all chargers together may draw
    CHARGING_PROFILE = "charging_profile"  # install a charging profile
    CLEAR_CHARGING_PROFILE = "clear_charging_profile"
    RESET = "reset"
    UNLOCK = "unlock"
    CONFIGURATION = "configuration"  # a configuration key (its value is never recorded: it may be a secret)
    LOCAL_LIST = "local_list"  # the local authorisation list
    CLEAR_CACHE = "clear_cache"  # the authorisation cache


class CommandResult(StrEnum):
    """How a command ended, as the gateway answered it."""

    ACCEPTED = "accepted"
    SCHEDULED = "scheduled"  # accepted, applied when the running session ends
    ALREADY = "already"  # accepted, but nothing to change (e.g. available -> available)
    REJECTED = "rejected"
    NOT_SUPPORTED = "not_supported"
    REBOOT_REQUIRED = "reboot_required"  # accepted, takes effect after a restart
    FAILED = "failed"  # accepted, but not carried out (e.g. a charger that did not answer)
    UNKNOWN = "unknown"  # nothing matched (e.g. no such charging profile)


def result_from_status(status: str) -> CommandResult:
    """A protocol's answer status (``Accepted``, ``NotSupported``, ``UnlockFailed``...) in the
    gateway's words; anything else counts as rejected."""
    word = status.lower()
    if word.endswith("failed"):
        return CommandResult.FAILED
    by_word = {
        "accepted": CommandResult.ACCEPTED,
        "unlocked": CommandResult.ACCEPTED,
        "scheduled": CommandResult.SCHEDULED,
        "notsupported": CommandResult.NOT_SUPPORTED,
        "notimplemented": CommandResult.NOT_SUPPORTED,
        "unknown": CommandResult.UNKNOWN,
        "rebootrequired": CommandResult.REBOOT_REQUIRED,
    }
    return by_word.get(word, CommandResult.REJECTED)

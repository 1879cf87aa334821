"""OCPP 1.6 authorisation payloads <-> the domain: SendLocalList, GetLocalListVersion and idTagInfo.

Pure translation, so the virtual charge point's ``@on`` handlers stay one line each. The ``ocpp``
library hands a handler its payload as keyword arguments with snake_case keys, nested dicts
included (``local_authorization_list=[{"id_tag": ..., "id_tag_info": {"status": "Accepted",
"expiry_date": ...}}]``), and the answer to a call we made (Authorize.conf, StartTransaction.conf)
the same way. It validates payloads against the JSON schemas, but not ``format: date-time``: a
malformed expiryDate reaches us and must be handled here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from ocpp.v16 import call_result, datatypes, enums

from gateway.domain.authorization import IdTagInfo, ListUpdateStatus, ListUpdateType, LocalAuthList
from gateway.domain.model import iso_utc
from gateway.domain.transactions import AuthStatus

log = logging.getLogger(__name__)

AUTH_STATUS_TO_OCPP = {
    AuthStatus.ACCEPTED: enums.AuthorizationStatus.accepted,
    AuthStatus.BLOCKED: enums.AuthorizationStatus.blocked,
    AuthStatus.EXPIRED: enums.AuthorizationStatus.expired,
    AuthStatus.INVALID: enums.AuthorizationStatus.invalid,
    AuthStatus.CONCURRENT_TX: enums.AuthorizationStatus.concurrent_tx,
}
AUTH_STATUS_FROM_OCPP = {ocpp: domain for domain, ocpp in AUTH_STATUS_TO_OCPP.items()}

UPDATE_TYPE = {enums.UpdateType.full: ListUpdateType.FULL, enums.UpdateType.differential: ListUpdateType.DIFFERENTIAL}

UPDATE_STATUS = {
    ListUpdateStatus.ACCEPTED: enums.UpdateStatus.accepted,
    ListUpdateStatus.FAILED: enums.UpdateStatus.failed,
    ListUpdateStatus.NOT_SUPPORTED: enums.UpdateStatus.not_supported,
    ListUpdateStatus.VERSION_MISMATCH: enums.UpdateStatus.version_mismatch,
}


def parse_datetime(text: str) -> datetime:
    """An OCPP dateTime (ISO 8601) as an aware datetime; one without a zone is UTC, as OCPP times are.

    Raises ValueError for anything else.
    """
    if not isinstance(text, str):
        raise ValueError(f"a dateTime must be a string, not {type(text).__name__}")
    moment = datetime.fromisoformat(text)
    return moment if moment.utcoffset() is not None else moment.replace(tzinfo=UTC)


def id_tag_info_from_ocpp(data: Mapping[str, Any] | datatypes.IdTagInfo) -> IdTagInfo:
    """An idTagInfo as the library delivers it (snake_case dict, or its dataclass). Raises ValueError."""
    fields = asdict(data) if isinstance(data, datatypes.IdTagInfo) else data
    raw_status, expiry, parent = fields.get("status"), fields.get("expiry_date"), fields.get("parent_id_tag")
    try:
        status = AUTH_STATUS_FROM_OCPP[enums.AuthorizationStatus(raw_status)]
    except ValueError:
        raise ValueError(f"unknown idTagInfo status {raw_status!r}") from None
    if parent is not None and not isinstance(parent, str):
        raise ValueError("parentIdTag must be a string")
    return IdTagInfo(status, None if expiry is None else parse_datetime(expiry), parent)


def id_tag_info_to_ocpp(info: IdTagInfo) -> datatypes.IdTagInfo:
    """For an answer we give (the local CSMS role) or a list we show: expiryDate as UTC with ``Z``."""
    return datatypes.IdTagInfo(
        status=AUTH_STATUS_TO_OCPP[info.status],
        parent_id_tag=info.parent_id_tag,
        expiry_date=None if info.expiry_date is None else iso_utc(info.expiry_date),
    )


def authorization_data_to_ocpp(id_tag: str, info: IdTagInfo | None) -> datatypes.AuthorizationData:
    """One SendLocalList entry; no info means "remove" in a differential update."""
    return datatypes.AuthorizationData(id_tag=id_tag, id_tag_info=None if info is None else id_tag_info_to_ocpp(info))


def list_entries_from_ocpp(
    local_authorization_list: Iterable[Mapping[str, Any]] | None,
) -> list[tuple[str, IdTagInfo | None]]:
    """SendLocalList's localAuthorizationList as domain entries; an entry without idTagInfo removes its tag.

    Raises ValueError naming the entry's position (not its tag, which is personal) when one is unreadable.
    """
    entries: list[tuple[str, IdTagInfo | None]] = []
    for position, item in enumerate(local_authorization_list or ()):
        info = item.get("id_tag_info")
        try:
            entries.append((item["id_tag"], None if info is None else id_tag_info_from_ocpp(info)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"localAuthorizationList[{position}]: {exc}") from exc
    return entries


def send_local_list(
    local_list: LocalAuthList,
    list_version: int,
    update_type: str,
    local_authorization_list: Iterable[Mapping[str, Any]] | None = None,
) -> call_result.SendLocalList:
    """Apply a SendLocalList.req (its keyword arguments as the library passes them) and answer it.

    An entry the schema lets through but we cannot read (a malformed expiryDate) fails the whole
    update, so the list never holds half of what the back office meant.
    """
    try:
        entries = list_entries_from_ocpp(local_authorization_list)
    except ValueError as exc:
        log.warning("SendLocalList version %s refused: %s", list_version, exc)
        return call_result.SendLocalList(status=enums.UpdateStatus.failed)
    status = local_list.send_local_list(list_version, UPDATE_TYPE[enums.UpdateType(update_type)], entries)
    return call_result.SendLocalList(status=UPDATE_STATUS[status])


def get_local_list_version(local_list: LocalAuthList) -> call_result.GetLocalListVersion:
    """GetLocalListVersion.conf: -1 without list support, 0 for an empty list."""
    return call_result.GetLocalListVersion(list_version=local_list.version)

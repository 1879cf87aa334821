"""SendLocalList / GetLocalListVersion / idTagInfo through the ``ocpp`` library's own routing and schemas.

A charge point of the library with a recording connection (no socket) routes real frames to
handlers that call our translation, so the snake_case conversion and the schema validation of
both directions are the library's, not our guess at them.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from ocpp.charge_point import camel_to_snake_case, remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.messages import Call, CallResult, validate_payload
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result, enums
from ocpp.v16.enums import Action

from adapters.ocpp_upstream.local_list import (
    AUTH_STATUS_TO_OCPP,
    UPDATE_STATUS,
    authorization_data_to_ocpp,
    get_local_list_version,
    id_tag_info_from_ocpp,
    id_tag_info_to_ocpp,
    parse_datetime,
    send_local_list,
)
from gateway.domain.authorization import IdTagInfo, ListUpdateStatus, LocalAuthList
from gateway.domain.transactions import AuthStatus

CARD = "04A2B3C4D5E6F7"


class RecordingConnection:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, message: str) -> None:
        self.sent.append(message)

    async def recv(self) -> str:  # pragma: no cover - frames are routed by hand
        raise NotImplementedError


class ListHolder(ChargePoint):
    """The two handlers as the virtual charge point would have them."""

    def __init__(self, local_list: LocalAuthList) -> None:
        self.connection = RecordingConnection()
        super().__init__("gateway", self.connection)
        self.local_list = local_list

    @on(Action.send_local_list)
    def on_send_local_list(
        self, list_version: int, update_type: str, local_authorization_list: list[dict[str, Any]] | None = None
    ) -> call_result.SendLocalList:
        return send_local_list(self.local_list, list_version, update_type, local_authorization_list)

    @on(Action.get_local_list_version)
    def on_get_local_list_version(self) -> call_result.GetLocalListVersion:
        return get_local_list_version(self.local_list)

    async def exchange(self, action: str, payload: dict[str, Any]) -> list[Any]:
        """Route one CALL frame from the CSMS and return the frame we answered with."""
        await self.route_message(json.dumps([2, "msg-1", action, payload]))
        frame: list[Any] = json.loads(self.connection.sent.pop())
        return frame


async def answer(holder: ListHolder, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    frame = await holder.exchange(action, payload)
    assert frame[0] == 3, frame  # a CALLRESULT, so it passed the response schema
    result: dict[str, Any] = frame[2]
    return result


def as_library_sends(dataclass: object) -> dict[str, Any]:
    """A payload serialised exactly as the library serialises what a handler or caller hands it."""
    payload: dict[str, Any] = snake_to_camel_case(remove_nones(serialize_as_dict(dataclass)))
    return payload


async def test_full_update_over_the_wire() -> None:
    holder = ListHolder(LocalAuthList())
    request = {
        "listVersion": 3,
        "updateType": "Full",
        "localAuthorizationList": [
            {
                "idTag": CARD,
                "idTagInfo": {"status": "Accepted", "expiryDate": "2026-06-01T00:00:00Z", "parentIdTag": "P1"},
            },
            {"idTag": "BLOCKED-CARD", "idTagInfo": {"status": "Blocked"}},
        ],
    }
    assert await answer(holder, "SendLocalList", request) == {"status": "Accepted"}
    assert holder.local_list.get(CARD) == IdTagInfo(AuthStatus.ACCEPTED, datetime(2026, 6, 1, tzinfo=UTC), "P1")
    assert holder.local_list.get("BLOCKED-CARD") == IdTagInfo(AuthStatus.BLOCKED)
    assert await answer(holder, "GetLocalListVersion", {}) == {"listVersion": 3}


async def test_differential_updates_over_the_wire() -> None:
    holder = ListHolder(LocalAuthList())
    full = {
        "listVersion": 1,
        "updateType": "Full",
        "localAuthorizationList": [{"idTag": CARD, "idTagInfo": {"status": "Accepted"}}],
    }
    await answer(holder, "SendLocalList", full)
    remove = {"listVersion": 2, "updateType": "Differential", "localAuthorizationList": [{"idTag": CARD}]}
    assert await answer(holder, "SendLocalList", remove) == {"status": "Accepted"}
    assert CARD not in holder.local_list
    assert await answer(holder, "GetLocalListVersion", {}) == {"listVersion": 0}  # empty again
    stale = {"listVersion": 1, "updateType": "Differential", "localAuthorizationList": [{"idTag": "X"}]}
    await answer(holder, "SendLocalList", {**full, "listVersion": 5})
    assert await answer(holder, "SendLocalList", stale) == {"status": "VersionMismatch"}
    assert await answer(holder, "SendLocalList", {"listVersion": 6, "updateType": "Differential"}) == {
        "status": "Accepted"  # no list at all: nothing changes but the version
    }
    assert await answer(holder, "GetLocalListVersion", {}) == {"listVersion": 6}


async def test_limits_and_no_support_over_the_wire() -> None:
    holder = ListHolder(LocalAuthList(send_max_length=1))
    two = [{"idTag": "A", "idTagInfo": {"status": "Accepted"}}, {"idTag": "B", "idTagInfo": {"status": "Accepted"}}]
    request = {"listVersion": 1, "updateType": "Full", "localAuthorizationList": two}
    assert await answer(holder, "SendLocalList", request) == {"status": "Failed"}
    unsupported = ListHolder(LocalAuthList(supported=False))
    assert await answer(unsupported, "SendLocalList", request) == {"status": "NotSupported"}
    assert await answer(unsupported, "GetLocalListVersion", {}) == {"listVersion": -1}


async def test_a_malformed_expiry_date_fails_the_whole_update(caplog: pytest.LogCaptureFixture) -> None:
    holder = ListHolder(LocalAuthList())
    entries = [
        {"idTag": "GOOD-CARD-0001", "idTagInfo": {"status": "Accepted"}},
        {"idTag": CARD, "idTagInfo": {"status": "Accepted", "expiryDate": "next tuesday"}},
    ]
    request = {"listVersion": 1, "updateType": "Full", "localAuthorizationList": entries}
    assert await answer(holder, "SendLocalList", request) == {"status": "Failed"}
    assert len(holder.local_list) == 0
    assert "localAuthorizationList[1]" in caplog.text and CARD not in caplog.text


async def test_the_library_still_refuses_what_the_schema_forbids() -> None:
    holder = ListHolder(LocalAuthList())
    request = {"listVersion": 1, "updateType": "Full", "localAuthorizationList": [{"idTag": "X" * 21}]}
    frame = await holder.exchange("SendLocalList", request)
    assert frame[0] == 4  # CALLERROR, our handler never ran
    assert len(holder.local_list) == 0


async def test_a_list_we_describe_is_a_valid_send_local_list_and_reads_back_the_same() -> None:
    entries: list[tuple[str, IdTagInfo]] = [
        (CARD, IdTagInfo(AuthStatus.ACCEPTED, datetime(2026, 6, 1, 12, 30, tzinfo=timezone(timedelta(hours=2))), "P")),
        ("SECOND", IdTagInfo(AuthStatus.CONCURRENT_TX)),
    ]
    request = call.SendLocalList(
        list_version=4,
        update_type=enums.UpdateType.full,
        local_authorization_list=[authorization_data_to_ocpp(tag, info) for tag, info in entries],
    )
    payload = as_library_sends(request)
    await validate_payload(Call("m", "SendLocalList", payload), "1.6")
    assert payload["localAuthorizationList"][0]["idTagInfo"]["expiryDate"] == "2026-06-01T10:30:00.000Z"
    holder = ListHolder(LocalAuthList())
    assert await answer(holder, "SendLocalList", payload) == {"status": "Accepted"}
    assert holder.local_list.entries == dict(entries)
    removal = as_library_sends(authorization_data_to_ocpp(CARD, None))
    assert removal == {"idTag": CARD}


@pytest.mark.parametrize("status", list(AuthStatus))
async def test_id_tag_info_answers_pass_the_authorize_schema(status: AuthStatus) -> None:
    info = IdTagInfo(status, datetime(2026, 1, 1, tzinfo=UTC), parent_id_tag="FLEET")
    payload = as_library_sends(call_result.Authorize(id_tag_info=id_tag_info_to_ocpp(info)))
    await validate_payload(CallResult("m", payload, action="Authorize"), "1.6")
    assert payload == {
        "idTagInfo": {
            "status": AUTH_STATUS_TO_OCPP[status],
            "expiryDate": "2026-01-01T00:00:00.000Z",
            "parentIdTag": "FLEET",
        }
    }
    assert id_tag_info_from_ocpp(id_tag_info_to_ocpp(info)) == info


def test_an_authorize_answer_as_the_library_hands_it_to_the_caller() -> None:
    payload = {"idTagInfo": {"status": "Blocked", "expiryDate": "2026-01-01T02:00:00+02:00", "parentIdTag": "P"}}
    result = call_result.Authorize(**camel_to_snake_case(payload))  # what ChargePoint.call() returns
    info = id_tag_info_from_ocpp(result.id_tag_info)
    assert info == IdTagInfo(AuthStatus.BLOCKED, datetime(2026, 1, 1, tzinfo=UTC), "P")
    assert id_tag_info_from_ocpp({"status": "Accepted"}) == IdTagInfo(AuthStatus.ACCEPTED)


@pytest.mark.parametrize(
    "bad", [{"status": "Maybe"}, {}, {"status": "Accepted", "expiryDate": None, "parent_id_tag": 7}]
)
def test_unreadable_id_tag_info_raises_value_error(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        id_tag_info_from_ocpp(bad)


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2026-01-01T00:00:00Z", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T00:00:00.250Z", datetime(2026, 1, 1, 0, 0, 0, 250_000, tzinfo=UTC)),
        ("2026-01-01T01:00:00+01:00", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T00:00:00", datetime(2026, 1, 1, tzinfo=UTC)),  # no zone: OCPP times are UTC
    ],
)
def test_ocpp_datetimes(text: str, moment: datetime) -> None:
    parsed = parse_datetime(text)
    assert parsed == moment and parsed.utcoffset() is not None


@pytest.mark.parametrize("bad", ["", "tomorrow", "2026-13-01T00:00:00Z"])
def test_bad_datetimes(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_datetime(bad)


def test_every_domain_status_has_an_ocpp_name() -> None:
    assert set(AUTH_STATUS_TO_OCPP) == set(AuthStatus)
    assert set(AUTH_STATUS_TO_OCPP.values()) == set(enums.AuthorizationStatus)
    assert set(UPDATE_STATUS) == set(ListUpdateStatus)
    assert set(UPDATE_STATUS.values()) == set(enums.UpdateStatus)


def test_quiet_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    send_local_list(LocalAuthList(), 1, "Full", [{"id_tag": CARD, "id_tag_info": {"status": "Accepted"}}])
    assert CARD not in caplog.text

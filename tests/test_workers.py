"""The bridge's gunicorn response class against gunicorn's own: the same checks, the same bytes.

``DatedResponse`` checks an app's headers in one pass instead of gunicorn's two regular expressions
per field, and writes gunicorn's header block itself. These tests hold it to gunicorn's
``Response`` for any header list hypothesis makes up (the fields kept, the length read, the error
raised on a bad name or value) and for the bytes it sends, Date apart: the app's Date in place of
the time of sending.
"""

from __future__ import annotations

from typing import Any

import pytest
from gunicorn.http.wsgi import Response
from hypothesis import example, given
from hypothesis import strategies as st

from bridge.ops import workers
from bridge.ops.workers import DatedResponse

SENDING_TIME = "Tue, 01 Dec 2026 12:00:00 GMT"


class Sock:
    def __init__(self) -> None:
        self.sent = b""

    def sendall(self, data: bytes) -> None:
        self.sent += data


class Req:
    version = (1, 1)
    method = "GET"

    def should_close(self) -> bool:
        return False


class Cfg:
    sendfile = False


def outcome(cls: type[Response], headers: list[Any]) -> tuple[Any, ...]:
    response = cls(Req(), Sock(), Cfg())
    try:
        response.start_response("200 OK", headers)
    except Exception as error:  # noqa: BLE001 - the error itself is what is compared
        return (type(error), str(error))
    return (response.headers, response.response_length, response.upgrade, response.chunked)


names = st.one_of(
    st.sampled_from(["Content-Type", "Content-Length", "Date", "Connection", "Upgrade", "Server",
                     "Transfer-Encoding", "Keep-Alive", "X-Request-ID", "Vary", "date", "DATE"]),
    st.text(alphabet=st.sampled_from("Ab-_!~ :\n\r\t\x00é\x7f"), max_size=6),
)
values = st.one_of(
    st.sampled_from(["text/plain", "12", "0", " 7 ", "close", "Upgrade", "websocket", "",
                     "Tue, 01 Dec 2026 11:00:00 GMT"]),
    st.text(alphabet=st.sampled_from("ab 1\t\n\r\x00\x7f\x80é"), max_size=6),
)
fields = st.lists(st.one_of(st.tuples(names, values), st.tuples(names, st.integers(0, 9))),
                  max_size=8)


@given(fields)
@example([("X-A", "1"), ("X-B\nX-C", "2")])
@example([("X-A", "1\nX-B: 2")])
@example([("Date", "Tue, 01 Dec 2026 11:00:00 GMT"), ("date", "second")])
@example([("Content-Length", "12"), ("Connection", "Upgrade"), ("Upgrade", "websocket")])
@example([("Content-Length", "twelve")])
@example([("X-A", " 1\t"), ("Content-Length", " 2 "), ("Date", "\tTue, 01 Dec 2026 11:00:00 GMT ")])
def test_it_keeps_and_refuses_exactly_the_fields_gunicorn_does(headers: list[Any]) -> None:
    for _ in range(2):  # the second time from the fields it remembers
        assert outcome(DatedResponse, headers) == outcome(Response, headers)


def test_the_fields_it_remembers_are_bounded_in_number_and_size() -> None:
    workers._CHECKED.clear()
    long_value = "v" * workers.CHECKED_CHARS
    assert outcome(DatedResponse, [("X-Long", long_value)]) == ([("X-Long", long_value)], None, False,
                                                                True)
    assert workers._CHECKED == {}
    for n in range(workers.CHECKED_KEPT + 10):
        outcome(DatedResponse, [("X-Request-ID", f"id-{n}"), ("Content-Length", "2")])
        assert 0 < len(workers._CHECKED) <= workers.CHECKED_KEPT


@given(fields)
@example([("Date", " Tue, 01 Dec 2026 11:00:00 GMT\t"), ("Date", "Wed, 02 Dec 2026 11:00:00 GMT")])
def test_the_date_sent_is_the_apps_first_or_the_time_of_sending(headers: list[Any]) -> None:
    ours = DatedResponse(Req(), Sock(), Cfg())
    try:
        ours.start_response("200 OK", headers)
    except Exception:  # noqa: BLE001 - refused as gunicorn refuses it: the test above
        return
    dates = [value.strip(" \t") for name, value in headers if name.lower() == "date"]
    assert ours.app_date == (dates[0] if dates else None)


@pytest.mark.parametrize("headers", [
    [("Content-Type", "application/json"), ("Content-Length", "2")],
    [("Content-Type", "text/plain")],  # chunked: no length
    [("Date", "Tue, 01 Dec 2026 11:00:00 GMT"), ("Content-Length", "2"), ("Vary", "Origin")],
])
@pytest.mark.parametrize("version", [(1, 1), (1, 0)])
def test_the_header_block_is_gunicorns_byte_for_byte_with_the_apps_date(
        headers: list[tuple[str, str]], version: tuple[int, int],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gunicorn.util.http_date", lambda timestamp=None: SENDING_TIME)
    monkeypatch.setattr(workers, "http_date", lambda timestamp=None: SENDING_TIME)
    sent = {}
    for cls in (Response, DatedResponse):
        request = Req()
        request.version = version
        response = cls(request, Sock(), Cfg())
        response.start_response("200 OK", headers)
        response.write(b"{}")
        sent[cls] = response.sock.sent
    app_date = next((value for name, value in headers if name == "Date"), None)
    expected = sent[Response]
    if app_date is not None:
        expected = expected.replace(f"Date: {SENDING_TIME}".encode(), f"Date: {app_date}".encode())
        assert app_date.encode() in expected
    assert sent[DatedResponse] == expected
    assert sent[DatedResponse].count(b"Date: ") == 1


@given(fields)
@example([("X-A", "1"), ("Upgrade", "websocket"), ("Connection", "Upgrade")])
def test_any_header_list_gunicorn_takes_is_sent_as_gunicorn_sends_it(
        headers: list[Any]) -> None:
    sent = {}
    for cls in (Response, DatedResponse):
        response = cls(Req(), Sock(), Cfg())
        try:
            response.start_response("200 OK", headers)
        except Exception:  # noqa: BLE001 - refused as gunicorn refuses it: the first test
            return
        response.app_date = None  # the Date is compared by the test above
        response.write(b"{}")
        sent[cls] = response.sock.sent.split(b"\r\n")
    ours, theirs = sent[DatedResponse], sent[Response]
    assert [line for line in ours if not line.startswith(b"Date: ")] == \
        [line for line in theirs if not line.startswith(b"Date: ")]

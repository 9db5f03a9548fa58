"""The wire format model: what is accepted, what is refused, and what is relayed."""

from __future__ import annotations

import json

import pytest

from pgwatch_cli.stream.events import InvalidPayload, parse

PAYLOAD = (
    '{"v":1,"seq":7,"table":"bookings","schema":"public","action":"UPDATE","id":123,'
    '"pk":{"id": 123},"actor":"Anna","changed":["gesamtpreis"],'
    '"diff":{"gesamtpreis": [1352.00, 12345678901234567890.12]},"truncated":false,'
    '"txid":90211,"timestamp":"2026-11-28T06:41:00.123456+00:00"}'
)


def test_payload_is_relayed_verbatim_so_numerics_keep_their_digits():
    event = parse(PAYLOAD)
    assert event.to_wire() == PAYLOAD
    assert "12345678901234567890.12" in event.to_wire()


def test_multi_line_json_is_relayed_as_one_line():
    pretty = json.dumps(json.loads(PAYLOAD), indent=2)
    wire = parse(pretty).to_wire()
    assert "\n" not in wire and json.loads(wire)["seq"] == 7


def test_unknown_keys_are_kept():
    event = parse(PAYLOAD[:-1] + ',"future":{"x":1}}')
    assert json.loads(event.model_dump_json(by_alias=True))["future"] == {"x": 1}


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "not json",
        "[]",
        '{"v":2}',
        PAYLOAD.replace('"v":1', '"v":2'),
        PAYLOAD.replace('"UPDATE"', '"MERGE"'),
        PAYLOAD.replace('"+00:00"', '""').replace("+00:00", ""),
        PAYLOAD.replace('"txid":90211', '"txid":"x"'),
        PAYLOAD.replace('"diff":{"gesamtpreis": [1352.00, 12345678901234567890.12]}',
                        '"diff":{"gesamtpreis": [1]}'),
        "\x00\xff",
    ],
)
def test_junk_is_refused_with_a_reason(junk):
    with pytest.raises(InvalidPayload) as refused:
        parse(junk)
    assert str(refused.value)

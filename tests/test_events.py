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


def test_a_changed_copy_reports_its_new_text_not_the_original_payload():
    event = parse(PAYLOAD)
    copy = event.model_copy(update={"actor": "Ben"})
    assert json.loads(copy.to_wire())["actor"] == "Ben"
    assert event.to_wire() == PAYLOAD  # the original is untouched
    assert event.model_copy().to_wire() == PAYLOAD  # an unchanged copy stays verbatim


def test_truncate_events_have_no_key():
    payload = PAYLOAD.replace('"UPDATE"', '"TRUNCATE"').replace('"id":123', '"id":null')
    payload = payload.replace('"pk":{"id": 123}', '"pk":null')
    event = parse(payload)
    assert event.action == "TRUNCATE" and event.pk is None and event.id_text == "?"


def test_old_pk_is_optional_and_kept():
    assert parse(PAYLOAD).old_pk is None
    event = parse(PAYLOAD[:-1] + ',"old_pk":{"id":122}}')
    assert event.old_pk == {"id": 122}
    assert json.loads(event.to_wire())["old_pk"] == {"id": 122}

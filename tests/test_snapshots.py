"""Reading what the API returns: record shapes, both run shapes, precise rejections, JSON Lines batches."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tracker.snapshots import (
    Snapshot,
    SnapshotError,
    decode_line,
    parse_observed_at,
    read_object,
    read_page_leniently,
    read_record,
    to_snapshot,
)
from tracker.sources.jsonl import read_batches

NOW = 1_800_000_000.0
CREATED = 1_767_225_600


def run(run_id: str = "run_1", **fields: Any) -> dict[str, Any]:
    """A minimal run object; a field given as ``...`` is left out."""
    body: dict[str, Any] = {
        "id": run_id,
        "object": "thread.run",
        "thread_id": "thread_1",
        "status": "queued",
        "created_at": CREATED,
    }
    body.update(fields)
    return {name: value for name, value in body.items() if value is not ...}


def read(record: Any) -> list[Snapshot]:
    return read_record(json.dumps(record), NOW)


def error_of(record: Any) -> str:
    with pytest.raises(SnapshotError) as raised:
        read(record)
    return str(raised.value)


# --- record shapes ---------------------------------------------------------------------------------


def test_bare_run_is_observed_now() -> None:
    [snapshot] = read(run(status="in_progress", started_at=CREATED + 2))
    assert snapshot == Snapshot(
        kind="thread.run",
        object_id="run_1",
        group_id="thread_1",
        status="in_progress",
        created_at=CREATED,
        observed_at=NOW,
        body=run(status="in_progress", started_at=CREATED + 2),
    )
    assert isinstance(snapshot.created_at, float)


def test_bare_run_without_object_field_is_a_thread_run() -> None:
    [snapshot] = read(run(object=...))
    assert snapshot.kind == "thread.run"


def test_envelope_with_epoch_observed_at() -> None:
    [snapshot] = read({"observed_at": CREATED + 5.1234, "run": run()})
    assert snapshot.observed_at == CREATED + 5.123
    assert snapshot.object_id == "run_1"


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("2026-01-01T00:00:05Z", CREATED + 5),
        ("2026-01-01T00:00:05z", CREATED + 5),
        ("2026-01-01T00:00:05.250Z", CREATED + 5.25),
        ("2026-01-01T02:00:05+02:00", CREATED + 5),
        ("2025-12-31T19:00:05-05:00", CREATED + 5),
        ("2026-01-01T00:00:05", CREATED + 5),
        ("2026-01-01 00:00:05+00:00", CREATED + 5),
    ],
)
def test_envelope_with_iso_8601_observed_at(text: str, epoch: float) -> None:
    [snapshot] = read({"observed_at": text, "run": run()})
    assert snapshot.observed_at == epoch


def test_list_page_gives_one_snapshot_per_item() -> None:
    page = {"object": "list", "data": [run("run_1"), run("run_2", status="completed")], "has_more": False}
    snapshots = read(page)
    assert [(s.object_id, s.status, s.observed_at) for s in snapshots] == [
        ("run_1", "queued", NOW),
        ("run_2", "completed", NOW),
    ]


def test_envelope_wrapping_a_list_page() -> None:
    record = {"observed_at": "2026-01-01T00:01:00Z", "page": {"object": "list", "data": [run("run_1"), run("run_2")]}}
    snapshots = read(record)
    assert [s.object_id for s in snapshots] == ["run_1", "run_2"]
    assert {s.observed_at for s in snapshots} == {CREATED + 60}


def test_empty_list_page_gives_no_snapshots() -> None:
    assert read({"object": "list", "data": []}) == []


def test_read_object_reads_a_decoded_record() -> None:
    [snapshot] = read_object({"observed_at": 5, "run": run()}, NOW)
    assert snapshot.observed_at == 5


def test_to_snapshot_rounds_observed_at_to_the_millisecond() -> None:
    assert to_snapshot(run(), 1.23456).observed_at == 1.235


# --- both run shapes --------------------------------------------------------------------------------

EARLY_2024 = {
    "id": "run_abc",
    "object": "thread.run",
    "created_at": 1_704_067_200,
    "assistant_id": "asst_1",
    "thread_id": "thread_abc",
    "status": "completed",
    "started_at": 1_704_067_201,
    "expires_at": None,
    "cancelled_at": None,
    "failed_at": None,
    "completed_at": 1_704_067_210,
    "last_error": None,
    "model": "gpt-4-turbo-preview",
    "instructions": "You are a helpful assistant.",
    "tools": [{"type": "retrieval"}, {"type": "code_interpreter"}],
    "file_ids": ["file-1", "file-2"],
    "metadata": {},
}

CURRENT = {
    "id": "run_def",
    "object": "thread.run",
    "created_at": 1_767_225_600,
    "assistant_id": "asst_1",
    "thread_id": "thread_def",
    "status": "in_progress",
    "started_at": 1_767_225_601,
    "expires_at": 1_767_226_200,
    "cancelled_at": None,
    "failed_at": None,
    "completed_at": None,
    "required_action": None,
    "last_error": None,
    "model": "gpt-4o",
    "instructions": "You are a helpful assistant.",
    "tools": [{"type": "file_search"}],
    "tool_resources": {"file_search": {"vector_store_ids": ["vs_1"]}},
    "metadata": {"team": "a"},
    "usage": None,
    "temperature": 1.0,
    "top_p": 1.0,
    "max_prompt_tokens": None,
    "max_completion_tokens": None,
    "truncation_strategy": {"type": "auto", "last_messages": None},
    "incomplete_details": None,
    "response_format": "auto",
    "tool_choice": "auto",
    "parallel_tool_calls": True,
}


@pytest.mark.parametrize("body", [EARLY_2024, CURRENT], ids=["early-2024", "current"])
def test_both_run_shapes_are_accepted_and_kept_whole(body: dict[str, Any]) -> None:
    [snapshot] = read(body)
    assert snapshot.object_id == body["id"]
    assert snapshot.group_id == body["thread_id"]
    assert snapshot.status == body["status"]
    assert snapshot.body == body


def test_integral_floats_of_a_run_are_kept_as_integers() -> None:
    # As canonical JSON writes them: "temperature": 1.0 is stored, hashed and compared as 1.
    [snapshot] = read(CURRENT)
    for name in ("temperature", "top_p"):
        assert snapshot.body[name] == 1
        assert type(snapshot.body[name]) is int
    [snapshot] = read(run(created_at=float(CREATED), x_ratio=0.5, x_count=3.0))
    assert type(snapshot.body["created_at"]) is int
    assert type(snapshot.body["x_count"]) is int
    assert snapshot.body["x_ratio"] == 0.5
    assert snapshot.created_at == CREATED
    assert type(snapshot.created_at) is float


def test_a_snapshot_is_a_named_tuple() -> None:
    [snapshot] = read(run())
    assert isinstance(snapshot, tuple)
    assert snapshot._fields == ("kind", "object_id", "group_id", "status", "created_at", "observed_at", "body")
    assert snapshot._replace(status="completed").status == "completed"


def test_unknown_fields_are_kept_in_the_body() -> None:
    [snapshot] = read(run(reasoning_effort="high", x_future={"nested": [1, 2]}))
    assert snapshot.body["reasoning_effort"] == "high"
    assert snapshot.body["x_future"] == {"nested": [1, 2]}


def test_unknown_status_is_accepted_verbatim() -> None:
    [snapshot] = read(run(status="paused_by_operator"))
    assert snapshot.status == "paused_by_operator"


# --- rejections name the field and the reason -------------------------------------------------------


@pytest.mark.parametrize("name", ["id", "thread_id", "status", "created_at"])
def test_missing_required_field_is_named(name: str) -> None:
    assert error_of(run(**{name: ...})) == f"field '{name}': required, missing"


@pytest.mark.parametrize("name", ["id", "thread_id", "status", "created_at"])
def test_null_required_field_is_named(name: str) -> None:
    assert error_of(run(**{name: None})) == f"field '{name}': required, missing"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"created_at": "2026-01-01"}, "field 'created_at': expected epoch seconds (a number), got a string"),
        ({"created_at": True}, "field 'created_at': expected epoch seconds (a number), got a boolean"),
        ({"started_at": False}, "field 'started_at': expected epoch seconds (a number), got a boolean"),
        ({"completed_at": "soon"}, "field 'completed_at': expected epoch seconds (a number), got a string"),
        ({"failed_at": [1]}, "field 'failed_at': expected epoch seconds (a number), got a list"),
        ({"cancelled_at": {}}, "field 'cancelled_at': expected epoch seconds (a number), got an object"),
        ({"expires_at": True}, "field 'expires_at': expected epoch seconds (a number), got a boolean"),
        ({"id": 7}, "field 'id': expected a non-empty string, got int"),
        ({"thread_id": ""}, "field 'thread_id': expected a non-empty string, got a string"),
        ({"status": ["queued"]}, "field 'status': expected a non-empty string, got a list"),
        ({"object": "thread.message"}, "field 'object': unsupported object kind 'thread.message'"),
    ],
)
def test_wrong_type_is_named_with_the_reason(fields: dict[str, Any], message: str) -> None:
    assert error_of(run(**fields)) == message


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("name", ["created_at", "x_score"])
def test_non_finite_number_is_rejected_as_not_json(constant: str, name: str) -> None:
    # Not JSON numbers: refused while reading the line, in any field (nothing could hash them).
    text = json.dumps(run()).replace('"created_at": ', f'"{name}": {constant}, "created_at": ')
    assert f'"{name}": {constant}' in text
    with pytest.raises(SnapshotError) as raised:
        read_record(text, NOW)
    assert str(raised.value) == f"invalid JSON: {constant} is not a JSON number"


@pytest.mark.parametrize("number", ["1e999", "-1e999", "1E400"])
def test_number_beyond_a_double_is_rejected(number: str) -> None:
    text = json.dumps(run()).replace('"created_at": ', f'"x_big": {number}, "created_at": ')
    with pytest.raises(SnapshotError) as raised:
        read_record(text, NOW)
    assert str(raised.value) == f"number {number} is out of range"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=repr)
@pytest.mark.parametrize("name", ["created_at", "started_at"])
def test_non_finite_timestamp_of_a_decoded_run_is_rejected(value: float, name: str) -> None:
    body = run()
    body[name] = value
    with pytest.raises(SnapshotError, match=f"^field '{name}': expected epoch seconds"):
        to_snapshot(body, NOW)


@pytest.mark.parametrize("text", ["[1, 2]", '"run"', "42", "null"])
def test_non_object_json_is_rejected(text: str) -> None:
    with pytest.raises(SnapshotError, match="expected a JSON object"):
        read_record(text, NOW)


@pytest.mark.parametrize("text", ['{"id": "run_1",', "{'id': 'run_1'}", "", '{"id": "run_1"} x'])
def test_invalid_json_is_rejected(text: str) -> None:
    with pytest.raises(SnapshotError, match=r"^invalid JSON: .* at column \d+$"):
        read_record(text, NOW)


def test_invalid_json_names_the_column_of_the_error() -> None:
    with pytest.raises(SnapshotError) as raised:
        decode_line(b'{"id": "run_1",')
    assert str(raised.value) == "invalid JSON: Expecting property name enclosed in double quotes at column 16"


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "\\ude00\\ud83d"])
def test_lone_utf16_surrogate_escape_is_rejected(escape: str) -> None:
    line = json.dumps(run()).replace('"run_1"', f'"run_1{escape}"').encode()
    assert escape.encode() in line
    with pytest.raises(SnapshotError) as raised:
        decode_line(line)
    assert str(raised.value) == "invalid JSON: a string holds an unpaired UTF-16 surrogate (\\ud800-\\udfff)"
    [batch] = list(read_batches([line + b"\n"], lambda: NOW))
    assert batch.snapshots == []
    assert [r.reason for r in batch.rejections] == [str(raised.value)]


def test_surrogate_pair_escape_is_one_character() -> None:
    [snapshot] = read_record(json.dumps(run(x_emoji="\U0001f600")), NOW)  # json.dumps writes \ud83d\ude00
    assert snapshot.body["x_emoji"] == "\U0001f600"


def test_not_utf8_names_the_byte() -> None:
    with pytest.raises(SnapshotError) as raised:
        decode_line(b'{"id": "r\xc3\x28"}')
    assert str(raised.value) == "not UTF-8 (byte 10)"


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "b": [true, false, null], "c": {"d": "\u00e9\\n", "e": -0.5}}',
        '{"n": 9223372036854775807, "m": -9223372036854775808, "u": 18446744073709551615}',
    ],
)
def test_decode_line_reads_what_the_json_module_reads(text: str) -> None:
    assert decode_line(text.encode()) == json.loads(text)


def test_integer_too_big_for_orjson_is_read_exactly() -> None:
    big = 10**400
    assert decode_line(json.dumps({"n": big, "m": -big}).encode()) == {"n": big, "m": -big}


@pytest.mark.parametrize("number", [2**64, -(2**63) - 1, 10**30])
def test_integer_beyond_64_bits_is_read_exactly(number: int) -> None:
    record = decode_line(json.dumps({"n": number}).encode())
    assert type(record["n"]) is int
    assert record["n"] == number


@pytest.mark.parametrize(
    ("observed_at", "reason"),
    [
        (True, "got a boolean"),
        ("yesterday", "is not an ISO-8601 time"),
        (-1, "is not a valid epoch time"),
        ([1], "got a list"),
    ],
)
def test_bad_observed_at_is_named(observed_at: Any, reason: str) -> None:
    message = error_of({"observed_at": observed_at, "run": run()})
    assert message.startswith("field 'observed_at': ")
    assert reason in message


def test_parse_observed_at_names_the_field_it_reads() -> None:
    with pytest.raises(SnapshotError, match=r"^field 'polled_at': "):
        parse_observed_at(False, "polled_at")


def test_envelope_must_hold_exactly_one_object() -> None:
    assert "exactly one object" in error_of({"observed_at": 5, "run": run(), "extra": run()})
    assert "exactly one object" in error_of({"observed_at": 5, "run": "run_1"})


def test_error_inside_an_envelope_names_the_wrapped_key() -> None:
    assert error_of({"observed_at": 5, "run": run(status=...)}) == "run: field 'status': required, missing"


# --- list pages keep good items and report bad ones ----------------------------------------------------


def test_list_page_keeps_good_items_and_reports_bad_ones_by_index() -> None:
    page = {"object": "list", "data": [run("run_1"), run("run_2", status=...), "junk", run("run_4", created_at="x")]}
    good, bad = read_page_leniently(page, NOW)
    assert [s.object_id for s in good] == ["run_1"]
    assert [str(error) for error in bad] == [
        "data[1]: field 'status': required, missing",
        "data[2]: expected a JSON object, got a string",
        "data[3]: field 'created_at': expected epoch seconds (a number), got a string",
    ]


def test_list_page_errors_inside_an_envelope_name_the_key_and_index() -> None:
    record = {"observed_at": 5, "page": {"object": "list", "data": [run("run_1"), run("run_2", id=3)]}}
    good, bad = read_page_leniently(record, NOW)
    assert [s.object_id for s in good] == ["run_1"]
    assert [str(error) for error in bad] == ["page: data[1]: field 'id': expected a non-empty string, got int"]


def test_strict_read_of_a_list_page_raises_the_first_bad_item() -> None:
    page = {"object": "list", "data": [run("run_1"), run("run_2", status=...), run("run_3", id=...)]}
    assert error_of(page) == "data[1]: field 'status': required, missing"


def test_list_page_without_a_data_list_is_rejected() -> None:
    assert (
        error_of({"object": "list", "data": {"id": "run_1"}}) == "field 'data': a list page needs a list, got an object"
    )
    assert error_of({"object": "list"}) == "field 'data': a list page needs a list, got null"


# --- JSON Lines batches --------------------------------------------------------------------------------


def _line(record: Any) -> bytes:
    return json.dumps(record).encode() + b"\n"


def test_read_batches_rejects_bad_lines_with_line_numbers_and_raw_bytes() -> None:
    bad_utf8 = b'{"id": "run_\xff"}'
    lines = [
        _line(run("run_1")),
        b"\n",
        b"   \r\n",
        bad_utf8 + b"\r\n",
        b'{"id": "run_2",\n',
        _line([1, 2]),
        _line(run("run_3", created_at="yesterday")),
        _line(run("run_4")),
    ]
    [batch] = list(read_batches(lines, lambda: NOW))
    assert [s.object_id for s in batch.snapshots] == ["run_1", "run_4"]
    assert batch.lines == 8
    assert [(r.line_no, r.raw) for r in batch.rejections] == [
        (4, bad_utf8 + b"\r\n"),
        (5, b'{"id": "run_2",\n'),
        (6, _line([1, 2])),
        (7, _line(run("run_3", created_at="yesterday"))),
    ]
    reasons = [r.reason for r in batch.rejections]
    assert reasons[0] == "not UTF-8 (byte 13)"
    assert reasons[1].startswith("invalid JSON: ")
    assert "expected a JSON object" in reasons[2]
    assert reasons[3] == "field 'created_at': expected epoch seconds (a number), got a string"


def test_read_batches_keeps_good_items_of_a_page_and_rejects_the_line_for_bad_ones() -> None:
    page = {"object": "list", "data": [run("run_1"), run("run_2", thread_id=...), run("run_3")]}
    [batch] = list(read_batches([_line(page)], lambda: NOW))
    assert [s.object_id for s in batch.snapshots] == ["run_1", "run_3"]
    assert [(r.line_no, r.reason) for r in batch.rejections] == [(1, "data[1]: field 'thread_id': required, missing")]
    assert batch.rejections[0].raw == _line(page)


def test_read_batches_uses_now_for_bare_runs_and_the_envelope_time_otherwise() -> None:
    lines = [_line(run("run_1")), _line({"observed_at": "2026-01-01T00:00:09Z", "run": run("run_2")})]
    [batch] = list(read_batches(lines, lambda: NOW))
    assert [s.observed_at for s in batch.snapshots] == [NOW, CREATED + 9]


def test_read_batches_splits_into_batches_of_size() -> None:
    lines = [_line(run(f"run_{index}")) for index in range(5)]
    batches = list(read_batches(lines, lambda: NOW, size=2))
    assert [len(batch.snapshots) for batch in batches] == [2, 2, 1]
    assert sum(batch.lines for batch in batches) == 5
    assert [s.object_id for batch in batches for s in batch.snapshots] == [f"run_{index}" for index in range(5)]


def test_read_batches_of_only_blank_lines_reports_lines_read() -> None:
    [batch] = list(read_batches([b"\n", b"\n"], lambda: NOW))
    assert batch.snapshots == []
    assert batch.rejections == []
    assert batch.lines == 2


def test_read_batches_of_nothing_yields_nothing() -> None:
    assert list(read_batches([], lambda: NOW)) == []


def test_the_ledger_streams_id_is_refused_as_a_run_id() -> None:
    # A run called "ledger" would share versions with the ledger's own stream (clock_backwards, purges).
    assert error_of(run("ledger")) == "field 'id': 'ledger' is reserved for the ledger's own stream"

"""Redaction policies (tracker/redaction.py): matching, precedence, actions, protected fields, errors; then
ingest and sync under a policy on both databases: the personal data and the salt are nowhere in the ledger.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import inspect, select, text

from tracker.cli import cli
from tracker.errors import PolicyError
from tracker.events import canonical_json
from tracker.lifecycle import LIFECYCLES
from tracker.redaction import PROTECTED_FIELDS, RedactionPolicy, Rule, apply, load_policy, redaction_source
from tracker.simulator import ManualClock, SimulatorServer, World
from tracker.store import open_database, watchlist
from tracker.store.audit import verify_chain
from tracker.store.schema import run_events

pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")

SALT = "test-salt-0123456789-never-stored"
ARGS_PATH = "required_action.submit_tool_outputs.tool_calls.*.function.arguments"


def policy(*options: str, salt: str | None = SALT) -> RedactionPolicy:
    return load_policy(options=options, salt=None if salt is None else salt.encode())


def hashed(value: Any, salt: str = SALT) -> str:
    digest = hmac.new(salt.encode(), canonical_json(value).encode(), hashlib.sha256).hexdigest()
    return f"hmac-sha256:{digest}"


RUN: dict[str, Any] = {
    "id": "run_1",
    "object": "thread.run",
    "thread_id": "thread_1",
    "status": "requires_action",
    "created_at": 1_767_225_600,
    "started_at": 1_767_225_601,
    "instructions": "Help Alice Martin",
    "metadata": {"user_email": "alice@example.com", "tenant": "acme", "phone": "+33 6 12 34 56 78"},
    "tools": [
        {"type": "function", "function": {"name": "lookup", "description": "Alice's CRM"}},
        {"type": "code_interpreter"},
    ],
    "required_action": {
        "type": "submit_tool_outputs",
        "submit_tool_outputs": {
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"who": "alice"}'}},
                {"id": "call_2", "type": "function", "function": {"name": "lookup", "arguments": '{"who": "bob"}'}},
            ]
        },
    },
    "unknown_field": {"x": 1},
}


# Actions


def test_hash_is_hmac_sha256_of_the_canonical_json_of_the_value() -> None:
    out = apply(policy("metadata.user_email=hash", "metadata=keep"), RUN)
    assert out["metadata"]["user_email"] == hashed("alice@example.com")
    whole = apply(policy("metadata=hash"), RUN)
    assert whole["metadata"] == hashed(RUN["metadata"])


def test_equal_values_hash_equal_and_different_salts_differ() -> None:
    other = {**RUN, "id": "run_2", "metadata": {"user_email": "alice@example.com"}}
    rules = policy("metadata.user_email=hash")
    assert apply(rules, RUN)["metadata"]["user_email"] == apply(rules, other)["metadata"]["user_email"]
    salted_otherwise = policy("metadata.user_email=hash", salt="another-salt-0123456789")
    assert apply(salted_otherwise, RUN)["metadata"]["user_email"] != apply(rules, RUN)["metadata"]["user_email"]


def test_drop_removes_the_key() -> None:
    out = apply(policy("instructions=drop", "metadata.phone=drop"), RUN)
    assert "instructions" not in out
    assert out["metadata"] == {"user_email": "alice@example.com", "tenant": "acme"}


def test_a_list_item_path_drops_the_key_inside_each_item_not_the_item() -> None:
    out = apply(policy(ARGS_PATH.replace("arguments", "arguments=drop")), RUN)
    calls = out["required_action"]["submit_tool_outputs"]["tool_calls"]
    assert [call["function"] for call in calls] == [{"name": "lookup"}, {"name": "lookup"}]


def test_a_star_ending_on_list_items_acts_on_the_items() -> None:
    assert apply(policy("tools.*=drop"), RUN)["tools"] == []
    assert apply(policy("tools.*=hash"), RUN)["tools"] == [hashed(tool) for tool in RUN["tools"]]


def test_a_star_matches_every_key_of_an_object() -> None:
    out = apply(policy("metadata.*=hash"), RUN)
    assert out["metadata"] == {key: hashed(value) for key, value in RUN["metadata"].items()}


def test_a_literal_segment_matches_object_keys_not_list_positions() -> None:
    assert apply(policy("tools.0=drop"), RUN)["tools"] == RUN["tools"]


def test_null_stays_null_when_hashed() -> None:
    assert apply(policy("instructions=hash"), {**RUN, "instructions": None})["instructions"] is None


def test_a_hashed_value_is_not_hashed_again() -> None:
    rules = policy("metadata.user_email=hash", "instructions=drop", ARGS_PATH + "=hash")
    once = apply(rules, RUN)
    assert apply(rules, once) == once


def test_unknown_fields_and_unmatched_paths_are_untouched() -> None:
    out = apply(policy("metadata.nothing_here=drop", "absent.deeper.*=hash", "tools.*.function.missing=drop"), RUN)
    assert out == RUN


def test_apply_returns_a_new_object_and_leaves_its_input_alone() -> None:
    before = copy.deepcopy(RUN)
    out = apply(policy("metadata.user_email=hash", ARGS_PATH + "=drop", "tools.*.function.description=drop"), RUN)
    assert before == RUN
    assert out is not RUN
    assert apply(policy("metadata.nothing=drop"), RUN) is not RUN


# Precedence


def test_a_name_beats_a_star_at_the_same_position() -> None:
    out = apply(policy("metadata.*=hash", "metadata.tenant=keep"), RUN)
    assert out["metadata"]["tenant"] == "acme"
    assert out["metadata"]["user_email"] == hashed("alice@example.com")


def test_between_two_paths_with_stars_the_leftmost_name_wins() -> None:
    # metadata.user_email: "metadata.*" has its name first, "*.user_email" has a '*' there.
    out = apply(policy("metadata.*=keep", "*.user_email=drop"), RUN)
    assert out["metadata"]["user_email"] == "alice@example.com"
    out = apply(policy("metadata.*=drop", "*.user_email=keep"), RUN)
    assert out["metadata"] == {}


def test_a_kept_value_is_walked_further() -> None:
    out = apply(policy("metadata=keep", "metadata.user_email=hash"), RUN)
    assert out["metadata"]["user_email"] == hashed("alice@example.com")


def test_a_dropped_or_hashed_value_goes_with_everything_inside_it() -> None:
    assert "metadata" not in apply(policy("metadata=drop", "metadata.tenant=keep"), RUN)
    assert apply(policy("metadata=hash", "metadata.tenant=keep"), RUN)["metadata"] == hashed(RUN["metadata"])


def test_rules_deeper_than_a_star_still_apply_under_a_kept_name() -> None:
    out = apply(policy("tools.*=keep", "tools.*.function.description=drop"), RUN)
    assert out["tools"][0]["function"] == {"name": "lookup"}


# Protected fields and loading errors


def test_the_protected_fields_are_every_lifecycles_reading_fields() -> None:
    for lifecycle in LIFECYCLES.values():
        assert {lifecycle.id_field, lifecycle.group_field, *lifecycle.time_fields} - {None} <= PROTECTED_FIELDS
        assert set(lifecycle.required_fields) <= PROTECTED_FIELDS
    assert {"object", "status", "created_at", "started_at", "expires_at", "run_id"} <= PROTECTED_FIELDS


@pytest.mark.parametrize("name", sorted(PROTECTED_FIELDS))
@pytest.mark.parametrize("action", ["drop", "hash"])
def test_a_policy_that_would_redact_a_protected_field_is_refused(name: str, action: str) -> None:
    with pytest.raises(PolicyError, match=f"--redact '{name}={action}': the tracker needs '{name}'"):
        policy(f"{name}={action}")
    with pytest.raises(PolicyError, match="needs"):
        policy(f"{name}.inner={action}")


def test_keep_on_a_protected_field_is_allowed() -> None:
    assert apply(policy("id=keep"), RUN) == RUN


def test_a_top_level_star_cannot_drop_or_hash_but_a_deeper_one_can() -> None:
    with pytest.raises(PolicyError, match="top-level"):
        policy("*=drop")
    out = apply(policy("*.user_email=drop"), RUN)
    assert "user_email" not in out["metadata"] and out["id"] == "run_1"


def test_a_hash_rule_needs_a_salt_of_sixteen_bytes_or_more() -> None:
    with pytest.raises(PolicyError, match="no salt is set: set TRACKER_REDACTION_SALT"):
        policy("instructions=hash", salt=None)
    with pytest.raises(PolicyError, match="shorter than 16 bytes"):
        policy("instructions=hash", salt="short")
    assert policy("instructions=drop", salt=None).salt is None  # no hash rule, no salt needed


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[redact]\n"metadata.email" = "erase"\n', "p.toml: [redact] 'metadata.email': unknown action 'erase'"),
        ('[redact]\n"metadata..email" = "drop"\n', "p.toml: [redact] 'metadata..email': a path is dot-separated"),
        ('[redact]\n"meta*" = "drop"\n', "p.toml: [redact] 'meta*': '*' stands for a whole segment"),
        ('[redact]\n"created_at" = "hash"\n', "p.toml: [redact] 'created_at': the tracker needs 'created_at'"),
        ('[redact]\n"metadata" = 1\n', "p.toml: [redact] 'metadata': expected one of keep, drop, hash, got int"),
        ('[redaction]\n"metadata" = "drop"\n', "p.toml: unknown key 'redaction'"),
        ("", "p.toml: no [redact] table"),
        ("[redact\n", "p.toml: not valid TOML"),
        (
            '[redact]\n"metadata.email" = "drop"\n[redact.metadata]\nemail = "hash"\n',
            "p.toml: [redact] 'metadata.email': more than one rule",
        ),
    ],
)
def test_errors_name_the_file_the_key_and_the_reason(toml: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(toml, "p.toml", salt=SALT.encode())
    assert str(caught.value).startswith(message)


def test_an_option_without_an_action_is_refused() -> None:
    with pytest.raises(PolicyError, match="--redact 'metadata': expected PATH=ACTION"):
        policy("metadata")


def test_bare_dotted_keys_subtables_and_quoted_paths_are_the_same_rules() -> None:
    quoted = load_policy('[redact]\n"metadata.user_email" = "hash"\n', "a.toml", salt=SALT.encode())
    bare = load_policy('[redact]\nmetadata.user_email = "hash"\n', "b.toml", salt=SALT.encode())
    table = load_policy('[redact.metadata]\nuser_email = "hash"\n', "c.toml", salt=SALT.encode())
    assert quoted.fingerprint == bare.fingerprint == table.fingerprint == policy("metadata.user_email=hash").fingerprint


def test_options_override_the_files_rule_for_the_same_path() -> None:
    loaded = load_policy('[redact]\ninstructions = "hash"\n', "p.toml", ["instructions=drop"], SALT.encode())
    assert loaded.rules == (Rule(("instructions",), "drop"),)


# Fingerprint and salt


def test_the_fingerprint_is_sha256_of_the_rules_canonical_json_without_the_salt() -> None:
    one = policy("metadata.user_email=hash", "instructions=drop")
    assert one.fingerprint == hashlib.sha256(b'{"instructions":"drop","metadata.user_email":"hash"}').hexdigest()
    assert policy("instructions=drop", "metadata.user_email=hash", salt="another-salt-0123456789").fingerprint == (
        one.fingerprint
    )
    assert policy("instructions=hash").fingerprint != policy("instructions=drop").fingerprint


def test_the_salt_is_in_no_repr_and_no_error() -> None:
    loaded = policy("instructions=hash")
    assert SALT not in repr(loaded) and SALT not in str(loaded)
    with pytest.raises(PolicyError) as caught:
        load_policy('[redact]\nid = "hash"\n', "p.toml", salt=SALT.encode())
    assert SALT not in str(caught.value)


def test_the_source_names_the_policy_only_when_one_is_in_force() -> None:
    assert redaction_source(None, {"ingest": "a.jsonl"}) == {"ingest": "a.jsonl"}
    loaded = policy("instructions=drop")
    assert redaction_source(loaded, {"sync": 3}) == {"sync": 3, "redaction": loaded.fingerprint}


# Properties

KEYS = st.sampled_from(["metadata", "instructions", "tools", "a", "b", "email", "id", "status"])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=12,
)
PATHS = st.lists(st.sampled_from(["metadata", "tools", "a", "b", "email", "*"]), min_size=1, max_size=3).map(
    lambda segments: ".".join(segments)
)
POLICIES = st.dictionaries(PATHS, st.sampled_from(["keep", "drop", "hash"]), max_size=5).filter(
    lambda rules: "*" not in rules or rules["*"] == "keep"
)
OBJECTS = st.dictionaries(KEYS, JSON, max_size=5).map(lambda body: {**body, "id": "run_1", "status": "queued"})


@given(POLICIES, OBJECTS)
def test_apply_never_changes_its_input(rules: dict[str, str], body: dict[str, Any]) -> None:
    before = copy.deepcopy(body)
    apply(policy(*(f"{path}={action}" for path, action in rules.items())), body)
    assert body == before


@given(POLICIES, OBJECTS)
def test_applying_a_policy_twice_is_applying_it_once(rules: dict[str, str], body: dict[str, Any]) -> None:
    loaded = policy(*(f"{path}={action}" for path, action in rules.items()))
    once = apply(loaded, body)
    assert apply(loaded, once) == once
    assert (once["id"], once["status"]) == ("run_1", "queued")


# Storage: ingest and sync under a policy, on SQLite and PostgreSQL

PERSONAL = ["alice@example.com", "Help Alice Martin", "+33 6 12 34 56 78", "alice-secret-arg", "step-arg-bob"]
POLICY_TOML = f"""
[redact]
"metadata.user_email" = "hash"
"metadata.phone" = "drop"
"instructions" = "drop"
"{ARGS_PATH}" = "hash"
"step_details.tool_calls.*.function.arguments" = "hash"
"""


def _personal_lines() -> bytes:
    t0 = 1_767_225_600
    run = {
        **RUN,
        "status": "queued",
        "started_at": None,
        "required_action": None,
        "metadata": {"user_email": "alice@example.com", "phone": "+33 6 12 34 56 78", "tenant": "acme"},
    }
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "alice-secret-arg"}}
    waiting = {
        **run,
        "status": "requires_action",
        "started_at": t0 + 1,
        "required_action": {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": [call]}},
    }
    other_run = {**run, "id": "run_2", "metadata": {"user_email": "alice@example.com"}}
    step = {
        "id": "step_1",
        "object": "thread.run.step",
        "thread_id": "thread_1",
        "run_id": "run_1",
        "status": "completed",
        "created_at": t0 + 1,
        "completed_at": t0 + 2,
        "step_details": {
            "type": "tool_calls",
            "tool_calls": [{"id": "call_9", "type": "function", "function": {"arguments": "step-arg-bob"}}],
        },
    }
    records = [
        {"observed_at": t0 + 1, "run": run},
        {"observed_at": t0 + 5, "run": waiting},
        {"object": "list", "data": [other_run], "has_more": False},
        {"observed_at": t0 + 6, "step": step},
    ]
    return b"".join(json.dumps(record).encode() + b"\n" for record in records)


def _dump(db_url: str) -> str:
    """Every value of every row of every table, as text (JSON values as JSON text)."""
    engine = open_database(db_url)
    try:
        with engine.connect() as connection:
            return "\n".join(
                "\t".join(_cell(value) for value in row)
                for table in inspect(connection).get_table_names()
                for row in connection.execute(text(f'SELECT * FROM "{table}"'))
            )
    finally:
        engine.dispose()


def _cell(value: object) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _database_bytes(db_url: str) -> bytes:
    path = Path(db_url.removeprefix("sqlite:///"))
    return b"".join(file.read_bytes() for file in sorted(path.parent.glob(path.name + "*")))


def _tracker(db_url: str, *args: str, salt: str = SALT) -> Result:
    env = {"TRACKER_REDACTION_SALT": salt}
    return CliRunner().invoke(cli, ["--database-url", db_url, *args], env=env, catch_exceptions=False)


def _absent(needles: list[str], db_url: str, backend: str, *outputs: str) -> None:
    dump = _dump(db_url)
    raw = _database_bytes(db_url) if backend == "sqlite" else b""
    for needle in needles:
        escaped = json.dumps(needle, ensure_ascii=False)[1:-1]  # as it reads inside a JSON string
        assert needle not in dump and escaped not in dump, needle
        assert needle.encode() not in raw and escaped.encode() not in raw, needle
        for output in outputs:
            assert needle not in output, needle


def test_an_ingest_under_a_policy_keeps_personal_data_and_the_salt_out_of_the_ledger(
    db_url: str, backend: str, tmp_path: Path
) -> None:
    snapshots = tmp_path / "runs.jsonl"
    snapshots.write_bytes(_personal_lines())
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(POLICY_TOML, encoding="utf-8")
    first = _tracker(db_url, "ingest", str(snapshots), "--redaction", str(policy_file), "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["events_appended"] > 0
    again = _tracker(db_url, "ingest", str(snapshots), "--redaction", str(policy_file), "--json")
    assert json.loads(again.stdout)["events_appended"] == 0
    verified = _tracker(db_url, "audit", "verify")
    assert verified.exit_code == 0, verified.output
    _absent([*PERSONAL, SALT], db_url, backend, first.output, again.output, verified.output)

    engine = open_database(db_url)
    try:
        with engine.connect() as connection:
            sources = connection.execute(text("SELECT DISTINCT CAST(source AS TEXT) FROM run_events")).scalars().all()
            payloads = connection.execute(text("SELECT field, body FROM run_payloads")).all()
            first_kinds = connection.execute(select(run_events.c.kind).distinct()).scalars().all()
    finally:
        engine.dispose()
    fingerprint = load_policy(POLICY_TOML, "policy.toml", salt=SALT.encode()).fingerprint
    assert {json.loads(source)["redaction"] for source in sources} == {fingerprint}
    assert set(first_kinds) == {"thread.run", "thread.run.step"}
    # Hashed values stay joinable: both runs carry the same digest of the same e-mail address.
    bodies = [json.loads(body) if isinstance(body, str) else body for field, body in payloads if field == "metadata"]
    assert {"user_email": hashed("alice@example.com"), "tenant": "acme"} in bodies
    assert {"user_email": hashed("alice@example.com")} in bodies


def test_without_a_policy_the_source_is_unchanged(db_url: str, tmp_path: Path) -> None:
    snapshots = tmp_path / "runs.jsonl"
    snapshots.write_bytes(_personal_lines())
    assert _tracker(db_url, "ingest", str(snapshots)).exit_code == 0
    engine = open_database(db_url)
    try:
        with engine.connect() as connection:
            sources = set(connection.execute(text("SELECT DISTINCT CAST(source AS TEXT) FROM run_events")).scalars())
    finally:
        engine.dispose()
    assert sources == {canonical_json({"ingest": str(snapshots)})}


def test_a_bad_policy_stops_the_command_before_anything_is_written(db_url: str, tmp_path: Path) -> None:
    snapshots = tmp_path / "runs.jsonl"
    snapshots.write_bytes(_personal_lines())
    result = _tracker(db_url, "ingest", str(snapshots), "--redact", "thread_id=hash")
    assert result.exit_code == 2
    assert "--redact 'thread_id=hash': the tracker needs 'thread_id'" in result.stderr
    missing_salt = CliRunner().invoke(
        cli, ["--database-url", db_url, "ingest", str(snapshots), "--redact", "metadata=hash"], env={}
    )
    assert missing_salt.exit_code == 2 and "no salt is set" in missing_salt.stderr
    assert "alice" not in _dump(db_url)


def test_the_salt_can_come_from_a_file(db_url: str, backend: str, tmp_path: Path) -> None:
    snapshots = tmp_path / "runs.jsonl"
    snapshots.write_bytes(_personal_lines())
    salt_file = tmp_path / "salt"
    salt_file.write_text(SALT + "\n", encoding="utf-8")
    result = _tracker(
        db_url,
        "ingest",
        str(snapshots),
        "--redact",
        "metadata.user_email=hash",
        "--redaction-salt-file",
        str(salt_file),
        salt="",
    )
    assert result.exit_code == 0, result.output
    assert hashed("alice@example.com") in _dump(db_url)
    _absent(["alice@example.com", SALT], db_url, backend, result.output)


# Sync: the simulator through the real SDK


@pytest.fixture
def simulator() -> Iterator[tuple[World, ManualClock, SimulatorServer]]:
    clock = ManualClock(1_800_000_000.0)
    world = World(seed=11, clock=clock)
    with SimulatorServer(world) as server:
        yield world, clock, server


def test_a_sync_under_a_policy_keeps_personal_data_out_of_the_ledger(
    db_url: str, backend: str, tmp_path: Path, simulator: tuple[World, ManualClock, SimulatorServer]
) -> None:
    world, clock, server = simulator
    [thread] = world.populate(1, 0)
    run_ids = [
        world.create_run(
            thread, "asst_1", instructions=f"Help Alice Martin {n}", metadata={"user_email": "alice@example.com"}
        )["id"]
        for n in range(3)
    ]
    engine = open_database(db_url)
    try:
        watchlist.watch(engine, [thread], clock.now())
    finally:
        engine.dispose()
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(POLICY_TOML, encoding="utf-8")
    env = {
        "OPENAI_API_KEY": "sk-test-redaction",
        "OPENAI_BASE_URL": server.base_url,
        "TRACKER_REDACTION": str(policy_file),
        "TRACKER_REDACTION_SALT": SALT,
    }
    outputs: list[str] = []
    for _ in range(12):
        result = CliRunner().invoke(
            cli, ["--database-url", db_url, "sync", "--steps", "--json"], env=env, catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
        clock.advance(20)
    arguments = {
        call["function"]["arguments"]
        for run_id in run_ids
        for step in world.list_steps(thread, run_id, limit=100)["data"]
        if step["step_details"]["type"] == "tool_calls"
        for call in step["step_details"]["tool_calls"]
    }
    assert arguments, "the simulated runs called no tool: pick another seed"
    _absent(["Help Alice Martin", "alice@example.com", *arguments, SALT], db_url, backend, *outputs)
    engine = open_database(db_url)
    try:
        assert verify_chain(engine).ok
        with engine.connect() as connection:
            sources = connection.execute(text("SELECT DISTINCT CAST(source AS TEXT) FROM run_events")).scalars().all()
            kinds = set(connection.execute(select(run_events.c.kind).distinct()).scalars())
    finally:
        engine.dispose()
    fingerprint = load_policy(POLICY_TOML, "policy.toml", salt=SALT.encode()).fingerprint
    assert {json.loads(source)["redaction"] for source in sources} == {fingerprint}
    assert kinds == {"thread.run", "thread.run.step"}

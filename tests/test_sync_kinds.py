"""`tracker sync` for batches, fine-tuning jobs and background responses, through the real SDK over
loopback, on SQLite and PostgreSQL.

Batches and jobs are followed through their list endpoints (newest first, stopping at objects the ledger
knows as ended, then retrieving the known-live ones the pages did not cover); responses are polled by id
from the watch list until they end. The same economy, lease and provenance guarantees as for threads.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text

from tracker.cli import cli
from tracker.ingest import ingest_lines
from tracker.lifecycle import BATCH
from tracker.redaction import load_policy
from tracker.simulator import Faults, ManualClock, SimulatorServer, Trigger, World
from tracker.sources.openai_runs import ApiFailure, Caller, Fetched, RateLimiter, RunsApi
from tracker.store import object_watch, projections, watchlist
from tracker.store.audit import verify_chain
from tracker.store.object_watch import ClaimedSource
from tracker.sync import SyncOptions, SyncSummary, sync
from tracker.sync_objects import LISTED_KINDS, SourcePoll, list_identity, poll_listed, poll_source

START = 1_800_000_000.0
DAY = 86_400.0
API_KEY = "sk-test-kinds-0123456789"


@dataclass
class Api:
    world: World
    clock: ManualClock
    server: SimulatorServer

    def sync(self, engine: Engine, **options: Any) -> SyncSummary:
        client = openai.OpenAI(base_url=self.server.base_url, api_key=API_KEY, max_retries=0)
        try:
            caller = Caller(RateLimiter(None), sleep=lambda seconds: None)
            api = RunsApi(client, clock=self.clock.now)
            return sync(engine, api, caller, SyncOptions(**{"cadence": None, **options}), now=self.clock.now)
        finally:
            client.close()

    def route_requests(self, kind: str) -> int:
        return sum(count for (_, route), count in self.server.stats.requests.items() if kind in route)


@pytest.fixture
def api() -> Iterator[Api]:
    clock = ManualClock(START)
    world = World(seed=11, clock=clock, response_retention_s=600.0)
    with SimulatorServer(world) as server:
        yield Api(world, clock, server)


def _rows(engine: Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(text(sql), params)]


def _current(engine: Engine, kind: str) -> dict[str, str]:
    rows = _rows(engine, "SELECT object_id, status FROM object_current WHERE kind = :kind", kind=kind)
    return {row["object_id"]: row["status"] for row in rows}


def _served(api: Api, kind: str) -> dict[str, str]:
    """What the API says now of every object of ``kind`` (by listing it whole)."""
    collection = api.world.batches if kind == "batch" else api.world.fine_tuning_jobs
    return {object_id: collection.retrieve(object_id)["status"] for object_id in collection.ids()}


def _sync_until_all_ended(api: Api, engine: Engine, step_s: float, **options: Any) -> int:
    """Sync every ``step_s`` simulated seconds until every object in the ledger has ended; returns the syncs."""
    for syncs in range(1, 201):
        api.sync(engine, **options)
        rows = _rows(engine, "SELECT COUNT(*) AS n FROM object_current WHERE NOT is_terminal")
        if rows[0]["n"] == 0:
            return syncs
        api.clock.advance(step_s)
    raise AssertionError("objects still live after 200 syncs")


# --- batches and fine-tuning jobs: following the lists ---------------------------------------------------


def test_a_sync_records_every_batch_and_job_of_the_project(api: Api, engine: Engine) -> None:
    api.world.populate_kinds(batches=130, fine_tuning_jobs=12, history_s=3 * DAY)
    summary = api.sync(engine)
    assert summary.outcome == "ok", summary.errors
    assert summary.sources == {"batch": "ok", "fine_tuning.job": "ok"}
    assert _current(engine, "batch") == _served(api, "batch")
    assert _current(engine, "fine_tuning.job") == _served(api, "fine_tuning.job")
    report = verify_chain(engine)
    assert report.ok
    # Every event names the sync and the server; none has a group.
    sources = _rows(engine, "SELECT DISTINCT CAST(source AS TEXT) AS s, thread_id FROM run_events")
    assert [json.loads(row["s"]) for row in sources] == [{"sync": summary.sync_id, "base_url": api.server.base_url}]
    assert {row["thread_id"] for row in sources} == {None}
    # 130 batches are two pages of 100 (the first sync knows none of them, so it reads to the end).
    assert api.route_requests("/v1/batches") == 2
    (record,) = _rows(engine, "SELECT outcome, sources, objects_polled FROM sync_runs")
    assert (record["outcome"], json.loads(record["sources"]), record["objects_polled"]) == (
        "ok",
        {"batch": "ok", "fine_tuning.job": "ok"},
        0,
    )


def test_batches_followed_to_their_end_have_every_interval_dated_by_the_api(api: Api, engine: Engine) -> None:
    api.world.populate_kinds(batches=40, history_s=600.0)
    _sync_until_all_ended(api, engine, step_s=1800.0)
    assert _current(engine, "batch") == _served(api, "batch")
    dated = _rows(
        engine,
        "SELECT DISTINCT entered_dated_by FROM object_status_intervals WHERE kind = 'batch'",
    )
    # However coarse the polling (every half hour here), no batch transition is dated by a poll.
    assert "observed_at" not in {row["entered_dated_by"] for row in dated}
    assert projections.verify_rebuild(engine).clean


def test_once_everything_has_ended_a_sync_costs_one_request_per_list_and_appends_nothing(
    api: Api, engine: Engine
) -> None:
    api.world.populate_kinds(batches=250, fine_tuning_jobs=30, history_s=3 * DAY)
    api.clock.advance(2 * DAY)  # every batch and job has ended by now
    api.sync(engine)
    before = api.server.stats.total
    idle = api.sync(engine)
    assert (idle.requests, idle.events_appended) == (2, 0)
    assert api.server.stats.total - before == 2


def test_new_batches_are_found_on_the_first_pages_and_older_live_ones_retrieved(api: Api, engine: Engine) -> None:
    api.world.populate_kinds(batches=20, history_s=3 * DAY)
    api.clock.advance(2 * DAY)
    api.sync(engine, listed_kinds=("batch",))
    assert "validating" not in _current(engine, "batch").values()
    create = {"input_file_id": "file-abc", "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    created = []
    for _ in range(3):  # further apart than the stop margin (300 s)
        created.append(api.world.batches.create(**create)["id"])
        api.clock.advance(400)
    older = created[0]

    # Page by page (one batch a page): the three new ones, the newest the last sync saw (not older than
    # itself), then one older than it, which stops the paging.
    first = api.sync(engine, listed_kinds=("batch",), page_size=1)
    assert first.requests == 5
    assert set(created) <= set(_current(engine, "batch"))

    # Nothing new since: the pages stop at the first batch older than the margin below the newest seen
    # (the second page); the live batch behind it is retrieved by id, not paged to.
    api.clock.advance(1)
    again = api.sync(engine, listed_kinds=("batch",), page_size=1)
    live_behind = int(_current(engine, "batch")[older] not in BATCH.terminal)
    assert again.requests == 2 + live_behind
    assert api.route_requests("/v1/batches/{batch_id}") == live_behind


def test_an_ingested_ended_batch_does_not_hide_the_older_pages(api: Api, engine: Engine, tmp_path: Path) -> None:
    api.world.populate_kinds(batches=250, history_s=2 * DAY)
    newest = api.world.batches.list(limit=1)["data"][0]
    ended = {**newest, "status": "completed", "completed_at": newest["created_at"] + 60}
    ingest_lines(engine, [json.dumps(ended).encode()], api.clock.now, source={"ingest": "export.jsonl"})
    summary = api.sync(engine, listed_kinds=("batch",))
    assert summary.sources == {"batch": "ok"}
    assert set(_current(engine, "batch")) == set(api.world.batches.ids())  # all 250, not the first page
    assert api.route_requests("/v1/batches") == 3


def test_a_live_batch_recorded_from_elsewhere_is_not_retrieved_nor_lost(api: Api, engine: Engine) -> None:
    api.world.populate_kinds(batches=5, history_s=DAY)
    other = {"id": "batch_other_project", "object": "batch", "status": "in_progress", "created_at": START - DAY}
    ingest_lines(engine, [json.dumps(other).encode()], api.clock.now, source={"ingest": "export.jsonl"})
    for _ in range(2):
        summary = api.sync(engine, listed_kinds=("batch",))
        assert summary.requests == 1
    events = _rows(engine, "SELECT event_type FROM run_events WHERE run_id = 'batch_other_project'")
    assert "run_lost" not in {row["event_type"] for row in events}


class FakeList(RunsApi):
    """A list endpoint over ``count`` batches created a second apart, newest first (no HTTP, no database);
    ``broken``: indexes of objects served without a status; ``failure``: what every list request raises."""

    def __init__(self, count: int, broken: frozenset[int] = frozenset(), failure: ApiFailure | None = None) -> None:
        self.ids = [f"batch_{index:04d}" for index in range(count)]
        self.pages_served = 0
        self.broken = broken
        self.failure = failure

    def now(self) -> float:
        return START

    def list_objects(self, kind: str, after: str | None, limit: int) -> Fetched:
        if self.failure is not None:
            raise self.failure
        self.pages_served += 1
        start = 0 if after is None else self.ids.index(after) + 1
        page = [
            {"id": object_id, "object": "batch", "status": "in_progress", "created_at": START - index}
            for index, object_id in enumerate(self.ids[start : start + limit], start)
        ]
        for item in page:
            if int(item["id"][-4:]) in self.broken:
                del item["status"]
        body = {"object": "list", "data": page, "has_more": start + limit < len(self.ids)}
        return Fetched(json.dumps(body).encode(), START)

    def retrieve_object(self, kind: str, object_id: str) -> Fetched:
        raise ApiFailure("not_found", f"No batch found with id '{object_id}'.", 404)


def _poll(api: FakeList, known_live: dict[str, float], newest_seen_at: float | None = START) -> SourcePoll:
    source = ClaimedSource("batch", "http://127.0.0.1:1/v1", newest_seen_at)
    return poll_source(api, Caller(RateLimiter(None)), source, 100, known_live)


@pytest.mark.parametrize(
    ("new", "live", "pages", "retrieved"),
    [
        # (Objects here are a second apart: the 300 s stop margin is 300 objects, 3 pages.)
        # 50 new, 200 live just behind them, 3 old live ones far down: 4 pages, then 3 retrieves.
        (50, [*range(50, 250), 600, 700, 800], 4, [600, 700, 800]),
        # Live and ended mixed over the 500 newest: paging on while a page pays beats 333 retrieves.
        (0, [index for index in range(500) if index % 3], 5, []),
        # Nothing new, nothing live: the pages stop once past the margin below what the last poll saw.
        (0, [], 4, []),
    ],
)
def test_a_list_is_paged_while_a_page_covers_more_known_live_objects_than_one_retrieve(
    new: int, live: list[int], pages: int, retrieved: list[int]
) -> None:
    api = FakeList(1000)
    known_live = {api.ids[index]: START - index for index in live}
    poll = _poll(api, known_live, newest_seen_at=START - new)
    assert api.pages_served == pages
    assert poll.to_retrieve == [api.ids[index] for index in retrieved]
    # Every known-live object is either on a page read or retrieved.
    assert set(known_live) <= {snapshot.object_id for snapshot in poll.snapshots} | set(poll.to_retrieve)
    assert poll.newest_seen_at == START


def test_the_first_poll_of_a_list_reads_it_to_its_end() -> None:
    api = FakeList(1000)
    poll = _poll(api, {}, newest_seen_at=None)
    assert (api.pages_served, len(poll.snapshots), poll.state) == (10, 1000, "ok")


def test_an_unreadable_object_on_a_page_is_reported_and_the_rest_kept() -> None:
    api = FakeList(250, broken=frozenset({7, 120}))
    poll = _poll(api, {}, newest_seen_at=None)
    assert (poll.state, len(poll.snapshots), api.pages_served) == ("ok", 248, 3)
    assert poll.rejected == [
        "batch list: data[7]: field 'status': required, missing",
        "batch list: data[20]: field 'status': required, missing",
    ]


@pytest.mark.parametrize(
    ("failure", "state"),
    [
        (ApiFailure("not_found", "NotFoundError: 404 page not found", 404), "not served"),
        (ApiFailure("client", "PermissionDeniedError: 403 insufficient scope", 403), "not permitted"),
        (ApiFailure("client", "AuthenticationError: 401 bad key", 401), "failed"),
    ],
)
def test_a_list_the_server_does_not_serve_or_the_key_may_not_read_is_reported_not_failed(
    failure: ApiFailure, state: str
) -> None:
    poll = _poll(FakeList(5, failure=failure), {"batch_live": START})
    assert (poll.state, poll.snapshots, poll.to_retrieve) == (state, [], [])


def test_a_known_live_batch_the_api_no_longer_has_is_lost() -> None:
    api = FakeList(0)
    listed = _poll(api, {"batch_gone": START})
    assert (listed.error, listed.to_retrieve) == (None, ["batch_gone"])
    poll = poll_listed(api, Caller(RateLimiter(None)), "batch", "batch_gone")
    assert poll.error is None
    assert [(signal.object_id, signal.event_type, signal.group_id) for signal in poll.signals] == [
        ("batch_gone", "run_lost", None)
    ]


def test_a_page_saying_there_is_more_without_a_cursor_fails_the_poll_instead_of_ending_it() -> None:
    class NoCursor(FakeList):
        def list_objects(self, kind: str, after: str | None, limit: int) -> Fetched:
            body = json.loads(super().list_objects(kind, after, limit).body)
            for item in body["data"]:
                item.pop("id")  # nothing readable, no cursor anywhere
            return Fetched(json.dumps(body).encode(), START)

    poll = _poll(NoCursor(500), {}, newest_seen_at=None)
    assert poll.state == "failed" and "names no new cursor" in str(poll.error)
    assert poll.newest_seen_at is None


def test_a_page_whose_last_object_is_unreadable_continues_after_the_last_readable_one() -> None:
    api = FakeList(250, broken=frozenset({99, 199}))
    poll = _poll(api, {}, newest_seen_at=None)
    assert len(poll.snapshots) == 248 and api.pages_served == 3


def test_a_poll_with_an_unreadable_object_does_not_move_its_mark_so_the_next_reads_it_again() -> None:
    poll = _poll(FakeList(250, broken=frozenset({150})), {}, newest_seen_at=START)
    assert poll.state == "ok" and len(poll.rejected) == 1
    assert poll.newest_seen_at is None  # not recorded: the next poll reads down to the old mark again
    clean = _poll(FakeList(250), {}, newest_seen_at=START)
    assert clean.newest_seen_at == START


def test_a_list_read_stops_at_max_runtime_without_moving_its_mark() -> None:
    api = FakeList(1000)
    pages = iter(range(100))
    poll = poll_source(
        api, Caller(RateLimiter(None)), ClaimedSource("batch", "x", None), 100, {}, None, lambda: next(pages) >= 1
    )
    assert api.pages_served == 2 and not poll.complete and poll.newest_seen_at is None


def test_a_sync_failing_while_a_list_is_read_stops_instead_of_hanging(
    api: Api, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.world.populate_kinds(batches=3000, fine_tuning_jobs=900, history_s=DAY)

    def broken_append(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the database went away")

    monkeypatch.setattr("tracker.sync.append_snapshots", broken_append)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            api.sync(engine, append_batch=50, page_size=20)
        except BaseException as exc:  # the test reports whatever came out
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the sync hung on a list reader waiting for its pages to be taken"
    assert [str(exc) for exc in outcome] == ["the database went away"]


def test_live_batches_a_list_showed_are_followed_even_if_the_ledger_had_them_from_a_file(
    api: Api, engine: Engine
) -> None:
    api.world.populate_kinds(batches=150, history_s=6 * 3600.0)
    served = [api.world.batches.retrieve(object_id) for object_id in api.world.batches.ids()]
    ingest_lines(engine, [json.dumps(body).encode() for body in served], api.clock.now, source={"ingest": "f"})
    first = api.sync(engine, listed_kinds=("batch",))
    assert first.events_appended == 0  # the list showed nothing new
    api.clock.advance(2 * DAY)
    api.sync(engine, listed_kinds=("batch",))
    assert _current(engine, "batch") == _served(api, "batch")


def test_two_keys_against_one_server_are_two_lists() -> None:
    base = "http://127.0.0.1:8765/v1"
    assert list_identity(base, None, "sk-project-a-0000") != list_identity(base, None, "sk-project-b-1111")
    assert list_identity(base, None, "sk-project-a-0000") == list_identity(base, None, "sk-project-a-0000")


def test_a_complete_poll_records_its_mark_even_after_losing_its_lease(engine: Engine) -> None:
    first = object_watch.claim_source(engine, "batch", "api", 1, START, 300.0)
    assert first is not None
    second = object_watch.claim_source(engine, "batch", "api", 2, START + 301, 300.0)  # the lease expired
    assert second is not None
    object_watch.release_source(engine, first, 1, START + 400, error=None, live=0, newest_seen_at=START - 10)
    object_watch.release_source(engine, second, 2, START + 500, error=None, live=0, newest_seen_at=START - 20)
    (row,) = object_watch.source_rows(engine)
    assert row["newest_seen_at"] == START - 10  # only ever grows
    third = object_watch.claim_source(engine, "batch", "api", 3, START + 600, 300.0)
    assert third is not None
    object_watch.note_pages(engine, third, 3, START + 850, 300.0, {"batch_1": START}, [])
    assert object_watch.claim_source(engine, "batch", "api", 4, START + 1000, 300.0) is None  # renewed
    assert object_watch.listed_live_objects(engine, "batch", "api") == {"batch_1": START}


def test_two_syncs_at_once_never_page_one_list_together_and_lose_nothing(api: Api, engine: Engine) -> None:
    api.world.populate_kinds(batches=60, fine_tuning_jobs=20, history_s=DAY)
    results: list[SyncSummary] = []
    workers = [threading.Thread(target=lambda: results.append(api.sync(engine))) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    # Each list was followed by one sync or by both one after the other (a lease is held while paging only).
    for kind in LISTED_KINDS:
        states = sorted(result.sources[kind] for result in results)
        assert states in (["busy", "ok"], ["ok", "ok"]), (kind, states)
    assert _current(engine, "batch") == _served(api, "batch")
    assert verify_chain(engine).ok
    assert projections.verify_rebuild(engine).clean


def test_faults_on_the_new_routes_are_retried_and_lose_nothing(api: Api, engine: Engine) -> None:
    api.world.populate_kinds(batches=150, fine_tuning_jobs=8, history_s=DAY)
    ids = api.world.populate_kinds(responses=6, history_s=60.0).responses
    object_watch.watch_objects(engine, "response", ids, START)
    routes = frozenset({"list_batches", "retrieve_batch", "list_fine_tuning_jobs", "retrieve_response"})
    faults = Faults(server_error=Trigger(every=3), malformed=Trigger(every=5), retry_after_s=0.0, routes=routes)
    api.server.set_faults(faults)
    # One worker: the requests are then numbered in order, and no four attempts in a row can all fall on a
    # multiple of 3 or 5 (with more workers, others' requests could take the attempts in between).
    summary = api.sync(engine, concurrency=1)
    assert summary.outcome == "ok", summary.errors
    assert summary.retries > 0 and api.server.stats.faults
    assert _current(engine, "batch") == _served(api, "batch")
    assert _current(engine, "fine_tuning.job") == _served(api, "fine_tuning.job")
    assert set(_current(engine, "response")) == set(ids)


def test_a_list_that_keeps_failing_fails_the_sync_and_keeps_nothing_of_it(api: Api, engine: Engine) -> None:
    api.world.populate_kinds(batches=150, fine_tuning_jobs=3, history_s=DAY)
    api.server.set_faults(Faults(server_error=Trigger(p=1.0), routes=frozenset({"list_batches"})))
    summary = api.sync(engine)
    assert summary.outcome == "partial" and summary.sources == {"batch": "failed", "fine_tuning.job": "ok"}
    assert [error["kind"] for error in summary.errors] == ["batch"]
    assert _current(engine, "batch") == {}
    assert len(_current(engine, "fine_tuning.job")) == 3
    (source,) = [row for row in object_watch.source_rows(engine) if row["kind"] == "batch"]
    assert source["last_error"] and source["last_synced_at"] is None
    api.server.set_faults(Faults())
    assert api.sync(engine).sources["batch"] == "ok"
    assert _current(engine, "batch") == _served(api, "batch")


def test_a_redaction_policy_applies_to_every_kind_the_sync_records(api: Api, engine: Engine) -> None:
    api.world.populate_kinds(batches=5, history_s=DAY)
    ids = api.world.populate_kinds(responses=3, history_s=60.0).responses
    object_watch.watch_objects(engine, "response", ids, START)
    policy = load_policy(options=["model=hash", "background=drop"], salt=b"kinds-salt-0123456789")
    summary = api.sync(engine, redaction=policy)
    assert summary.outcome == "ok"
    models = {row["model"] for row in _rows(engine, "SELECT model FROM object_current")}
    assert models and all(model.startswith("hmac-sha256:") for model in models)
    first_seen = _rows(engine, "SELECT data FROM run_events WHERE event_type = 'first_seen' AND kind = 'response'")
    assert first_seen and not any('"background"' in str(row["data"]) for row in first_seen)
    sources = {row["s"] for row in _rows(engine, "SELECT DISTINCT CAST(source AS TEXT) AS s FROM run_events")}
    assert all(json.loads(source)["redaction"] == policy.fingerprint for source in sources)


# --- background responses: polled by id -------------------------------------------------------------------


def test_watched_responses_are_polled_until_they_end_then_never_again(api: Api, engine: Engine) -> None:
    ids = api.world.populate_kinds(responses=8, history_s=30.0).responses
    added, _ = object_watch.watch_objects(engine, "response", ids, START)
    assert added == 8
    first = api.sync(engine, listed_kinds=())
    assert first.objects_polled == 8 and first.requests == 8
    _sync_until_all_ended(api, engine, step_s=20.0, listed_kinds=())
    assert set(_current(engine, "response")) == set(ids)
    watched = {row["object_id"]: row for row in object_watch.watched_objects_rows(engine)}
    assert {row["status"] for row in watched.values()} == {"ended"}
    assert {row["last_status"] for row in watched.values()} <= {"completed", "failed", "cancelled", "incomplete"}
    idle = api.sync(engine, listed_kinds=())
    assert (idle.objects_polled, idle.requests, idle.events_appended) == (0, 0, 0)


def test_watched_responses_are_polled_before_threads_when_time_runs_short(api: Api, engine: Engine) -> None:
    watchlist.watch(engine, api.world.populate(40, 1, history_s=60.0), START)
    ids = api.world.populate_kinds(responses=5, history_s=60.0).responses
    object_watch.watch_objects(engine, "response", ids, START)
    ticks = iter(range(1_000_000))
    client = openai.OpenAI(base_url=api.server.base_url, api_key=API_KEY, max_retries=0)
    try:
        options = SyncOptions(cadence=None, listed_kinds=(), max_runtime=3.0, claim_size=5, concurrency=1)
        summary = sync(engine, RunsApi(client, clock=api.clock.now), Caller(RateLimiter(None)), options,
                       now=lambda: START + next(ticks))  # fmt: skip
    finally:
        client.close()
    assert summary.stopped_early
    assert summary.objects_polled == 5 and summary.threads_polled < 40


def test_a_late_sync_records_a_poll_gap_on_every_live_listed_and_watched_object(api: Api, engine: Engine) -> None:
    api.world.populate_kinds(batches=30, history_s=DAY)
    ids = api.world.populate_kinds(responses=4, history_s=10.0).responses
    object_watch.watch_objects(engine, "response", ids, START)
    api.sync(engine, cadence=60.0)
    live = {object_id for object_id, status in _current(engine, "batch").items() if status not in BATCH.terminal}
    live_responses = {
        object_id for object_id, status in _current(engine, "response").items() if status in ("queued", "in_progress")
    }
    assert live and live_responses
    api.clock.advance(600)  # ten cadences late
    api.sync(engine, cadence=60.0)
    gaps = _rows(
        engine, "SELECT run_id, kind, CAST(data AS TEXT) AS data FROM run_events WHERE event_type = 'poll_gap'"
    )
    assert {row["run_id"] for row in gaps if row["kind"] == "batch"} == live
    assert {row["run_id"] for row in gaps if row["kind"] == "response"} == live_responses
    assert all(json.loads(row["data"])["until"] - json.loads(row["data"])["since"] == 600 for row in gaps)
    # On time: no gap.
    api.clock.advance(60)
    api.sync(engine, cadence=60.0)
    assert len(_rows(engine, "SELECT seq FROM run_events WHERE event_type = 'poll_gap'")) == len(gaps)


def test_a_sync_finding_every_watched_response_held_by_another_says_busy(api: Api, engine: Engine) -> None:
    ids = api.world.populate_kinds(responses=3, history_s=10.0).responses
    object_watch.watch_objects(engine, "response", ids, START)
    assert len(object_watch.claim_objects(engine, 99, START, START, 300.0, 10)) == 3
    summary = api.sync(engine, listed_kinds=())
    assert (summary.outcome, summary.objects_polled, summary.requests) == ("busy", 0, 0)


def test_a_response_gone_past_the_apis_retention_while_live_is_recorded_lost(api: Api, engine: Engine) -> None:
    response = api.world.responses.create(model="gpt-4.1", background=True, input="Summarise the report")
    object_watch.watch_objects(engine, "response", [response["id"]], START)
    api.sync(engine, listed_kinds=())
    assert _current(engine, "response") == {response["id"]: response["status"]}
    api.clock.advance(3 * 3600.0)  # it ended and was forgotten by the API before the next poll
    summary = api.sync(engine, listed_kinds=())
    assert summary.objects_gone == [response["id"]] and summary.outcome == "ok"
    events = _rows(engine, "SELECT event_type FROM run_events WHERE run_id = :id ORDER BY seq", id=response["id"])
    assert events[-1]["event_type"] == "run_lost"
    (row,) = object_watch.watched_objects_rows(engine)
    assert row["status"] == "gone"


def test_a_response_id_the_api_never_knew_is_gone_without_an_event(api: Api, engine: Engine) -> None:
    object_watch.watch_objects(engine, "response", ["resp_never_created"], START)
    summary = api.sync(engine, listed_kinds=())
    assert summary.objects_gone == ["resp_never_created"]
    assert _rows(engine, "SELECT COUNT(*) AS n FROM run_events")[0]["n"] == 0


def test_watching_a_response_again_revives_it_and_unwatch_removes_it(engine: Engine) -> None:
    assert object_watch.watch_objects(engine, "response", ["resp_a", "resp_b", "resp_a"], START) == (2, 0)
    assert object_watch.watch_objects(engine, "response", ["resp_a"], START) == (0, 0)
    assert object_watch.unwatch_objects(engine, "response", ["resp_b", "resp_zzz"]) == 1
    assert [row["object_id"] for row in object_watch.watched_objects_rows(engine)] == ["resp_a"]


# --- the CLI ---------------------------------------------------------------------------------------------


def test_watch_response_and_sync_from_the_command_line(
    api: Api, engine: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = api.world.populate_kinds(responses=3, batches=5, history_s=60.0).responses
    runner = CliRunner()
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": api.server.base_url, "OPENAI_PROJECT_ID": "proj_demo"}
    watched = runner.invoke(cli, ["--database-url", db_url, "watch", "--response", *ids], env=env)
    assert watched.exit_code == 0 and "watching 3 new response(s)" in watched.output
    result = runner.invoke(cli, ["--database-url", db_url, "sync", "--json", "--no-fine-tuning-jobs"], env=env)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["objects_polled"] == 3 and summary["sources"] == {"batch": "ok"}
    assert API_KEY not in result.output
    listed = runner.invoke(cli, ["--database-url", db_url, "runs", "list", "--kind", "batch", "--format", "json"])
    assert listed.exit_code == 0 and len(json.loads(listed.stdout)) == 5
    table = runner.invoke(cli, ["--database-url", db_url, "watched", "--response"])
    assert table.exit_code == 0 and all(response_id in table.output for response_id in ids)
    # The project is part of the events' provenance, and of which list state the sync keeps.
    sources = {
        json.loads(row["s"])["project"] for row in _rows(engine, "SELECT CAST(source AS TEXT) AS s FROM run_events")
    }
    assert sources == {"proj_demo"}
    identity = list_identity(api.server.base_url, "proj_demo", API_KEY)
    assert [row["api"] for row in object_watch.source_rows(engine)] == [identity]
    assert API_KEY not in identity

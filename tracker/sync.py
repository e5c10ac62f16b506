"""``tracker sync``: poll the watched threads' runs (and batches, fine-tuning jobs, watched responses) once.

Theory of operation. A sync records itself in ``sync_runs`` and then, until no due thread is left (or
``max_runtime`` has passed), leases threads ``claim_size`` at a time (the next ones while the workers
still poll the last), polls them on ``concurrency`` worker threads and appends what they returned from
this thread, in batches, with ``{"sync": <id>, "base_url": <the server>}`` as the events'
source. Per watched thread (:func:`poll_thread`):

1. list its runs newest first, 100 a page, and stop paging at the first page that reaches a run the
   ledger already knows as terminal (the list returns whole run objects: those are the snapshots);
2. retrieve, one by one, the runs the ledger knows as live that the pages did not cover.

A thread where nothing changed therefore costs one request, and appends nothing: the diff finds every
snapshot unchanged. The same workers page through the lists of batches and fine-tuning jobs (one sync
at a time per list, by lease) and retrieve the watched background responses (leased like threads): see
:mod:`tracker.sync_objects`. Two syncs at once split the threads by lease; should they ever poll the same run,
the ledger's append lock and per-run version make the second one's snapshots unchanged or stale.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Engine

from tracker.diff import Signal
from tracker.events import POLL_GAP, RUN_LOST, source_json
from tracker.redaction import RedactionPolicy, redact_snapshots, redaction_source
from tracker.snapshots import Snapshot, read_page_leniently
from tracker.sources.openai_runs import ApiFailure, Caller, GaveUp, RunsApi, assistants_api_allowed
from tracker.sources.paging import page_of, pages
from tracker.store import object_watch
from tracker.store.ledger import append_snapshots
from tracker.store.object_watch import ClaimedSource, ObjectOutcome
from tracker.store.watchlist import Claimed, ThreadOutcome, claim, due_count, finish_sync, release, start_sync
from tracker.sync_objects import (
    LISTED_KINDS,
    ListedPoll,
    ObjectPoll,
    PageChannel,
    SourcePoll,
    list_identity,
    poll_listed,
    poll_object,
    poll_source,
    split_live,
)


@dataclass(frozen=True)
class SyncOptions:
    concurrency: int = 8
    page_size: int = 100
    lease_s: float = 300.0
    # Threads leased per claim (default: 4 x concurrency); the next claim overlaps with polling. Small
    # enough that syncs running at once split the threads between them.
    claim_size: int | None = None
    max_runtime: float | None = None
    idle_after: float = 7 * 86400.0
    idle_every: float = 3600.0
    append_batch: int = 2000
    # Also record run steps (thread.run.step objects) of the runs not known to have ended.
    steps: bool = False
    # Expected seconds between syncs (cron's period). A thread polled more than 1.5 cadences after its
    # last sync gets a poll_gap event on each of its live runs: what happened in between is only bounded.
    cadence: float | None = 60.0
    # Applied to every run and step before the diff sees it (docs/redaction.md); named in the events' source.
    redaction: RedactionPolicy | None = None
    # The lists followed (batches, fine-tuning jobs of the configured project), and whether the watched
    # objects (background responses) are polled.
    listed_kinds: tuple[str, ...] = LISTED_KINDS
    watched_objects: bool = True


@dataclass
class SyncSummary:
    """What one sync did (``--json`` prints it as one object)."""

    sync_id: int = 0
    outcome: str = "ok"  # ok, partial (something failed), busy (another sync holds everything due)
    threads_polled: int = 0
    threads_failed: int = 0
    threads_gone: list[str] = field(default_factory=list)
    # Lists followed: kind -> "ok", "busy" (another sync holds it), "not served" (404), "not permitted" (403)
    # or "failed".
    sources: dict[str, str] = field(default_factory=dict)
    objects_polled: int = 0  # watched objects (responses) retrieved
    objects_failed: int = 0
    objects_gone: list[str] = field(default_factory=list)
    listed_retrieved: int = 0  # known-live listed objects the pages did not cover, retrieved one by one
    listed_lost: list[str] = field(default_factory=list)  # ... of which the API no longer has (run_lost)
    requests: int = 0
    retries: int = 0
    snapshots: int = 0
    events_appended: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    stopped_early: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ThreadPoll:
    """One thread's snapshots, what was learned without a snapshot, and how polling it ended."""

    snapshots: list[Snapshot]
    outcome: ThreadOutcome
    signals: list[Signal] = field(default_factory=list)


def poll_thread(
    api: RunsApi,
    caller: Caller,
    claimed: Claimed,
    page_size: int,
    cadence: float | None = None,
    steps: bool = False,
) -> ThreadPoll:
    """Steps 1 and 2 of the module docstring for one thread (3 with ``steps``)."""
    thread_id = claimed.thread_id
    known = claimed.known_runs
    signals = _poll_gaps(claimed, api.now(), cadence)
    snapshots: list[Snapshot] = []
    seen: set[str] = set()
    newest: float | None = None
    try:
        runs_after = partial(api.list_runs, thread_id, limit=page_size)
        for good in pages(caller, runs_after, f"run list of {thread_id}"):
            for snapshot in good:
                snapshots.append(snapshot)
                seen.add(snapshot.object_id)
                newest = max(newest or snapshot.created_at, snapshot.created_at)
            if any(known.get(snapshot.object_id) for snapshot in good):
                break  # reached runs the ledger knows as ended: older pages hold nothing new
        for run_id, terminal in known.items():
            if terminal or run_id in seen:
                continue
            try:
                body, arrived_at = caller.call(partial(_retrieved, api, thread_id, run_id))
            except ApiFailure as failure:
                if failure.kind == "not_found":  # a live run the API no longer returns
                    signals.append(Signal(RUN_KIND, run_id, thread_id, RUN_LOST, api.now(), {"reason": "not_found"}))
                    continue
                raise
            snapshots.extend(read_page_leniently(body, arrived_at)[0])
        if steps:
            # 3. the steps of every run not already known to have ended (new, live, or ended just now)
            for run_id in [snapshot.object_id for snapshot in snapshots if not known.get(snapshot.object_id)]:
                snapshots.extend(_steps(api, caller, thread_id, run_id, page_size))
    except (ApiFailure, GaveUp) as failure:
        # Nothing of a failed poll is kept: appending the pages read so far would make the next sync stop
        # at them (known, ended) and never read the older pages it missed. The next sync polls it whole.
        gone = isinstance(failure, ApiFailure) and failure.kind == "not_found" and not snapshots
        return ThreadPoll([], ThreadOutcome(thread_id, 0, None, error=str(failure), gone=gone))
    live = {snapshot.object_id for snapshot in snapshots if snapshot.kind == RUN_KIND and not snapshot.ended}
    lost = {signal.object_id for signal in signals if signal.event_type == RUN_LOST}
    live |= {run_id for run_id, terminal in known.items() if not terminal and run_id not in seen | lost}
    return ThreadPoll(snapshots, ThreadOutcome(thread_id, len(live), newest), signals)


RUN_KIND = "thread.run"
_LISTED_PAGES_IN_FLIGHT = 8


def _steps(api: RunsApi, caller: Caller, thread_id: str, run_id: str, page_size: int) -> list[Snapshot]:
    """Every step of a run, as snapshots (``thread.run.step``)."""
    steps_after = partial(api.list_steps, thread_id, run_id, limit=page_size)
    return [step for good in pages(caller, steps_after, f"steps of {run_id}") for step in good]


def _poll_gaps(claimed: Claimed, now: float, cadence: float | None) -> list[Signal]:
    """A ``poll_gap`` for each live run of a thread last synced more than 1.5 cadences ago."""
    live = sorted(run_id for run_id, terminal in claimed.known_runs.items() if not terminal)
    return poll_gaps(RUN_KIND, claimed.thread_id, live, claimed.last_synced_at, now, cadence)


def poll_gaps(
    kind: str, group_id: str | None, live: list[str], since: float | None, now: float, cadence: float | None
) -> list[Signal]:
    """A ``poll_gap`` for each of the ``live`` objects, when their last poll (``since``) is more than 1.5
    cadences before ``now``: what happened in between is only bounded."""
    if cadence is None or since is None or now - since <= 1.5 * cadence:
        return []
    data = {"since": since, "until": round(now, 3), "cadence_s": cadence}
    return [Signal(kind, object_id, group_id, POLL_GAP, round(now, 3), dict(data)) for object_id in live]


def _note_thread(summary: SyncSummary, outcome: ThreadOutcome) -> None:
    summary.threads_polled += 1
    if outcome.gone:
        summary.threads_gone.append(outcome.thread_id)
    elif outcome.error is not None:
        summary.threads_failed += 1
        summary.errors.append({"thread_id": outcome.thread_id, "error": outcome.error})


def _note_object(summary: SyncSummary, outcome: ObjectOutcome) -> None:
    summary.objects_polled += 1
    if outcome.gone:
        summary.objects_gone.append(outcome.object_id)
    elif outcome.error is not None:
        summary.objects_failed += 1
        summary.errors.append({"kind": outcome.kind, "object_id": outcome.object_id, "error": outcome.error})


def _note_listed(summary: SyncSummary, poll: ListedPoll) -> None:
    summary.listed_retrieved += 1
    if poll.gone:
        summary.listed_lost.append(poll.object_id)
    if poll.error is not None:
        summary.objects_failed += 1
        summary.errors.append({"kind": poll.kind, "object_id": poll.object_id, "error": poll.error})


def _note_source(summary: SyncSummary, poll: SourcePoll) -> None:
    summary.sources[poll.kind] = poll.state
    if poll.state == "failed":
        summary.errors.append({"kind": poll.kind, "error": str(poll.error)})
    for reason in poll.rejected:  # objects of the pages that could not be read (the rest were kept)
        summary.objects_failed += 1
        summary.errors.append({"kind": poll.kind, "error": reason})


def public_url(url: str) -> str:
    """``url`` without user, password, query or fragment: what may be stored and printed."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def _retrieved(api: RunsApi, thread_id: str, run_id: str) -> tuple[dict[str, Any], float]:
    return page_of(api.retrieve_run(thread_id, run_id))


def sync(
    engine: Engine,
    api: RunsApi,
    caller: Caller,
    options: SyncOptions = SyncOptions(),
    now: Callable[[], float] = time.time,
    on_progress: Callable[[int], None] = lambda polled: None,
) -> SyncSummary:
    """One sync of every due watched thread (see the module docstring)."""
    summary = SyncSummary()
    started = now()
    base_url = public_url(api.base_url)
    summary.sync_id = start_sync(engine, started, socket.gethostname(), os.getpid(), base_url)
    # The server (and project) is named in every event too, so an exported event says where it came from on
    # its own.
    origin = {"base_url": base_url, **({"project": api.project} if api.project else {})}
    api_identity = list_identity(base_url, api.project, api.api_key)
    source = source_json(redaction_source(options.redaction, {"sync": summary.sync_id, **origin}))
    pending: list[Snapshot] = []
    signals: list[Signal] = []
    outcomes: list[ThreadOutcome] = []
    object_outcomes: list[ObjectOutcome] = []
    source_outcomes: list[SourcePoll] = []

    def flush(final: bool = False) -> None:
        nonlocal pending, signals, outcomes, object_outcomes, source_outcomes
        if (pending or signals) and (final or len(pending) >= options.append_batch):
            result = append_snapshots(engine, pending, now, source, signals)
            summary.snapshots += result.snapshots
            summary.events_appended += result.events_appended
            pending, signals = [], []
        if final or not (pending or signals):
            # Released only once their snapshots are in the ledger.
            if outcomes:
                release(engine, summary.sync_id, outcomes, now(), options.idle_after, options.idle_every)
            if object_outcomes:
                object_watch.release_objects(engine, summary.sync_id, object_outcomes, now())
            for polled in source_outcomes:
                object_watch.release_source(
                    engine,
                    polled.source,
                    summary.sync_id,
                    now(),
                    error=polled.error,
                    live=polled.live,
                    newest_seen_at=polled.newest_seen_at,
                )
            outcomes, object_outcomes, source_outcomes = [], [], []

    claim_size = options.claim_size or 4 * options.concurrency
    claimed_any = False
    in_flight: set[Future[ThreadPoll | SourcePoll | ObjectPoll | ListedPoll]] = set()
    exhausted = objects_exhausted = False
    # A list's pages come through this channel as they are read and are appended meanwhile.
    channel = PageChannel(_LISTED_PAGES_IN_FLIGHT)
    listing = 0  # list polls still running

    def take_pages() -> None:
        """Append-to-be the pages read so far; record which objects they show live or ended, and keep the
        lists' leases while they are read."""
        by_list: dict[ClaimedSource, list[Snapshot]] = {}
        for claimed_list, page in channel.drain():
            pending.extend(redact_snapshots(options.redaction, page))
            by_list.setdefault(claimed_list, []).extend(page)
        for claimed_list, snapshots in by_list.items():
            live, ended = split_live(snapshots)
            object_watch.note_pages(engine, claimed_list, summary.sync_id, now(), options.lease_s, live, ended)

    def out_of_time() -> bool:
        if options.max_runtime is not None and now() - started > options.max_runtime:
            summary.stopped_early = True
        return summary.stopped_early

    pool = ThreadPoolExecutor(options.concurrency, thread_name_prefix="tracker-poll")
    try:
        with assistants_api_allowed():
            for kind in options.listed_kinds:  # the lists first: each is one long sequence of pages
                if out_of_time():
                    break
                claimed_source = object_watch.claim_source(
                    engine, kind, api_identity, summary.sync_id, now(), options.lease_s
                )
                if claimed_source is None:
                    summary.sources[kind] = "busy"
                    continue
                claimed_any = True
                known_live = object_watch.listed_live_objects(engine, kind, api_identity)
                signals.extend(
                    poll_gaps(kind, None, sorted(known_live), claimed_source.last_synced_at, now(), options.cadence)
                )
                listing += 1
                in_flight.add(
                    pool.submit(
                        poll_source,
                        api,
                        caller,
                        claimed_source,
                        options.page_size,
                        known_live,
                        channel.deliver,
                        out_of_time,
                    )
                )
            objects_exhausted = not options.watched_objects
            while True:
                # The watched responses first: the API forgets them soon after they end, so under --max-runtime
                # they must not wait behind thousands of threads. Keep the workers busy: claim the next ones
                # while the claimed ones are being polled.
                while not objects_exhausted and len(in_flight) < 2 * options.concurrency:
                    if out_of_time():
                        objects_exhausted = exhausted = True
                        break
                    claimed = object_watch.claim_objects(
                        engine, summary.sync_id, started, now(), options.lease_s, claim_size
                    )
                    if not claimed:
                        objects_exhausted = True
                        break
                    claimed_any = True
                    for one in claimed:
                        if one.known_live:
                            signals.extend(
                                poll_gaps(one.kind, None, [one.object_id], one.last_synced_at, now(), options.cadence)
                            )
                    in_flight |= {pool.submit(poll_object, api, caller, one) for one in claimed}
                # Then the watched threads, claimed the same way.
                while objects_exhausted and not exhausted and len(in_flight) < 2 * options.concurrency:
                    if out_of_time():
                        exhausted = True
                        break
                    batch = claim(engine, summary.sync_id, started, now(), options.lease_s, claim_size)
                    if not batch:
                        exhausted = True
                        break
                    claimed_any = True
                    in_flight |= {
                        pool.submit(
                            poll_thread, api, caller, claimed, options.page_size, options.cadence, options.steps
                        )
                        for claimed in batch
                    }
                if not in_flight:
                    break
                # While a list is being read, wake up often enough to take its pages as they come.
                done, in_flight = wait(in_flight, timeout=0.05 if listing else None, return_when=FIRST_COMPLETED)
                take_pages()
                for future in done:
                    poll = future.result()
                    if isinstance(poll, SourcePoll):  # its pages came through the channel
                        listing -= 1
                        _note_source(summary, poll)
                        source_outcomes.append(poll)
                        # The known-live objects its pages did not cover, retrieved on all the workers.
                        in_flight |= {pool.submit(poll_listed, api, caller, poll.kind, one) for one in poll.to_retrieve}
                        continue
                    pending.extend(redact_snapshots(options.redaction, poll.snapshots))
                    signals.extend(poll.signals)
                    if isinstance(poll, ListedPoll):
                        _note_listed(summary, poll)
                        if poll.gone or any(snapshot.ended for snapshot in poll.snapshots):
                            object_watch.note_listed(engine, poll.kind, api_identity, {}, [poll.object_id])
                    elif isinstance(poll, ObjectPoll):
                        _note_object(summary, poll.outcome)
                        object_outcomes.append(poll.outcome)
                    else:
                        _note_thread(summary, poll.outcome)
                        outcomes.append(poll.outcome)
                        on_progress(summary.threads_polled)
                flush()
            flush(final=True)
    finally:
        # On an error (or Ctrl-C) no one drains the channel any more: a list reader waiting on it gives up,
        # and polls not started are dropped, so the shutdown never waits on a full channel.
        channel.close()
        pool.shutdown(wait=True, cancel_futures=True)
    summary.requests, summary.retries = caller.requests, caller.retries
    if not claimed_any:
        due, held = due_count(engine, now())
        held_responses = object_watch.held_objects(engine, now()) if options.watched_objects else 0
        # Nothing claimed: busy when another sync holds every due thread, a list this sync would follow,
        # or watched responses.
        if (due and held == due) or "busy" in summary.sources.values() or held_responses:
            summary.outcome = "busy"
    if summary.threads_failed or summary.objects_failed or "failed" in summary.sources.values():
        summary.outcome = "partial"
    finish_sync(
        engine,
        summary.sync_id,
        now(),
        summary.outcome,
        summary.errors,
        threads_polled=summary.threads_polled,
        threads_failed=summary.threads_failed,
        requests=summary.requests,
        retries=summary.retries,
        snapshots=summary.snapshots,
        events_appended=summary.events_appended,
        objects_polled=summary.objects_polled,
        sources=json.dumps(summary.sources, sort_keys=True) if summary.sources else None,
    )
    return summary

"""What one sync polls besides threads: the list endpoints it follows, and the objects it polls by id.

Batches and fine-tuning jobs (:func:`poll_source`), much as runs are polled per thread:

1. list them newest first, a page at a time, until a page reaches an object created more than
   :data:`STOP_MARGIN_S` before the newest one the last complete poll of this list saw
   (``sync_sources.newest_seen_at``): every older object was on the pages read then (the margin covers
   objects listed a little out of order). The first poll of a list reads it to its end. From there on, read one more
   page only while paging on is expected to cost fewer requests than retrieving the known-live objects
   still unseen one by one: the list is ordered by ``created_at`` and the ledger knows theirs, so each
   one's page is estimated from how much creation time the pages read so far spanned on average, and
   paging on pays when some number ``k`` of further pages would cover more than ``k`` of them;
2. retrieve the known-live objects the pages did not cover, each on its own (:func:`poll_listed`, spread
   over the workers); one the API no longer has (404) gets a ``run_lost`` event. Known-live means: this
   list of this API (:func:`list_identity`: server, project, key) showed it live and has not shown it
   ended since (``listed_live``), whatever the ledger learned elsewhere (a file, another project).

The stop rule rests on what this list's own polls saw, never on what the ledger learned elsewhere (an
ingested export, another project): those cannot make a sync skip the objects below them. A list where
nothing changed costs one request, and a project with many live batches (all among the newest) about a
page per hundred of them. An object on a page that cannot be read is reported and the rest of the page
kept. A server that does not serve the list (404 on its first page), or a key not allowed to read it
(403), is reported as such, not as a failure.

Background responses (:func:`poll_object`) have no list: each watched one is retrieved every sync until
it is seen in a terminal status.
"""

from __future__ import annotations

import hashlib
import math
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from tracker.diff import Signal
from tracker.events import RUN_LOST
from tracker.snapshots import Snapshot, SnapshotError, read_page_leniently
from tracker.sources.openai_runs import ApiFailure, Caller, Fetched, GaveUp, RunsApi
from tracker.sources.paging import page_of, read_snapshots
from tracker.store.object_watch import ClaimedObject, ClaimedSource, ObjectOutcome

# The kinds `tracker sync` follows through a list endpoint.
LISTED_KINDS = ("batch", "fine_tuning.job")

OK, NOT_SERVED, NOT_PERMITTED, FAILED = "ok", "not served", "not permitted", "failed"


@dataclass
class SourcePoll:
    """One list's pages as snapshots, the known-live objects left to retrieve, and how it ended."""

    source: ClaimedSource
    snapshots: list[Snapshot] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # why each unreadable object was left out
    to_retrieve: list[str] = field(default_factory=list)
    live: int = 0
    newest_seen_at: float | None = None  # to record: set only by a complete poll
    state: str = OK
    error: str | None = None
    complete: bool = True

    @property
    def kind(self) -> str:
        return self.source.kind


@dataclass
class ListedPoll:
    """One known-live listed object, retrieved: its snapshot, or its loss, or the error."""

    kind: str
    object_id: str
    snapshots: list[Snapshot] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)
    error: str | None = None
    gone: bool = False  # the API answered 404


@dataclass
class ObjectPoll:
    """One object's snapshot (none when the poll failed), a loss, and the outcome to release it with."""

    snapshots: list[Snapshot]
    outcome: ObjectOutcome
    signals: list[Signal] = field(default_factory=list)


def list_identity(base_url: str, project: str | None, api_key: str) -> str:
    """Whose list a sync reads: the server, the project (when named) and a fingerprint of the key.

    A key belongs to one project, and the lists show that project's objects, so two keys of different
    projects against one server are two lists even without OPENAI_PROJECT_ID. The fingerprint is 12 hex
    digits of the key's SHA-256: it tells keys apart and cannot give the key back. A new key is a new list:
    its first poll reads it whole.
    """
    fingerprint = hashlib.sha256(api_key.encode()).hexdigest()[:12]
    return f"{base_url}#{project or ''}#key:{fingerprint}"


def split_live(snapshots: list[Snapshot]) -> tuple[dict[str, float], list[str]]:
    """The objects ``snapshots`` show live (id -> created_at) and those they show ended."""
    live: dict[str, float] = {}
    ended: list[str] = []
    for snapshot in snapshots:
        if snapshot.ended:
            ended.append(snapshot.object_id)
        else:
            live[snapshot.object_id] = snapshot.created_at
    return live, ended


class ListingCancelled(Exception):
    """The sync stopped while a list was being read (an error, Ctrl-C): the reader gives up its page."""


class PageChannel:
    """A list's pages on their way from the worker reading them to the thread appending them.

    Bounded, so that a list poll waits while the appends catch up (a project's whole history is never in
    memory at once); closed when the sync stops, so that a reader waiting on a full channel gives up
    instead of holding the sync's shutdown forever.
    """

    def __init__(self, size: int) -> None:
        self._queue: queue.Queue[tuple[ClaimedSource, list[Snapshot]]] = queue.Queue(maxsize=size)
        self._closed = threading.Event()

    def deliver(self, source: ClaimedSource, snapshots: list[Snapshot]) -> None:
        while True:
            if self._closed.is_set():
                raise ListingCancelled
            try:
                self._queue.put((source, snapshots), timeout=0.1)
                return
            except queue.Full:
                continue

    def drain(self) -> list[tuple[ClaimedSource, list[Snapshot]]]:
        drained = []
        while True:
            try:
                drained.append(self._queue.get_nowait())
            except queue.Empty:
                return drained

    def close(self) -> None:
        self._closed.set()


# How far below the newest created_at an earlier poll saw the paging may stop: an object listed a little out
# of order (clock skew between the API's hosts, a replica behind) is still on the pages read.
STOP_MARGIN_S = 300.0


def poll_source(
    api: RunsApi,
    caller: Caller,
    source: ClaimedSource,
    page_size: int,
    known_live: dict[str, float],
    deliver: Callable[[ClaimedSource, list[Snapshot]], None] | None = None,
    out_of_time: Callable[[], bool] = lambda: False,
) -> SourcePoll:
    """Step 1 of the module docstring for one list; ``known_live``: id -> ``created_at`` of the objects
    this list of this API showed live and has not shown ended since. The objects left for step 2 are in
    :attr:`SourcePoll.to_retrieve`.

    ``deliver`` gets each page's snapshots as soon as it is read (the sync appends them while the next
    pages come); without it they are collected in :attr:`SourcePoll.snapshots`. Pages delivered before a
    failure are kept: harmless, since the stop rule rests on ``newest_seen_at``, which only a complete
    poll moves. A poll is not complete when it fails, when ``out_of_time`` stops it, or when an object
    of its pages could not be read (so that the next poll reads it again, and reports it again, until it
    reads).
    """
    kind = source.kind
    poll = SourcePoll(source)
    seen: set[str] = set()
    live: set[str] = set()
    first: Snapshot | None = None
    last: Snapshot | None = None
    newest: float | None = None
    pages_read = 0
    reached_seen = False
    stop_below = None if source.newest_seen_at is None else source.newest_seen_at - STOP_MARGIN_S
    try:
        for good, bad in _lenient_pages(caller, partial(api.list_objects, kind, limit=page_size), f"{kind} list"):
            pages_read += 1
            if deliver is None:
                poll.snapshots.extend(good)
            elif good:
                deliver(source, good)
            poll.rejected.extend(bad)
            seen.update(snapshot.object_id for snapshot in good)
            live.update(snapshot.object_id for snapshot in good if not snapshot.ended)
            if good:
                first, last = first or good[0], good[-1]
                created = [snapshot.created_at for snapshot in good]
                newest = max(newest or created[0], *created)
                # Past here the older pages hold nothing new: only known-live objects are left to see.
                reached_seen = reached_seen or (stop_below is not None and min(created) < stop_below)
            if reached_seen and not _paging_on_pays(first, last, pages_read, known_live, seen):
                break
            if out_of_time():
                poll.complete = False
                break
    except (ApiFailure, GaveUp) as failure:
        state = FAILED
        if pages_read == 0 and isinstance(failure, ApiFailure):
            state = {404: NOT_SERVED, 403: NOT_PERMITTED}.get(failure.status or 0, FAILED)
        return SourcePoll(source, rejected=poll.rejected, state=state, error=str(failure), complete=False)
    if poll.complete and not poll.rejected:
        poll.newest_seen_at = newest
    poll.to_retrieve = sorted(known_live.keys() - seen)
    poll.live = len(live) + len(poll.to_retrieve)
    return poll


def _lenient_pages(
    caller: Caller, fetch: Callable[[str | None], Fetched], what: str
) -> Iterator[tuple[list[Snapshot], list[str]]]:
    """Each page of a list, newest first: its readable objects, and why each other one is not.

    The next page starts after the page's ``last_id``, or its last object's id (the fine-tuning job list
    has no ``last_id``), or its last readable object's; a page that says there is more but names no
    cursor, or names the same cursor again, is malformed (never a silent end of the list).
    """
    after: str | None = None
    while True:
        page, good, errors = caller.call(partial(_read_page, fetch, after, what))
        yield good, [f"{what}: {error}" for error in errors]
        if not page.get("has_more"):
            return
        data = page.get("data")
        last = data[-1] if isinstance(data, list) and data else None
        cursor = page.get("last_id") or (last.get("id") if isinstance(last, dict) else None)
        if not isinstance(cursor, str) or not cursor:
            cursor = good[-1].object_id if good else None
        if cursor is None or cursor == after:
            raise ApiFailure("malformed", f"{what}: a page says there is more but names no new cursor")
        after = cursor


def _read_page(
    fetch: Callable[[str | None], Fetched], after: str | None, what: str
) -> tuple[dict[str, Any], list[Snapshot], list[SnapshotError]]:
    """One page, fetched and read; a page that is not a list page is malformed (and so retried)."""
    page, arrived_at = page_of(fetch(after))
    try:
        good, errors = read_page_leniently(page, arrived_at)
    except SnapshotError as exc:
        raise ApiFailure("malformed", f"{what}: {exc}") from None
    return page, good, errors


def _paging_on_pays(
    first: Snapshot | None, last: Snapshot | None, pages_read: int, known_live: dict[str, float], seen: set[str]
) -> bool:
    """Whether some ``k`` more pages are expected to cover more than ``k`` unseen known-live objects.

    Each such object is placed on the page its ``created_at`` falls in, counting pages of the average
    creation-time span of the pages read so far (``first`` and ``last``: the newest and oldest object
    read), below the oldest object read.
    """
    if first is None or last is None:
        return False
    oldest = last.created_at
    span = (first.created_at - oldest) / pages_read
    ahead = sorted(
        1 if span <= 0 else max(1, math.ceil((oldest - created) / span))
        for object_id, created in known_live.items()
        if created <= oldest and object_id not in seen
    )
    return any(covered > pages for covered, pages in enumerate(ahead, start=1))


def poll_listed(api: RunsApi, caller: Caller, kind: str, object_id: str) -> ListedPoll:
    """Step 2 for one object: retrieve it; a 404 is its loss (the ledger knows it as live)."""
    poll = ListedPoll(kind, object_id)
    try:
        body, arrived_at = caller.call(partial(_retrieved, api, kind, object_id))
        poll.snapshots = read_snapshots(body, arrived_at, f"{kind} {object_id}")
    except ApiFailure as failure:
        if failure.kind == "not_found":
            poll.gone = True
            poll.signals.append(Signal(kind, object_id, None, RUN_LOST, api.now(), {"reason": "not_found"}))
        else:
            poll.error = str(failure)
    except GaveUp as failure:
        poll.error = str(failure)
    return poll


def poll_object(api: RunsApi, caller: Caller, claimed: ClaimedObject) -> ObjectPoll:
    """Retrieve one watched object (a background response)."""
    kind, object_id = claimed.kind, claimed.object_id
    try:
        body, arrived_at = caller.call(partial(_retrieved, api, kind, object_id))
        snapshots = read_snapshots(body, arrived_at, f"{kind} {object_id}")
    except ApiFailure as failure:
        if failure.kind == "not_found":
            # Gone: never created, or past the API's retention. A loss only if the ledger knew it as live.
            signals = [Signal(kind, object_id, None, RUN_LOST, api.now(), {"reason": "not_found"})]
            outcome = ObjectOutcome(kind, object_id, None, error=str(failure), gone=True)
            return ObjectPoll([], outcome, signals if claimed.known_live else [])
        return ObjectPoll([], ObjectOutcome(kind, object_id, None, error=str(failure)))
    except GaveUp as failure:
        return ObjectPoll([], ObjectOutcome(kind, object_id, None, error=str(failure)))
    mine = [snapshot for snapshot in snapshots if (snapshot.kind, snapshot.object_id) == (kind, object_id)]
    if not mine:
        error = f"the API answered for {kind} {object_id} with another object"
        return ObjectPoll([], ObjectOutcome(kind, object_id, None, error=error))
    status = mine[-1].status
    return ObjectPoll(mine, ObjectOutcome(kind, object_id, status, terminal=mine[-1].ended))


def _retrieved(api: RunsApi, kind: str, object_id: str) -> tuple[dict[str, Any], float]:
    return page_of(api.retrieve_object(kind, object_id))

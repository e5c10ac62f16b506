"""Reading what the API answered: one response body as a JSON object, and a list's pages one by one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from tracker.snapshots import Snapshot, SnapshotError, decode_line, read_page_leniently
from tracker.sources.openai_runs import ApiFailure, Caller, Fetched


def pages(caller: Caller, fetch: Callable[[str | None], Fetched], what: str) -> Iterator[list[Snapshot]]:
    """The snapshots of each page of a list, newest first, until it has no more (the caller may stop early)."""
    after: str | None = None
    while True:
        page, arrived_at = caller.call(partial(_fetched_page, fetch, after))
        good = read_snapshots(page, arrived_at, what)
        yield good
        if not page.get("has_more") or not good:
            return
        after = str(page.get("last_id") or good[-1].object_id)


def _fetched_page(fetch: Callable[[str | None], Fetched], after: str | None) -> tuple[dict[str, Any], float]:
    return page_of(fetch(after))


def page_of(fetched: Fetched) -> tuple[dict[str, Any], float]:
    try:
        document = decode_line(fetched.body)
    except SnapshotError as exc:
        raise ApiFailure("malformed", f"response is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ApiFailure("malformed", "response is not a JSON object")
    return document, fetched.arrived_at


def read_snapshots(document: dict[str, Any], arrived_at: float, what: str) -> list[Snapshot]:
    """The snapshots of an answer (an object or a list page); any object that does not read fails it."""
    try:
        good, bad = read_page_leniently(document, arrived_at)
    except SnapshotError as exc:
        raise ApiFailure("malformed", f"{what}: {exc}") from None
    if bad:
        raise ApiFailure("malformed", f"{what}: {bad[0]}")
    return good

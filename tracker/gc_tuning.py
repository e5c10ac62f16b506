"""Garbage-collector settings for the long loops of ingest, rebuild and verify."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def fewer_gc_passes() -> Iterator[None]:
    """Run the cyclic garbage collector less often inside the block, then as before.

    These loops allocate millions of short-lived, acyclic objects (decoded JSON, rows, events) that
    reference counting frees at once; with the default threshold (a pass every 700 allocations) the
    collector would scan them thousands of times per batch and find nothing to collect.
    """
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], 50_000), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)

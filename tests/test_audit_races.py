"""Second review of the audit fixes: `audit verify` (and so `audit checkpoint`, and a purge's own check) reads
the log, ledger_purges, run_payloads and archived_runs in separate statements and connections, with no
common snapshot. An honest purge or erasure committing in between is reported as tampering. The hooks
below only fix the moment at which the other (honest) command commits; each test fails on ca4d578.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.test_adversarial_audit import NOW, _line, _purge, _three_ages
from tracker.ingest import ingest_lines
from tracker.signing import SigningKey
from tracker.store import audit
from tracker.store.audit import verify_chain
from tracker.store.erasure import erase_payloads


@pytest.mark.parametrize("moment", ["_ranges", "_check_before_anchor"])
def test_verify_is_not_fooled_by_a_purge_that_commits_while_it_reads(
    engine: Engine, key: SigningKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    """_ranges: after latest_purge() found no purge, before the chain is streamed -> the chain is read from
    genesis and "seq 1..N missing". _check_before_anchor: after the chain, before ledger_purges is read ->
    "ledger_purges records a purge through seq N, the chain none"."""
    _three_ages(engine)
    real = getattr(audit, moment)
    fired: list[bool] = []

    def purge_meanwhile(*args: Any, **kwargs: Any) -> Any:
        if not fired:
            fired.append(True)
            _purge(engine, key, tmp_path)  # its own verify_chain goes through this hook, which is spent
        return real(*args, **kwargs)

    monkeypatch.setattr(audit, moment, purge_meanwhile)
    report = verify_chain(engine)
    assert fired
    assert report.ok, report.first_problem()


@pytest.mark.parametrize("backend", ["postgresql"])
def test_verify_is_not_fooled_by_an_erasure_that_commits_while_it_reads_payloads(
    engine: Engine, key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """_check_payloads reads the payload_erased events, then (READ COMMITTED: a new snapshot per statement)
    streams run_payloads: an erasure committed in between shows a nulled body with no event ->
    "run run_1: payload instructions ... was erased without a payload_erased event"."""
    ingest_lines(engine, [_line(1, "queued", 1_767_225_800)], lambda: NOW, source={"ingest": "t"})
    real = audit.sql_text
    fired: list[bool] = []

    def erase_meanwhile(query: str) -> Any:
        if "FROM run_payloads" in query and not fired:
            fired.append(True)
            erase_payloads(engine, key, lambda: NOW + 1, run_ids=["run_1"], reason="DSR-1", wait_s=1)
        return real(query)

    monkeypatch.setattr(audit, "sql_text", erase_meanwhile)
    report = verify_chain(engine)
    assert fired
    assert report.ok, report.first_problem()

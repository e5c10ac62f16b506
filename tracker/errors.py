"""The exceptions users can act on. The CLI prints their message as one line and exits non-zero.

TrackerError
├── SchemaError        database schema missing, foreign, or at the wrong revision
├── InputError         a snapshot file or stream cannot be read at all
├── PolicyError        a redaction policy that cannot be applied as written
├── RunNotFound        a run id the database does not know
├── IntegrityError     the database refused a write that would break the ledger's rules
└── AuditError         a key, signature, checkpoint, export or audit operation that does not hold
"""

from __future__ import annotations


class TrackerError(Exception):
    """Base of every error the tracker reports to its user."""


class SchemaError(TrackerError):
    """The database schema is missing, foreign, or at a revision this code does not run on."""


class InputError(TrackerError):
    """An input file or stream cannot be read."""


class PolicyError(TrackerError):
    """A redaction policy that cannot be applied as written (bad path, bad action, protected field, no salt)."""


class RunNotFound(TrackerError):
    """No run with that id is in the ledger."""


class IntegrityError(TrackerError):
    """The database refused a write that would break the ledger's rules."""


class AuditError(TrackerError):
    """A key, signature, checkpoint, export or audit operation (erase, purge) that does not hold."""

"""Redaction policies: keep, drop or hash chosen fields of run objects before the ledger sees them.

Theory of operation. A :class:`RedactionPolicy` is a set of rules ``path -> action``. A path addresses
a value inside an object by its keys, dot-separated (``metadata.user_email``); a ``*`` segment stands
for any key of an object or any item of a list (``tools.*.function.description``). Literal segments
match object keys only. For every value of the object, the rules whose path matches its location
compete and the most specific one wins: comparing two paths segment by segment from the left, at the
first segment where one has a name and the other ``*``, the name wins. No rule means keep. A value that
is dropped or hashed goes with everything inside it, so rules below it have nothing left to act on;
a kept value is walked further, so ``metadata = "keep"`` with ``metadata.email = "hash"`` hashes the email.

* ``drop`` removes the value: the key from its object, the item from its list;
* ``hash`` replaces it by ``"hmac-sha256:<hex>"`` of HMAC-SHA256(salt, canonical JSON of the value), so
  equal values stay equal (joinable) and re-ingesting the same input stays a no-op. ``null`` stays
  ``null``, and a value already in that form is not hashed again, so applying a policy twice is applying
  it once;
* ``keep`` leaves the value, and lets a more specific rule override a ``*`` rule.

The fields the diff engine reads (each lifecycle's id, group, created and dating fields, its required
fields, and ``object``) cannot be dropped or hashed: a policy that would is refused when it is built.
The salt is held by the policy but is never part of its :attr:`~RedactionPolicy.fingerprint`, its repr,
nor any error. This module reads no file and no environment: the CLI hands it texts and bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final, Literal, cast

from tracker.errors import PolicyError
from tracker.events import canonical_json
from tracker.lifecycle import LIFECYCLES
from tracker.snapshots import Snapshot

Action = Literal["keep", "drop", "hash"]
ACTIONS: Final[tuple[Action, ...]] = ("keep", "drop", "hash")
WILDCARD: Final = "*"
HASH_PREFIX: Final = "hmac-sha256:"
SALT_ENV: Final = "TRACKER_REDACTION_SALT"
MIN_SALT_BYTES: Final = 16
_HASH_MEMO: Final = 4096

_HASHED = re.compile(r"hmac-sha256:[0-9a-f]{64}")


def _protected_fields() -> frozenset[str]:
    names = {"object"}  # tracker.snapshots reads it to choose the lifecycle
    for lifecycle in LIFECYCLES.values():
        names |= {lifecycle.id_field, *lifecycle.required_fields, *lifecycle.time_fields}
        if lifecycle.group_field is not None:
            names.add(lifecycle.group_field)
    return frozenset(names)


# Every kind's: one policy applies to every kind alike (runs, steps, responses, ...), with the same paths.
PROTECTED_FIELDS: Final = _protected_fields()


@dataclass(frozen=True)
class Rule:
    """One rule: the value(s) at ``path`` (segments; ``*`` for any key or item) get ``action``."""

    path: tuple[str, ...]
    action: Action

    def __post_init__(self) -> None:
        problem = _rule_problem(self.path, self.action)
        if problem is not None:
            raise PolicyError(problem)

    @property
    def text(self) -> str:
        return ".".join(self.path)


def _rule_problem(path: tuple[str, ...], action: str) -> str | None:
    if action not in ACTIONS:
        return f"unknown action {action!r} (expected one of {', '.join(ACTIONS)})"
    if not path or any(not segment for segment in path):
        return "a path is dot-separated keys, none of them empty (e.g. metadata.user_email)"
    for segment in path:
        if WILDCARD in segment and segment != WILDCARD:
            return f"'*' stands for a whole segment, not part of one ({segment!r})"
    if action == "keep":
        return None
    protected = ", ".join(sorted(PROTECTED_FIELDS))
    if path[0] in PROTECTED_FIELDS:
        return f"the tracker needs {path[0]!r} to follow the object; it cannot {action} it (protected: {protected})"
    if path == (WILDCARD,):
        return f"a top-level '*' would {action} the fields the tracker needs (protected: {protected})"
    return None


@dataclass(eq=False)
class _Matcher:
    """The rules matching one location: the winner's action, and the matchers of the locations inside it.

    Built once per policy (a subset construction over the rules' paths), so applying a policy is a dict
    lookup per key instead of a comparison of every rule.
    """

    action: Action | None = None
    by_key: dict[str, _Matcher] = field(default_factory=dict)  # keys some rule names here (with the '*' rules)
    any_key: _Matcher | None = None  # every other key, and every list item: the '*' rules only


# A rule that has matched the first ``depth`` segments of the location being walked.
_Live = frozenset[tuple[Rule, int]]


def _specificity(rule: Rule) -> tuple[bool, ...]:
    return tuple(segment != WILDCARD for segment in rule.path)  # a name beats '*', leftmost first


def _build_matcher(live: _Live, built: dict[_Live, _Matcher]) -> _Matcher:
    if live in built:
        return built[live]
    matcher = built[live] = _Matcher()
    ending = [rule for rule, depth in live if depth == len(rule.path)]
    if ending:
        matcher.action = max(ending, key=_specificity).action
    going_on = [(rule, depth) for rule, depth in live if depth < len(rule.path)]
    wildcards = frozenset((rule, depth + 1) for rule, depth in going_on if rule.path[depth] == WILDCARD)
    if wildcards:
        matcher.any_key = _build_matcher(wildcards, built)
    for key in {rule.path[depth] for rule, depth in going_on} - {WILDCARD}:
        named = frozenset((rule, depth + 1) for rule, depth in going_on if rule.path[depth] == key)
        matcher.by_key[key] = _build_matcher(named | wildcards, built)
    return matcher


@dataclass(frozen=True)
class RedactionPolicy:
    """Rules ``path -> action`` and, when a rule hashes, the secret salt (never shown, never fingerprinted)."""

    rules: tuple[Rule, ...]
    salt: bytes | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        seen: set[tuple[str, ...]] = set()
        for rule in self.rules:
            if rule.path in seen:
                raise PolicyError(f"{rule.text!r}: more than one rule for this path")
            seen.add(rule.path)
        hashing = [rule.text for rule in self.rules if rule.action == "hash"]
        if hashing and not self.salt:
            raise PolicyError(
                f"{hashing[0]!r} is hashed but no salt is set: set {SALT_ENV} or pass --redaction-salt-file"
            )
        if hashing and self.salt is not None and len(self.salt) < MIN_SALT_BYTES:
            raise PolicyError(
                f"the redaction salt is shorter than {MIN_SALT_BYTES} bytes: use a long random secret "
                "(e.g. the output of `openssl rand -hex 32`)"
            )

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of the canonical JSON of ``{path: action}``: which policy shaped the data."""
        return hashlib.sha256(canonical_json({rule.text: rule.action for rule in self.rules}).encode()).hexdigest()

    @cached_property
    def _matcher(self) -> _Matcher:
        return _build_matcher(frozenset((rule, 0) for rule in self.rules), {})

    @cached_property
    def _hashed_strings(self) -> dict[str, str]:
        # The same instructions, arguments and addresses come back on every poll of a run.
        return {}

    def _hash(self, value: Any) -> Any:
        if type(value) is not str:
            return _hashed(value, cast(bytes, self.salt))
        memo = self._hashed_strings
        hashed = memo.get(value)
        if hashed is None:
            if len(memo) >= _HASH_MEMO:
                memo.clear()
            hashed = memo[value] = _hashed(value, cast(bytes, self.salt))
        return hashed


_DROPPED: Final = object()
_Hasher = Callable[[Any], Any]


def apply(policy: RedactionPolicy, run_object: Mapping[str, Any]) -> dict[str, Any]:
    """A new object with ``policy`` applied; ``run_object`` is never changed (untouched values are shared)."""
    redacted = _object(run_object, policy._matcher, policy._hash)
    return dict(redacted) if redacted is run_object else cast(dict[str, Any], redacted)


def _object(value: Mapping[str, Any], matcher: _Matcher, hash_value: _Hasher) -> Mapping[str, Any]:
    by_key, any_key = matcher.by_key, matcher.any_key
    keys: Iterable[str] = list(value) if any_key is not None else [key for key in by_key if key in value]
    result: dict[str, Any] | None = None  # copied on the first change only
    for key in keys:
        inner = by_key.get(key, any_key)
        if inner is None:
            continue
        old = value[key]
        new = _decide(old, inner, hash_value)
        if new is old:
            continue
        if result is None:
            result = dict(value)
        if new is _DROPPED:
            del result[key]
        else:
            result[key] = new
    return value if result is None else result


def _items(value: list[Any], matcher: _Matcher, hash_value: _Hasher) -> list[Any]:
    decided = [_decide(item, matcher, hash_value) for item in value]
    if all(new is old for new, old in zip(decided, value, strict=True)):
        return value
    return [item for item in decided if item is not _DROPPED]


def _decide(value: Any, matcher: _Matcher, hash_value: _Hasher) -> Any:
    """What becomes of a value at a location ``matcher`` stands for: its winning rule's say, then inside it."""
    if matcher.action == "drop":
        return _DROPPED
    if matcher.action == "hash":
        return hash_value(value)
    if type(value) is dict and (matcher.by_key or matcher.any_key is not None):
        return _object(value, matcher, hash_value)
    if type(value) is list and matcher.any_key is not None:
        return _items(value, matcher.any_key, hash_value)
    return value


def _hashed(value: Any, salt: bytes) -> Any:
    if value is None or (type(value) is str and _HASHED.fullmatch(value)):
        return value
    digest = hmac.new(salt, canonical_json(value).encode(), hashlib.sha256).hexdigest()
    return f"{HASH_PREFIX}{digest}"


def redact_snapshots(policy: RedactionPolicy | None, snapshots: list[Snapshot]) -> list[Snapshot]:
    """``snapshots`` with ``policy`` applied to their bodies (the same list without a policy)."""
    if policy is None:
        return snapshots
    return [snapshot._replace(body=apply(policy, snapshot.body)) for snapshot in snapshots]


def redaction_source(policy: RedactionPolicy | None, source: Mapping[str, Any]) -> dict[str, Any]:
    """An event ``source`` naming the policy in force (``"redaction": <fingerprint>``); as given without one."""
    if policy is None:
        return dict(source)
    return {**source, "redaction": policy.fingerprint}


# Loading: a TOML file's [redact] table and --redact PATH=ACTION options, checked entry by entry.


def load_policy(
    file_text: str | None = None,
    file_name: str = "<policy>",
    options: Sequence[str] = (),
    salt: bytes | None = None,
) -> RedactionPolicy:
    """The policy of a TOML file's ``[redact]`` table, overridden path by path by ``--redact`` options.

    Raises PolicyError naming the file (or option), the key and the reason; never the salt.
    """
    rules: dict[tuple[str, ...], Rule] = {}
    if file_text is not None:
        for key, action in _toml_entries(file_text, file_name):
            rule = _rule(key, action, f"{file_name}: [redact] {key!r}")
            if rule.path in rules:
                raise PolicyError(f"{file_name}: [redact] {key!r}: more than one rule for this path")
            rules[rule.path] = rule
    for option in options:
        key, equals, action = option.rpartition("=")
        where = f"--redact {option!r}"
        if not equals:
            raise PolicyError(f"{where}: expected PATH=ACTION (e.g. metadata.user_email=hash)")
        rule = _rule(key.strip(), action.strip(), where)
        rules[rule.path] = rule  # an option overrides the file's rule for the same path
    return RedactionPolicy(tuple(rules.values()), salt)


def _rule(key: str, action: object, where: str) -> Rule:
    if not isinstance(action, str):
        raise PolicyError(f"{where}: expected one of {', '.join(ACTIONS)}, got {type(action).__name__}")
    try:
        return Rule(tuple(key.split(".")), cast(Action, action))
    except PolicyError as exc:
        raise PolicyError(f"{where}: {exc}") from None


def _toml_entries(text: str, file_name: str) -> list[tuple[str, object]]:
    """(dotted key, value) of the ``[redact]`` table; nested tables (``[redact.metadata]``) flattened."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{file_name}: not valid TOML: {exc}") from None
    unknown = sorted(set(document) - {"redact"})
    if unknown:
        raise PolicyError(f"{file_name}: unknown key {unknown[0]!r} (a policy file holds one [redact] table)")
    table = document.get("redact")
    if not isinstance(table, dict):
        raise PolicyError(f'{file_name}: no [redact] table (e.g. [redact] then "metadata.user_email" = "hash")')
    entries: list[tuple[str, object]] = []

    def flatten(prefix: str, value: dict[str, Any]) -> None:
        for key, item in value.items():
            if isinstance(item, dict):
                flatten(f"{prefix}{key}.", item)
            else:
                entries.append((f"{prefix}{key}", item))

    flatten("", table)
    return entries

"""Validation against the official OpenAPI schemas kept in tests/data (trimmed copies of the spec).

The spec is OpenAPI 3.1 (JSON Schema 2020-12) but keeps two OpenAPI 3.0 spellings, which :func:`as_json_schema`
translates: ``nullable: true`` (also as ``allOf: [{$ref}, {nullable: true}]``) is "or null", and
``minimum: 0, exclusiveMinimum: true`` is ``exclusiveMinimum: 0`` (read as 2020-12, ``true`` would be a
bound of 1: a learning rate multiplier of 1.0 would fail).
Where the real API sends null in a field the spec types otherwise (the spec's own examples do), a test names
the field in ``sent_as_null`` and the field then also accepts null: each such exception is explicit.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DATA = Path(__file__).resolve().parent / "data"
NULL = {"type": "null"}


def as_json_schema(node: Any) -> Any:
    """The OpenAPI 3.0 keywords of ``node`` spelt the JSON Schema 2020-12 way, throughout."""
    if isinstance(node, list):
        return [as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    nullable = node.pop("nullable", False)
    if {"nullable": True} in node.get("allOf", []):
        node["allOf"] = [part for part in node["allOf"] if part != {"nullable": True}]
        nullable = True
    for bound in ("Minimum", "Maximum"):
        if node.get(f"exclusive{bound}") is True and bound.lower() in node:
            node[f"exclusive{bound}"] = node.pop(bound.lower())
    node = {key: as_json_schema(value) for key, value in node.items()}
    return {"anyOf": [node, NULL]} if nullable else node


class Schemas:
    """The schemas of one trimmed spec file; ``sent_as_null`` maps a schema to properties that may be null."""

    def __init__(self, file_name: str, sent_as_null: Mapping[str, frozenset[str]] | None = None) -> None:
        self.schemas: dict[str, Any] = as_json_schema(_spec(file_name)["components"]["schemas"])
        for schema, fields in (sent_as_null or {}).items():
            for name in fields:
                properties = _properties_defining(self.schemas[schema], name)
                properties[name] = {"anyOf": [properties[name], NULL]}
        self._registry: Registry[Any] = Registry().with_resource(
            "urn:openai",
            Resource.from_contents({"components": {"schemas": self.schemas}}, default_specification=DRAFT202012),
        )
        self._validators: dict[str, jsonschema.Draft202012Validator] = {}

    def assert_valid(self, schema: str, instance: Any) -> None:
        if schema not in self._validators:
            root = {"$ref": f"urn:openai#/components/schemas/{schema}"}
            self._validators[schema] = jsonschema.Draft202012Validator(root, registry=self._registry)
        error = jsonschema.exceptions.best_match(self._validators[schema].iter_errors(instance))
        assert error is None, f"not a valid {schema}: {error.message} at {list(error.absolute_path)}"


@functools.cache
def _spec(file_name: str) -> Any:
    # libyaml's loader when the installed PyYAML has it: seven times faster on the 250 kB spec of the kinds.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load((DATA / file_name).read_text(encoding="utf-8"), Loader=loader)


def _properties_defining(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``properties`` of ``schema`` (or of one of its ``allOf`` parts) that define ``name``."""
    for part in (schema, *schema.get("allOf", ())):
        if name in part.get("properties", {}):
            properties: dict[str, Any] = part["properties"]
            return properties
    raise KeyError(f"no property {name!r} in this schema")

"""Validate a loaded workflow against the language's JSON Schema, turning every violation into a positioned error.

In: a :class:`~iot_dsl.source.SourceDoc`. Out: a list of :class:`~iot_dsl.errors.SchemaError`, each with
``file:line:col``, the YAML path, the source line, and a "did you mean" guess for misspelt keys and values.
The schema itself ships inside the package (``iot_dsl/schemas/workflow.schema.json``); ``iot-dsl schema`` prints it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from .errors import SchemaError, did_you_mean
from .source import SourceDoc

__all__ = ["schema_text", "workflow_schema", "validate_document", "KNOWN_TOP_LEVEL_KEYS"]

_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "null": "nothing (null)",
}


def schema_text() -> str:
    """Return the workflow JSON Schema exactly as shipped (for ``iot-dsl schema`` and editors)."""
    return resources.files("iot_dsl").joinpath("schemas/workflow.schema.json").read_text(encoding="utf-8")


@cache
def workflow_schema() -> Mapping[str, Any]:
    """Return the parsed workflow JSON Schema (2020-12)."""
    loaded: Mapping[str, Any] = json.loads(schema_text())
    return loaded


@cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = workflow_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


KNOWN_TOP_LEVEL_KEYS: tuple[str, ...] = tuple(workflow_schema()["properties"])


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, list):
        return "a list"
    return "a mapping"


def _resolve(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow local ``$ref``s so messages can read ``x-message`` and property lists."""
    root = workflow_schema()
    seen = 0
    while "$ref" in schema and seen < 16:
        ref = str(schema["$ref"])
        node: Any = root
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
        schema = node
        seen += 1
    return schema


def _type_word(expected: Any) -> str:
    if isinstance(expected, list):
        return " or ".join(_TYPE_WORDS.get(t, t) for t in expected)
    return _TYPE_WORDS.get(str(expected), str(expected))


def _errors_for(error: ValidationError, doc: SourceDoc) -> Iterator[SchemaError]:
    path: tuple[str | int, ...] = tuple(error.absolute_path)
    schema = _resolve(error.schema) if isinstance(error.schema, Mapping) else {}
    custom = schema.get("x-message") if isinstance(schema, Mapping) else None
    kind = error.validator

    if kind == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = list(schema.get("properties", {}))
        for key in error.instance:
            if key in allowed:
                continue
            guess = did_you_mean(str(key), allowed)
            where = "at the top level" if not path else "here"
            hint = f"did you mean '{guess}'?" if guess else f"allowed {where}: {', '.join(allowed)}"
            yield _make(doc, f"unknown key '{key}'", (*path, str(key)), code="unknown_key", hint=hint, key=True)
        return
    if kind == "required":
        missing = str(error.message).split("'")[1] if "'" in str(error.message) else str(error.validator_value)
        yield _make(doc, f"missing required key '{missing}'", path, code="missing_key")
        return
    if kind == "type":
        word = _type_word(error.validator_value)
        yield _make(doc, f"expected {word}, got {_describe(error.instance)}", path, code="type")
        return
    if kind == "enum":
        options = [str(o) for o in error.validator_value]
        guess = did_you_mean(str(error.instance), options) if isinstance(error.instance, str) else None
        hint = f"did you mean '{guess}'?" if guess else None
        message = f"{_describe(error.instance)} is not one of: {', '.join(options)}"
        yield _make(doc, message, path, code="enum", hint=hint)
        return
    if kind == "propertyNames":
        parent_schema = _resolve(schema.get("propertyNames", {}))
        reason = parent_schema.get("x-message", "invalid name")
        bad = error.instance if isinstance(error.instance, str) else str(error.instance)
        yield _make(doc, f"invalid name '{bad}': {reason}", (*path, bad), code="name", key=True)
        return
    if kind in ("oneOf", "anyOf") and isinstance(error.instance, Mapping) and "command" in error.instance and "alert" in error.instance:
        yield _make(doc, str(custom or "choose one alternative"), path, code="one_of")
        return
    if kind == "oneOf" and isinstance(error.instance, Mapping):
        yield _make(doc, str(custom or "none of the alternatives matches"), path, code="one_of")
        return
    if custom:
        yield _make(doc, f"{_describe(error.instance)} is not valid: {custom}", path, code=str(kind))
        return
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        word = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[str(kind)]
        yield _make(doc, f"{_describe(error.instance)} must be {word} {error.validator_value}", path, code="range")
        return
    if kind in ("minItems", "minLength"):
        yield _make(doc, f"must not be empty (at least {error.validator_value})", path, code="empty")
        return
    if kind == "maxLength":
        yield _make(doc, f"too long (at most {error.validator_value} characters)", path, code="too_long")
        return
    if kind in ("anyOf", "oneOf"):
        # e.g. a firmware selector that is neither a string, a list nor a mapping
        yield _make(doc, f"{_describe(error.instance)} is not an accepted form here", path, code=str(kind))
        return
    yield _make(doc, str(error.message), path, code=str(kind))  # pragma: no cover - every keyword we use is mapped


def _make(
    doc: SourceDoc,
    message: str,
    path: Sequence[str | int],
    *,
    code: str,
    hint: str | None = None,
    key: bool = False,
) -> SchemaError:
    error = doc.error(message, tuple(path), code=code, hint=hint, key=key, cls=SchemaError)
    assert isinstance(error, SchemaError)
    return error


def validate_document(doc: SourceDoc) -> list[SchemaError]:
    """Check ``doc.data`` against the workflow schema; return every violation (empty list when valid)."""
    seen: set[tuple[str, int, int, str]] = set()
    out: list[SchemaError] = []
    for error in _validator().iter_errors(doc.data):
        for item in _errors_for(error, doc):
            marker = item.sort_key()
            if marker not in seen:
                seen.add(marker)
                out.append(item)
    out.sort(key=lambda e: e.sort_key())
    return out

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
from typing import Any, cast

import jsonschema
from jsonschema.exceptions import ValidationError
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from .errors import SchemaError, did_you_mean
from .source import SourceDoc

__all__ = ["schema_text", "workflow_schema", "bundled_schema", "schema_documents", "validate_document", "KNOWN_TOP_LEVEL_KEYS"]

_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "null": "nothing (null)",
}


ROOT_SCHEMA = "workflow.schema.json"


@cache
def schema_documents() -> dict[str, Mapping[str, Any]]:
    """Every shipped schema file by name: the root ``workflow.schema.json`` and one file per capability."""
    folder = resources.files("iot_dsl").joinpath("schemas")
    docs: dict[str, Mapping[str, Any]] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".schema.json"):
            docs[entry.name] = json.loads(entry.read_text(encoding="utf-8"))
    return docs


def workflow_schema() -> Mapping[str, Any]:
    """Return the root workflow JSON Schema (2020-12); it references the capability schema files."""
    return schema_documents()[ROOT_SCHEMA]


def _rewrite_refs(node: Any, current: str) -> Any:
    """Turn cross-file refs into refs inside one bundled document (``#/$defs/<file stem>/...``)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                target, _, pointer = value.partition("#")
                target = target or current
                prefix = "#" if target == ROOT_SCHEMA else f"#/$defs/{target.removesuffix('.schema.json')}"
                out[key] = prefix + pointer
            else:
                out[key] = _rewrite_refs(value, current)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(item, current) for item in node]
    return node


def bundled_schema() -> dict[str, Any]:
    """The whole language as ONE self-contained schema document (capability files folded into ``$defs``)."""
    docs = schema_documents()
    bundle: dict[str, Any] = _rewrite_refs(dict(docs[ROOT_SCHEMA]), ROOT_SCHEMA)
    defs = bundle.setdefault("$defs", {})
    for name, doc in docs.items():
        if name != ROOT_SCHEMA:
            part = _rewrite_refs({k: v for k, v in doc.items() if k != "$schema"}, name)
            defs[name.removesuffix(".schema.json")] = part
    return bundle


def schema_text() -> str:
    """The bundled workflow JSON Schema as text (what ``iot-dsl schema`` prints)."""
    return json.dumps(bundled_schema(), indent=2) + "\n"


@cache
def _validator() -> jsonschema.Draft202012Validator:
    registry: Registry[Any] = Registry()
    for name, doc in schema_documents().items():
        jsonschema.Draft202012Validator.check_schema(doc)
        registry = registry.with_resource(name, DRAFT202012.create_resource(doc))
    return jsonschema.Draft202012Validator(workflow_schema(), registry=registry)


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


def _resolve(schema: Mapping[str, Any], current: str = ROOT_SCHEMA) -> Mapping[str, Any]:
    """Follow ``$ref``s (within and across the shipped files) so messages can read ``x-message`` and properties."""
    docs = schema_documents()
    seen = 0
    while "$ref" in schema and seen < 16:
        target, _, pointer = str(schema["$ref"]).partition("#")
        parts = [p for p in pointer.split("/") if p]
        # a same-file ref ("#/$defs/x") may come from a capability file: try the current file first, then the rest
        candidates = [target] if target else [current, *(name for name in docs if name != current)]
        for name in candidates:
            node: Any = docs.get(name)
            for part in parts:
                node = node.get(part) if isinstance(node, Mapping) else None
            if isinstance(node, Mapping):
                current, schema = name, node
                break
        else:
            return {}
        seen += 1
    return schema


def _type_word(expected: Any) -> str:
    if isinstance(expected, list):
        return " or ".join(_TYPE_WORDS.get(str(t), str(t)) for t in expected)
    return _TYPE_WORDS.get(str(expected), str(expected))


def _types(schema: Mapping[str, Any]) -> list[str]:
    """The JSON types a (sub)schema accepts, following ``$ref`` and ``anyOf``/``oneOf`` alternatives."""
    schema = _resolve(schema)
    if "type" in schema:
        declared = schema["type"]
        return [str(t) for t in declared] if isinstance(declared, list) else [str(declared)]
    alternatives = schema.get("anyOf") or schema.get("oneOf") or ()
    return [t for alternative in alternatives for t in _types(alternative)]


def _fits(schema: Mapping[str, Any], instance: Any) -> bool:
    """Whether ``instance`` has one of the JSON types ``schema`` accepts (a schema without types accepts all)."""
    types = _types(schema)
    return not types or any(_validator().is_type(instance, t) for t in types)


def _errors_for(error: ValidationError, doc: SourceDoc) -> Iterator[SchemaError]:
    path: tuple[str | int, ...] = tuple(error.absolute_path)
    schema = _resolve(error.schema) if isinstance(error.schema, Mapping) else {}
    custom = schema.get("x-message") if isinstance(schema, Mapping) else None
    kind = error.validator
    if kind != "type" and "type" in schema and not _fits(schema, error.instance):
        return  # a value of the wrong type: its "type" error says so, the schema's other keywords add only noise

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
        options = [str(o) for o in cast(list[Any], error.validator_value)]
        guess = did_you_mean(str(error.instance), options) if isinstance(error.instance, str) else None
        enum_hint = f"did you mean '{guess}'?" if guess else None
        message = f"{_describe(error.instance)} is not one of: {', '.join(options)}"
        yield _make(doc, message, path, code="enum", hint=enum_hint)
        return
    if "propertyNames" in error.absolute_schema_path:
        # jsonschema reports a bad key as a failure of the name's own schema ('pattern'), located at the mapping
        # that holds it: point at the key itself instead.
        bad = str(error.instance)
        yield _make(doc, f"invalid name '{bad}': {custom or 'invalid name'}", (*path, bad), code="name", key=True)
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
        alternatives = list(cast(list[Any], error.validator_value))
        fitting = [i for i, alternative in enumerate(alternatives) if _fits(alternative, error.instance)]
        inner = [sub for sub in error.context or () if fitting == [sub.relative_schema_path[0]]]
        if inner:
            # the value has the right form (e.g. a firmware mapping) but something inside it is wrong: say what
            for sub in inner:
                yield from _errors_for(sub, doc)
            return
        # e.g. a firmware selector that is neither a string, a list nor a mapping
        words = [_type_word(t) for alternative in alternatives for t in _types(alternative)]
        form_hint = f"expected {', '.join(words[:-1])} or {words[-1]}" if len(words) > 1 else None
        yield _make(doc, f"{_describe(error.instance)} is not an accepted form here", path, code=str(kind), hint=form_hint)
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

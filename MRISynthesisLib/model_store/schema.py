"""A small, dependency-free validator for the subset of JSON Schema that ``card.schema.json`` uses.

Supported keywords: ``type`` (one or a list), ``required``, ``properties``, ``additionalProperties``
(bool or schema), ``items``, ``minItems``, ``maxItems``, ``uniqueItems``, ``minimum``, ``maximum``,
``exclusiveMinimum``, ``minLength``, ``pattern``, ``enum``. Unknown keywords (``description``,
``$schema``...) are ignored. Pulling in the ``jsonschema`` package for one small schema is not worth it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    # bool is an int in Python but not a number in JSON
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def load_schema(path: str | Path) -> dict:
    """Read a schema file (JSON)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def schema_errors(value: Any, schema: dict, where: str = "") -> list[str]:
    """All violations of ``schema`` by ``value`` as ``"<json path>: <problem>"`` strings (empty when valid)."""
    errors: list[str] = []
    _check(value, schema, where, errors)
    return errors


def _label(where: str) -> str:
    return where or "(top level)"


def _check(value: Any, schema: dict, where: str, errors: list[str]) -> None:
    expected = schema.get("type")
    if expected is not None:
        names = expected if isinstance(expected, list) else [expected]
        if not any(_TYPES[name](value) for name in names):
            errors.append(f"{_label(where)}: must be {' or '.join(names)}, got {type(value).__name__} {value!r:.60}")
            return  # further checks on a wrong type only add noise
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{_label(where)}: must be one of {schema['enum']}, got {value!r}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{_label(where)}: must not be empty" if schema["minLength"] == 1
                          else f"{_label(where)}: shorter than {schema['minLength']} characters")
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            errors.append(f"{_label(where)}: {value!r:.80} does not match {schema['pattern']}")
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{_label(where)}: must be >= {schema['minimum']}, got {value}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{_label(where)}: must be <= {schema['maximum']}, got {value}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(f"{_label(where)}: must be > {schema['exclusiveMinimum']}, got {value}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{_label(where)}: needs at least {schema['minItems']} item(s), got {len(value)}")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{_label(where)}: allows at most {schema['maxItems']} item(s), got {len(value)}")
        if schema.get("uniqueItems"):
            seen = [json.dumps(item, sort_keys=True) for item in value]
            if len(set(seen)) != len(seen):
                errors.append(f"{_label(where)}: items must be unique")
        if "items" in schema:
            for index, item in enumerate(value):
                _check(item, schema["items"], f"{where}[{index}]", errors)
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{_label(where)}: missing required field {key!r}")
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if key in properties:
                _check(item, properties[key], path, errors)
            elif extra is False:
                errors.append(f"{path}: unknown field (allowed: {', '.join(sorted(properties))})")
            elif isinstance(extra, dict):
                _check(item, extra, path, errors)

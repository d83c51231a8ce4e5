"""JSON Schema (a subset) -> a regular expression whose matches are exactly the JSON texts the schema accepts.

The approach of Willard & Louf 2023 ("Efficient Guided Generation for LLMs", the `outlines` library): a schema
with bounded nesting describes a regular language once whitespace is fixed, so the regex automaton in
`regex_fsm.py` can drive decoding. Layout is fixed: no newlines, optional single space after ':' and ','.

Supported: `type` (string, integer, number, boolean, null, array, object, or a list of these), `enum`, `const`,
`properties` (emitted in the schema's order), `required` (other properties may be left out), `items`,
`minItems` / `maxItems`, `minLength` / `maxLength` / `pattern` on strings, `anyOf` / `oneOf` (as
alternatives), `$ref`-free nesting. Left out: `$ref`, `additionalProperties` (never emitted),
`patternProperties`, numeric bounds (`minimum`, `maximum`, `multipleOf`), `format`, `allOf`, `not`,
`uniqueItems`, dependent keywords; a `pattern` must not need JSON escaping.
"""

from __future__ import annotations

import json
import re
from typing import Any

WS = "[ ]?"
STRING_CHAR = r'(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})'
TYPES = {
    "string": f'"{STRING_CHAR}*"',
    "integer": r"-?(?:0|[1-9][0-9]*)",
    "number": r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?",
    "boolean": "(?:true|false)",
    "null": "null",
}
SUPPORTED = {
    "type", "enum", "const", "properties", "required", "items", "minItems", "maxItems", "minLength", "maxLength",
    "pattern", "anyOf", "oneOf", "title", "description", "default", "additionalProperties", "$schema", "examples",
}  # fmt: skip


def literal(value: Any) -> str:
    """Regex matching exactly the compact JSON of `value`."""
    return re.escape(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def schema_to_regex(schema: dict[str, Any], where: str = "schema") -> str:
    if not isinstance(schema, dict):
        raise ValueError(f"{where}: expected a JSON-Schema object, got {schema!r}")
    unknown = set(schema) - SUPPORTED
    if unknown:
        raise ValueError(f"{where}: unsupported JSON-Schema keyword(s) {sorted(unknown)}; see docs/generate.md")
    if "const" in schema:
        return literal(schema["const"])
    if "enum" in schema:
        return "(?:" + "|".join(literal(v) for v in schema["enum"]) + ")"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            opts = [schema_to_regex(s, f"{where}.{key}[{i}]") for i, s in enumerate(schema[key])]
            return "(?:" + "|".join(opts) + ")"
    kind = schema.get("type")
    if isinstance(kind, list):
        return "(?:" + "|".join(schema_to_regex({**schema, "type": k}, where) for k in kind) + ")"
    if kind == "object" or (kind is None and "properties" in schema):
        return _object(schema, where)
    if kind == "array":
        return _array(schema, where)
    if kind == "string":
        return _string(schema)
    if kind in TYPES:
        return TYPES[kind]
    if kind is None:  # any value: one level of scalars (nesting would not be regular)
        return "(?:" + "|".join(TYPES.values()) + ")"
    raise ValueError(f"{where}.type: unsupported type {kind!r}; expected one of {sorted(TYPES) + ['array', 'object']}")


def _string(schema: dict[str, Any]) -> str:
    if "pattern" in schema:
        return '"' + schema["pattern"].removeprefix("^").removesuffix("$") + '"'
    lo, hi = schema.get("minLength", 0), schema.get("maxLength")
    if lo == 0 and hi is None:
        return TYPES["string"]
    return f'"{STRING_CHAR}{{{lo},{"" if hi is None else hi}}}"'


def _array(schema: dict[str, Any], where: str) -> str:
    item = schema_to_regex(schema.get("items", {}), f"{where}.items")
    lo, hi = schema.get("minItems", 0), schema.get("maxItems")
    if hi == 0:
        return r"\[\]"
    more_lo = max(lo - 1, 0)
    more_hi = "" if hi is None else str(hi - 1)
    body = f"{item}(?:,{WS}{item}){{{more_lo},{more_hi}}}"
    return rf"\[{body}\]" if lo >= 1 else rf"\[(?:{body})?\]"


def _object(schema: dict[str, Any], where: str) -> str:
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    missing = required - set(props)
    if missing:
        raise ValueError(f"{where}.required: {sorted(missing)} not in properties")
    items = [
        (f"{literal(name)}:{WS}{schema_to_regex(sub, f'{where}.properties.{name}')}", name in required)
        for name, sub in props.items()
    ]
    return r"\{" + _members(items) + r"\}"


def _members(items: list[tuple[str, bool]]) -> str:
    """Properties in order, optional ones omissible, commas only between emitted ones.

    none_yet(i): members i.. when nothing was emitted; after(i): members i.. when something was (comma first)."""

    def after(i: int) -> str:
        return "".join(f"(?:,{WS}{r})" + ("" if req else "?") for r, req in items[i:])

    def none_yet(i: int) -> str:
        if i == len(items):
            return ""
        r, req = items[i]
        if req:
            return r + after(i + 1)
        return f"(?:{r}{after(i + 1)}|{none_yet(i + 1)})"

    return none_yet(0)

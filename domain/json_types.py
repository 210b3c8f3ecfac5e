"""The types of JSON-shaped data: event payloads, HTTP bodies, configuration, rows.

Event attributes are stored as JSON (eventsourcing's JSON transcoder), HTTP
bodies and CPI answers are JSON, and so are the stored views' columns: a
value of these types is what survives that round trip. Code that needs a
field's type narrows it where it reads it (isinstance, or a TypedDict where
the shape is fixed), rather than declaring the whole value `Any` (decision 40).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias, Union

JsonScalar: TypeAlias = str | int | float | bool | None
# Recursive: mypy follows the quoted names (the `|` form cannot quote them).
JsonValue: TypeAlias = Union[JsonScalar, list["JsonValue"], dict[str, "JsonValue"]]  # noqa: UP007
JsonObject: TypeAlias = dict[str, JsonValue]
JsonList: TypeAlias = list[JsonValue]
# A read-only JSON object: accepts a dict of any narrower value type (Mapping is
# covariant in its values; dict is not), so a `dict[str, str]` may be passed.
JsonMapping: TypeAlias = Mapping[str, JsonValue]
# A database row as a dict row factory gives it: columns are read, never written
# back through it; each reader narrows the column it uses.
Row: TypeAlias = Mapping[str, object]


def text(value: object) -> str | None:
    """A JSON field read as text: the string, or None when it is absent or not one."""
    return value if isinstance(value, str) else None


def json_object(value: object) -> JsonObject | None:
    """A JSON field read as an object: the dict, or None when it is absent or not one."""
    return value if isinstance(value, dict) else None

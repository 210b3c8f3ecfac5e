"""Value rules for names and CIDs shared by the domain, the API schemas, the
configuration, the CLI and the CPIs.

One safe character set everywhere: it keeps names usable as directory names
(local CPI), in URLs and in IaaS tags, and makes path traversal impossible.

A rule always holds for the WHOLE string. The `*_PATTERN` strings are for the
API document (JSON Schema, whose `$` ends the input); in Python `$` also
matches before a trailing newline (`"db\\n"` would pass), so Python code uses
the compiled `*_RE` rules (`\\A...\\Z`) or the `is_valid_*` functions, never
the pattern strings with `re.match`.
"""

from __future__ import annotations

import re

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
CID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$"
TASK_ID_PATTERN = r"^[0-9a-fA-F-]{1,64}$"


def whole(pattern: str) -> re.Pattern[str]:
    """A document pattern (`^...$`) as a Python rule that must match the whole string."""
    body = pattern.removeprefix("^").removesuffix("$")
    return re.compile(rf"\A(?:{body})\Z")


NAME_RE = whole(NAME_PATTERN)
CID_RE = whole(CID_PATTERN)
TASK_ID_RE = whole(TASK_ID_PATTERN)

# Deployment names snapledger uses itself (self snapshots) or that would be
# ambiguous in URLs and listings.
RESERVED_DEPLOYMENT_NAMES = frozenset({"_self", "self", "all", "config", "info", "tasks", "events"})
SELF_DEPLOYMENT = "_self"


def is_valid_name(value: object) -> bool:
    return isinstance(value, str) and bool(NAME_RE.match(value)) and value not in {".", ".."}


def is_valid_cid(value: object) -> bool:
    return isinstance(value, str) and bool(CID_RE.match(value)) and ".." not in value

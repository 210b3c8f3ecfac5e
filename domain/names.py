"""Value rules for names and CIDs shared by the domain, the API schemas and the CPIs.

One safe character set everywhere: it keeps names usable as directory names
(local CPI), in URLs and in IaaS tags, and makes path traversal impossible.
"""

from __future__ import annotations

import re

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
CID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$"
_NAME = re.compile(NAME_PATTERN)
_CID = re.compile(CID_PATTERN)

# Deployment names snapledger uses itself (self snapshots) or that would be
# ambiguous in URLs and listings.
RESERVED_DEPLOYMENT_NAMES = frozenset({"_self", "self", "all", "config", "info", "tasks", "events"})
SELF_DEPLOYMENT = "_self"


def is_valid_name(value: str) -> bool:
    return bool(_NAME.match(value)) and value not in {".", ".."}


def is_valid_cid(value: str) -> bool:
    # fullmatch: `$` alone would accept a trailing newline.
    return bool(_CID.fullmatch(value)) and ".." not in value

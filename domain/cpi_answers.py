"""What a CPI's answers must be before the ledger stores them.

A CPI is outside code, and what it answers is copied onto events, listed,
and later sent back to it in URLs and CPI calls. So every answer the ledger
keeps is checked here, for every CPI (local or external), and a violation is
the call's failure (`Snapledger::Cpi::InvalidResponse`, naming what was
wrong), never a stored value:

- a CID (snapshot, VM, disk) must be a CID the API can address later:
  `names.CID_PATTERN` (1-255 characters of letters, digits and `._:-`, no
  `..`, the whole string: no trailing newline). The 100,000-character CID or
  `../../etc/snap\\nX` a CPI may answer is refused, not listed undeletable;
- `get_disks`: a list of such CIDs, at most MAX_DISKS, without repeats;
- error messages are clipped to MAX_MESSAGE_CHARS where they are recorded
  (CpiError.as_dict), logs to cpi_calls.MAX_LOG_CHARS.
"""

from __future__ import annotations

import json

from .cpi import INVALID_RESPONSE, CpiError
from .names import CID_PATTERN, is_valid_cid

MAX_DISKS = 1024  # disks of one VM: far above any IaaS's attachment limit
_SHOWN_CHARS = 80  # how much of a bad answer the error quotes


def _shown(value: object) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}... ({len(text)} characters)"


def cid_problem(value: object) -> str | None:
    """What is wrong with `value` as a CID, or None."""
    if not isinstance(value, str):
        return f"must be a string, got {_shown(value)}"
    if not value:
        return "must not be empty"
    if len(value) > 255:
        return f"is {len(value)} characters long (at most 255): {_shown(value)}"
    if not is_valid_cid(value):
        return f"must match {CID_PATTERN} without '..': {_shown(value)}"
    return None


def disks_problem(value: object) -> str | None:
    if not isinstance(value, list):
        return f"must be a list of disk CIDs, got {_shown(value)}"
    if len(value) > MAX_DISKS:
        return f"lists {len(value)} disks (at most {MAX_DISKS})"
    for n, item in enumerate(value):
        if (problem := cid_problem(item)) is not None:
            return f"item {n} {problem}"
    if len(set(value)) != len(value):
        return f"lists a disk twice: {_shown(value)}"
    return None


def checked(method: str, what: str, problem: str | None) -> None:
    """The call's InvalidResponse failure when its answer has a `problem`."""
    if problem is not None:
        raise CpiError(INVALID_RESPONSE, f"Invalid CPI response - '{method}' answered a {what} that {problem}")


# A CPI's answer is JSON, any shape; each of these returns it typed once checked
# (the `str(...)`s convert nothing: the check accepted only strings).

def snapshot_cid(value: object) -> str:
    checked("snapshot_disk", "snapshot CID", cid_problem(value))
    return str(value)


def vm_cid(value: object) -> str:
    checked("current_vm_id", "VM CID", cid_problem(value))
    return str(value)


def disk_cids(value: object) -> list[str]:
    checked("get_disks", "disk list", disks_problem(value))
    return [str(cid) for cid in value] if isinstance(value, list) else []

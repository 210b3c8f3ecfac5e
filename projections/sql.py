"""SQL text built from the domain's names, so a state is spelled once."""

from __future__ import annotations

import re
from collections.abc import Iterable

_NAME = re.compile(r"[a-z_]+")


def state_in(states: Iterable[str], column: str = "state") -> str:
    """`state IN ('a', 'b')` for constant state names (sorted: the same text in every process).

    Literals, not parameters: the clause is spliced into statements whose
    parameters are the caller's; a name that is not a plain identifier is refused."""
    names = sorted(states)
    for name in names:
        if not _NAME.fullmatch(name):
            raise ValueError(f"not a state name: {name!r}")
    return f"{column} IN ({', '.join(repr(name) for name in names)})"

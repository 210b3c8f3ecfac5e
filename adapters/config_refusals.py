"""How a refused configuration is reported: the key, what is wrong, where it
was set (file or variable), and for an unknown key the known one it most
likely meant."""

from __future__ import annotations

import difflib
from pathlib import Path


class ConfigError(ValueError):
    """A refused configuration; `source` is the file or variable it came from."""

    def __init__(self, key: str, message: str, source: str | None = None) -> None:
        super().__init__(f"{source + ': ' if source else ''}config key '{key}': {message}")
        self.key = key
        self.detail = message
        self.source = source


class BadConfigFile(ConfigError):
    """The file itself: unreadable, not YAML, not a mapping."""

    def __init__(self, path: str | Path, message: str) -> None:
        ValueError.__init__(self, f"{path}: {message}")
        self.key, self.detail, self.source = "config", message, str(path)


class UnknownKey(ConfigError):
    def __init__(self, key: str, nearest: str | None, source: str, what: str = "key") -> None:
        hint = f" (did you mean '{nearest}'?)" if nearest else ""
        ValueError.__init__(self, f"{source}: unknown {what} '{key}'{hint}")
        self.key, self.nearest, self.source = key, nearest, source


def nearest(key: str, known: list[str]) -> str | None:
    """The known key a typo most likely meant: a close spelling, else the same
    name in another section (`port` -> `listen.port`)."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return close[0]
    leaf = key.rsplit(".", 1)[-1]
    # A bare `port` or `host` means the API's own (not the Director's or metrics').
    same_leaf = sorted((k for k in known if k.rsplit(".", 1)[-1] == leaf),
                       key=lambda k: (not k.startswith("listen."), k))
    return same_leaf[0] if same_leaf else None

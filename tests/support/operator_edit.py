"""What an operator changes with `sudoedit /etc/snapledger/snapledger.yml` on this
machine (README "Installing it on a server"): the database (the local
PostgreSQL over its socket: it has no TLS certificate for verify-full), a
user's hash (of README_INSTALL_SECRET), the CPI (the built-in local one: no
IaaS here). Used by tests/e2e/test_readme_install.py as `sudoedit`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml


def edit(config: dict[str, Any], secret: str, socket: str = "/var/run/postgresql") -> dict[str, Any]:
    from snapledger.api.auth import hash_secret

    users = [dict(u) for u in config["auth"]["users"]]
    users[0]["secret_hash"] = hash_secret(secret)
    return {**config, "database": f"postgresql://snapledger@/snapledger?host={socket}&schema=snapledger",
            "auth": {**config["auth"], "users": users},
            "cpis": {"local": {"type": "local"}}, "default_cpi": "local"}


if __name__ == "__main__":
    path = Path(sys.argv[1])
    edited = edit(yaml.safe_load(path.read_text()), os.environ["README_INSTALL_SECRET"])
    path.write_text(yaml.safe_dump(edited, sort_keys=False))

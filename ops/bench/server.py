"""A snapledger process for the benchmarks: the real runtime (bootstrap,
create_app) with the roles the benchmark chooses, e.g. `api,projector` in one
process for SQLite's embedded mode. `--cpi instant` swaps the configured CPIs
for one that answers at once, so a benchmark measures the ledger, not an IaaS.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--roles", required=True)
    parser.add_argument("--cpi", default="")
    args = parser.parse_args()

    from aiohttp import web

    from snapledger.adapters.config import load_config
    from snapledger.adapters.logging import configure_logging
    from snapledger.adapters.bootstrap import bootstrap
    from snapledger.api.app import create_app
    from snapledger.api.cli_server import run_until_signalled

    config = load_config(args.config)
    configure_logging(config.log_format, config.log_level)
    roles = set(args.roles.split(","))
    cpis = None
    if args.cpi == "instant":
        from instant_cpi import InstantCpi

        cpis = {name: InstantCpi() for name in config.cpi_specs()}
    runtime = bootstrap(config, roles, cpis=cpis)
    if "api" in roles:
        web.run_app(create_app(runtime), host=config.host, port=config.port, print=None,
                    access_log=None)
        return
    run_until_signalled(runtime)


if __name__ == "__main__":
    main()

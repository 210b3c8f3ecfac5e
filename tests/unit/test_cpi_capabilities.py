"""What a CPI can do beyond BOSH's protocol is decided by capability (its
methods, `isinstance` against the Protocols of domain/cpi.py), never by its
type name, and a rate-limit wrapper keeps exactly the wrapped CPI's."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapledger.adapters.config import CpiSpec
from snapledger.adapters.cpi.external import ExternalCpi
from snapledger.adapters.cpi.kinds import restoring_cpis
from snapledger.adapters.cpi.local import LocalCpi
from snapledger.adapters.rate_limit import rate_limited
from snapledger.adapters.store import open_database, parse_store_url
from snapledger.domain.cpi import CAPABILITIES, FindsSnapshots, RecordsCalls, RestoresSnapshots, calls_made
from snapledger.domain.rate_limit import Rate, RateLimit
from support.fakes import FakeCpi


def _local(tmp_path: Path) -> LocalCpi:
    return LocalCpi(tmp_path / "disks", tmp_path / "snapshots", vm_id="vm-1")


def _external() -> ExternalCpi:
    return ExternalCpi("aws", "/bin/false", director_uuid="d")


def test_the_capability_members_are_the_protocols_own() -> None:
    for capability, members in CAPABILITIES.items():
        declared = {name for name in vars(capability) if not name.startswith("_")}
        assert declared == set(members), capability


def test_the_adapters_capabilities(tmp_path: Path) -> None:
    local, external, fake = _local(tmp_path), _external(), FakeCpi()
    assert all(isinstance(local, c) for c in (RecordsCalls, FindsSnapshots, RestoresSnapshots))
    assert isinstance(external, RecordsCalls)
    assert not isinstance(external, FindsSnapshots) and not isinstance(external, RestoresSnapshots)
    assert not isinstance(fake, RecordsCalls) and calls_made(fake) == []


def test_restoring_cpis_by_capability_of_the_adapter() -> None:
    specs = {"local": CpiSpec(name="local", type="local"), "aws": CpiSpec(name="aws", type="external")}
    assert restoring_cpis(specs) == {"local"}


@pytest.mark.parametrize("kind", ["local", "external"])
def test_a_rate_limited_cpi_keeps_the_wrapped_capabilities(kind: str, tmp_path: Path) -> None:
    cpi = _local(tmp_path) if kind == "local" else _external()
    db = open_database(parse_store_url(f"sqlite:///{tmp_path / 'limits.sqlite'}"))
    wrapped = rate_limited({kind: cpi}, {kind: RateLimit(rate=Rate(calls=10, per_s=1.0))}, db)[kind]
    assert wrapped is not cpi
    for capability, members in CAPABILITIES.items():
        assert isinstance(wrapped, capability) == isinstance(cpi, capability), capability
        for name in members if isinstance(cpi, capability) else ():
            # Declared on the class: what isinstance looks at from Python 3.12 on.
            assert name in vars(type(wrapped)), name

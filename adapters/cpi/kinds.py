"""The CPI adapters by the `type` a configured CPI names, and what each can do.

What a CPI can do is read from its adapter's class (the capability Protocols
of domain/cpi.py), so the API process knows which CPIs can restore without
building them (only workers build CPIs)."""

from __future__ import annotations

from collections.abc import Mapping

from snapledger.domain.cpi import RestoresSnapshots

from ..config import CpiSpec
from .external import ExternalCpi
from .local import LocalCpi

ADAPTERS: dict[str, type] = {"local": LocalCpi, "external": ExternalCpi}


def restoring_cpis(specs: Mapping[str, CpiSpec]) -> frozenset[str]:
    """The names of the configured CPIs whose adapter can restore a snapshot."""
    return frozenset(name for name, spec in specs.items() if issubclass(ADAPTERS[spec.type], RestoresSnapshots))

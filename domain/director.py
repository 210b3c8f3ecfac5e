"""Who we are in the CPI metadata (BOSH: director_name / director_uuid)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Director:
    name: str = "snapledger"
    uuid: str = "00000000-0000-0000-0000-000000000000"

"""A CPI that answers at once (the fan-out benchmark measures the ledger, not an IaaS)."""

from __future__ import annotations

import uuid
from typing import Any


class InstantCpi:
    name = "instant"
    last_call = None

    def info(self) -> dict[str, Any]:
        return {"stemcell_formats": [], "api_version": 2}

    def snapshot_disk(self, disk_cid: str, metadata: dict[str, Any]) -> str:
        # Deterministic per operation, like the local CPI: a retried call gives the same CID.
        return f"snap-{uuid.uuid5(uuid.NAMESPACE_URL, str(metadata.get('snapledger_operation_id')))}"

    def delete_snapshot(self, snapshot_cid: str) -> None:
        return None

    def current_vm_id(self) -> str:
        return "vm-bench"

    def get_disks(self, vm_cid: str) -> list[str]:
        return []

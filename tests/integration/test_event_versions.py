"""Schema evolution: an event stored by an older version still reads after
its class changed (Deployment.InventoryRecorded v1 had no `cpi`)."""

from __future__ import annotations

import json
from uuid import uuid4

from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from snapledger.adapters.store import ledger_env, parse_store_url
from snapledger.domain.application import Ledger
from snapledger.domain.deployment import Deployment, deployment_id


def test_a_version_1_event_still_reads(store_url: str) -> None:
    ledger = Ledger(env=ledger_env(parse_store_url(store_url)), default_cpi="local")
    try:
        name = f"old-{uuid4().hex[:6]}"
        dep = Deployment(name=name, actor="op")
        dep.record_inventory(tags={"team": "blue"}, instances=[{"job": "db", "index": 0, "disks": ["d1"]}],
                             actor="op", cpi="aws")
        registered, recorded = (ledger.store.mapper.to_stored_event(e) for e in dep.collect_events())
        # What release 0.1 stored: no `cpi` field and no class_version in the state.
        state = json.loads(recorded.state)
        assert state.pop("cpi") == "aws" and state.pop("class_version") == 2
        v1 = StoredEvent(originator_id=recorded.originator_id, originator_version=recorded.originator_version,
                         topic=get_topic(Deployment.InventoryRecorded), state=json.dumps(state).encode())
        ledger.store.recorder.insert_events([registered, v1])

        old = ledger.deployments.get(name)
        assert old.id == deployment_id(name)
        assert old.cpi is None and ledger.deployments.cpi_of(old) == "local"  # v1: the default CPI
        assert old.tags == {"team": "blue"} and old.instances[0]["disks"] == ["d1"]
        # New events of the same aggregate are version 2 and keep their field.
        ledger.deployments.record(name, {}, [{"job": "db", "index": 0, "disks": ["d1"]}], actor="op", cpi="local")
        assert ledger.deployments.get(name).cpi == "local"
    finally:
        ledger.close()

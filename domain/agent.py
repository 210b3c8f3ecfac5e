"""The agent boundary: drain and stop the release jobs of one instance (BOSH agent `drain`, `stop`).

The domain only sees this interface and plain results; how scripts are found
and run (locally, over NATS, ...) is an adapter's business.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol
from collections.abc import Callable, Mapping

from .json_types import JsonMapping, JsonObject

UPDATE, SHUTDOWN = "update", "shutdown"
DRAIN_TYPES = (UPDATE, SHUTDOWN)

# Error types recorded on a failed step (the event's `error.type`).
DRAIN_SCRIPT_FAILED = "DrainScriptFailed"  # non-zero exit
DRAIN_INVALID_OUTPUT = "DrainInvalidOutput"  # stdout not one signed integer
DRAIN_TIMEOUT = "DrainTimeout"
STOP_FAILED = "StopFailed"
STOP_TIMEOUT = "StopTimeout"
DRAIN_CANCELLED = "DrainCancelled"  # snapledger stopped while the drain ran
STOP_CANCELLED = "StopCancelled"
# The environment variables of BOSH's drain contract (recorded with each call).
CONTRACT_ENV = ("BOSH_JOB_STATE", "BOSH_JOB_NEXT_STATE")
AGENT_ERROR = "AgentError"  # the adapter itself failed (cannot run the script, a bug)
# The worker running a drain or stop died (found by the recovery sweeps; the step is not repeated).
WORKER_LOST = "Snapledger::WorkerLost"


@dataclass(frozen=True)
class AgentInstance:
    """What an agent needs to know about the instance it acts on."""

    deployment: str
    job: str  # the instance group
    index: int | None
    id: str
    jobs: tuple[str, ...]  # the release jobs running on the instance

    @property
    def label(self) -> str:
        return f"{self.job}/{self.index if self.index is not None else self.id}"


@dataclass
class ScriptCall:
    """One run of a job's script, as recorded in the task's events."""

    argv: list[str]
    exit_code: int | None  # None: killed (time-out) or never started
    stdout: str
    stderr: str
    duration_s: float
    value: int | None = None  # the drain script's integer
    waited_s: float = 0.0  # the wait the value asked for (seconds, as the script said)
    # The contract's variables the call got (BOSH_JOB_STATE, BOSH_JOB_NEXT_STATE); an
    # absent key was unset. Only these: the rest of the environment is the host's.
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class JobResult:
    job: str
    ok: bool
    calls: list[ScriptCall] = field(default_factory=list)
    skipped: str | None = None  # e.g. "no drain script"
    error: dict[str, str] | None = None  # {type, message}


@dataclass
class AgentResult:
    """The outcome of `drain` or `stop` over every job of one instance."""

    ok: bool
    jobs: list[JobResult]
    duration_s: float = 0.0

    @property
    def error(self) -> dict[str, str] | None:
        """The first failed job's error, naming the job."""
        for job in self.jobs:
            if not job.ok:
                error = job.error or {"type": AGENT_ERROR, "message": "failed"}
                return {"type": error["type"], "message": f"job {job.job}: {error['message']}"}
        return None

    def as_dict(self) -> JsonObject:
        return {"ok": self.ok, "duration_s": round(self.duration_s, 6), "jobs": [asdict(j) for j in self.jobs]}

    @classmethod
    def failure(cls, jobs: tuple[str, ...], error_type: str, message: str) -> AgentResult:
        return cls(ok=False, jobs=[JobResult(job=j, ok=False, error={"type": error_type, "message": message})
                                   for j in (jobs or ("?",))])


DrainResult = AgentResult
StopResult = AgentResult


class Agent(Protocol):
    def drain(self, instance: AgentInstance, drain_type: str, current_state: JsonMapping | None,
              next_state: JsonMapping | None) -> DrainResult:
        """Run every job's drain script (in parallel) to completion, waits included.
        A state of None is not given to the scripts."""

    def stop(self, instance: AgentInstance) -> StopResult:
        """Stop every job of the instance."""


# The drain scripts' BOSH_JOB_STATE / BOSH_JOB_NEXT_STATE -------------------------------

def recorded_state(inst: Mapping[str, object]) -> JsonObject:
    """An instance's BOSH_JOB_STATE from its inventory: `{"persistent_disk": MB}`,
    or `{}` when the inventory does not record the size (never a made-up 0,
    which a drain script reads as "no disk")."""
    size = inst.get("persistent_disk")
    return {"persistent_disk": size} if isinstance(size, int) else {}


def drain_states(inst: Mapping[str, object], current: JsonMapping | None,
                 announced_next: JsonMapping | None) -> tuple[JsonObject, JsonObject]:
    """What one instance's drain scripts get, as the BOSH agent gives it:
    BOSH_JOB_STATE the recorded size (or what the announcement says it is);
    BOSH_JOB_NEXT_STATE the announced next size, else the current one
    (unchanged). 0 only when the announcement says the disk goes away."""
    cur = dict(current) if current is not None else recorded_state(inst)
    nxt = dict(announced_next) if announced_next is not None else dict(cur)
    return cur, nxt


def restore_states(inst: Mapping[str, object]) -> tuple[JsonObject, JsonObject]:
    """An in-place restore's drain (job_shutdown): the disk stays as it is, so
    the next state is the recorded one, never 0 (a script that moves data off
    a disk whose next size is 0 must not here)."""
    state = recorded_state(inst)
    return state, dict(state)


# Drain, then stop: the one order every runner drives an instance in ----------------------

def agent_call(step: Callable[[], AgentResult], target: AgentInstance) -> AgentResult:
    """Run one agent step; an adapter that broke is a failed step, recorded, never lost."""
    try:
        return step()
    except Exception as error:
        return AgentResult.failure(target.jobs, AGENT_ERROR, f"{type(error).__name__}: {error}")


def drain_then_stop(agent: Agent, target: AgentInstance, drain_type: str, current_state: JsonMapping | None,
                    next_state: JsonMapping | None, record: Callable[[str, AgentResult], bool],
                    log_step: Callable[[str, AgentResult], None]) -> bool:
    """Drain the instance's jobs, record the outcome; only when it succeeded and was
    recorded, stop them and record that. `record(step, result)` ("drain", "stop")
    answers whether the step succeeded and is recorded. True: both were."""
    drained = agent_call(lambda: agent.drain(target, drain_type, current_state, next_state), target)
    log_step("drain", drained)
    if not record("drain", drained):
        return False
    stopped = agent_call(lambda: agent.stop(target), target)
    log_step("stop", stopped)
    return record("stop", stopped)

"""A local agent: runs the BOSH drain contract against job scripts in a directory.

Layout (like `/var/vcap/jobs` on a BOSH VM): `<jobs_dir>/<job>/bin/drain`, and
optionally `<jobs_dir>/<job>/bin/stop`. The contract (bosh-agent
`agent/script/drain`, docs-bosh `drain.md`):

- argv `job_changed hash_changed` (update) or `job_shutdown hash_unchanged`
  (shutdown); env `BOSH_JOB_STATE` / `BOSH_JOB_NEXT_STATE` as JSON;
- stdout exactly one signed integer: `n >= 0` wait n seconds, done; `n < 0`
  wait |n| seconds and call again with `job_check_status hash_unchanged`
  (without `BOSH_JOB_NEXT_STATE`) until the answer is non-negative;
- anything else on stdout, or a non-zero exit, fails the drain;
- the drain scripts of all jobs of the instance run in parallel.

Unlike BOSH, a drain time-out can be configured (default none, as BOSH): it
bounds one job's whole drain (calls and waits) and kills the script's whole
process group, so a script's children cannot keep it alive.

Stop: `bin/stop` if the job has one, else the configured stop command
(`sh -c`, with `SNAPLEDGER_JOB` naming the job), else there is nothing to stop.
It is bounded by `stop_timeout_s` (BOSH: monit stop gives up after 5 minutes).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from snapledger.domain.agent import (AGENT_ERROR, CONTRACT_ENV, DRAIN_CANCELLED, DRAIN_INVALID_OUTPUT,
                                     DRAIN_SCRIPT_FAILED, DRAIN_TIMEOUT, SHUTDOWN, STOP_CANCELLED, STOP_FAILED,
                                     STOP_TIMEOUT, AgentInstance, AgentResult, JobResult, ScriptCall)
from snapledger.domain.json_types import JsonMapping
from snapledger.domain.log import Log

MAX_OUTPUT = 4096  # keep events small: a chatty script's output is clipped
SIGNED_INTEGER = re.compile(r"[+-]?[0-9]+")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_OUTPUT else text[:MAX_OUTPUT] + f"... [{len(text) - MAX_OUTPUT} chars clipped]"


class _TimedOut(Exception):
    def __init__(self, call: ScriptCall) -> None:
        self.call = call


class LocalAgent:
    def __init__(self, jobs_dir: Path, drain_timeout_s: float | None = None, stop_command: str | None = None,
                 stop_timeout_s: float = 300.0, wait_scale: float = 1.0,
                 sleep: Callable[[float], None] | None = None, log: Log | None = None) -> None:
        self.jobs_dir = Path(jobs_dir)
        self.drain_timeout_s = drain_timeout_s
        self.stop_command = stop_command or None
        self.stop_timeout_s = stop_timeout_s
        # 1.0 in production: a script's "wait 30 s" is 30 real seconds. Tests
        # scale waits down so the suite stays fast while the arithmetic is real.
        self.wait_scale = wait_scale
        # Waits end early when the agent is cancelled (the process is stopping).
        self._cancelled = threading.Event()
        self.sleep = sleep or self._cancelled.wait
        self.log = log
        self._running: set[subprocess.Popen[str]] = set()
        self._guard = threading.Lock()

    def cancel(self) -> None:
        """The process is stopping: kill running scripts (their process groups),
        end waits, start no more. Interrupted drains and stops fail as cancelled."""
        with self._guard:
            self._cancelled.set()
            running = list(self._running)
        for proc in running:
            self._kill_group(proc)

    # Agent interface -------------------------------------------------------------

    def drain(self, instance: AgentInstance, drain_type: str, current_state: JsonMapping | None,
              next_state: JsonMapping | None) -> AgentResult:
        env = {k: v for k, v in self._env(instance).items() if k not in ("BOSH_JOB_STATE", "BOSH_JOB_NEXT_STATE")}
        if current_state is not None:
            env["BOSH_JOB_STATE"] = json.dumps(current_state, sort_keys=True)
        if next_state is not None:
            env["BOSH_JOB_NEXT_STATE"] = json.dumps(next_state, sort_keys=True)
        argv = ["job_shutdown", "hash_unchanged"] if drain_type == SHUTDOWN else ["job_changed", "hash_changed"]
        return self._each_job(instance, lambda job: self._drain_job(job, argv, env))

    def stop(self, instance: AgentInstance) -> AgentResult:
        return self._each_job(instance, lambda job: self._stop_job(job, self._env(instance)))

    # Per job -------------------------------------------------------------------

    def _each_job(self, instance: AgentInstance, run: Callable[[str], JobResult]) -> AgentResult:
        started = time.monotonic()
        jobs = list(instance.jobs)
        if not jobs:
            return AgentResult(ok=True, jobs=[], duration_s=0.0)

        def safe(job: str) -> JobResult:
            try:
                return run(job)
            except Exception as error:  # never lose a failure: it becomes the job's result
                message = f"{type(error).__name__}: {error}"
                return JobResult(job=job, ok=False, error={"type": AGENT_ERROR, "message": message})

        # All jobs of the instance at once, as the BOSH agent does.
        with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="drain") as pool:
            results = list(pool.map(safe, jobs))
        return AgentResult(ok=all(r.ok for r in results), jobs=results, duration_s=time.monotonic() - started)

    def _drain_job(self, job: str, argv: list[str], env: dict[str, str]) -> JobResult:
        script = self.jobs_dir / job / "bin" / "drain"
        if not script.exists():
            return JobResult(job=job, ok=True, skipped=f"no drain script at {script}")
        deadline = None if self.drain_timeout_s is None else time.monotonic() + self.drain_timeout_s
        result = JobResult(job=job, ok=False)
        while True:
            try:
                call = self._run([str(script), *argv], env, deadline, cwd=script.parent.parent)
            except _TimedOut as timed_out:
                result.calls.append(timed_out.call)
                result.error = {"type": DRAIN_TIMEOUT,
                                "message": f"drain script did not finish within {self.drain_timeout_s} s; killed"}
                return result
            result.calls.append(call)
            if self._cancelled.is_set():
                result.error = {"type": DRAIN_CANCELLED, "message": "snapledger stopped during the drain"}
                return result
            if call.exit_code != 0:
                result.error = {"type": DRAIN_SCRIPT_FAILED, "message": f"drain script exited {call.exit_code}: "
                                f"stdout {call.stdout.strip()!r}, stderr {call.stderr.strip()!r}"}
                return result
            text = call.stdout.strip()
            if not SIGNED_INTEGER.fullmatch(text):
                result.error = {"type": DRAIN_INVALID_OUTPUT,
                                "message": f"Script did not return a signed integer: {_clip(call.stdout)!r}"}
                return result
            call.value = int(text)
            call.waited_s = float(abs(call.value))
            if not self._wait(call.waited_s, deadline) or self._cancelled.is_set():
                if self._cancelled.is_set():
                    result.error = {"type": DRAIN_CANCELLED, "message": "snapledger stopped during the drain"}
                    return result
                result.error = {"type": DRAIN_TIMEOUT, "message": f"drain asked to wait {call.waited_s:g} s, "
                                f"beyond the drain time-out of {self.drain_timeout_s} s"}
                return result
            if call.value >= 0:
                result.ok = True
                return result
            # Dynamic drain: ask again until the script says it is done.
            argv = ["job_check_status", "hash_unchanged"]
            env = {k: v for k, v in env.items() if k != "BOSH_JOB_NEXT_STATE"}

    def _stop_job(self, job: str, env: dict[str, str]) -> JobResult:
        script = self.jobs_dir / job / "bin" / "stop"
        if script.exists():
            command, cwd = [str(script)], script.parent.parent
        elif self.stop_command:
            command, cwd = ["/bin/sh", "-c", self.stop_command], None
        else:
            return JobResult(job=job, ok=True, skipped="no stop script and no stop command configured")
        env = {**env, "SNAPLEDGER_JOB": job}
        result = JobResult(job=job, ok=False)
        try:
            call = self._run(command, env, time.monotonic() + self.stop_timeout_s, cwd=cwd)
        except _TimedOut as timed_out:
            result.calls.append(timed_out.call)
            result.error = {"type": STOP_TIMEOUT,
                            "message": f"stop did not finish within {self.stop_timeout_s} s; killed"}
            return result
        result.calls.append(call)
        if self._cancelled.is_set():
            result.error = {"type": STOP_CANCELLED, "message": "snapledger stopped during the stop"}
            return result
        if call.exit_code != 0:
            result.error = {"type": STOP_FAILED, "message": f"stop exited {call.exit_code}: "
                            f"stdout {call.stdout.strip()!r}, stderr {call.stderr.strip()!r}"}
            return result
        result.ok = True
        return result

    # Processes ------------------------------------------------------------------

    def _env(self, instance: AgentInstance) -> dict[str, str]:
        env = dict(os.environ)
        # Not part of BOSH's contract: one local agent may stand for many instances.
        env.update(SNAPLEDGER_DEPLOYMENT=instance.deployment, SNAPLEDGER_INSTANCE=instance.label,
                   SNAPLEDGER_INSTANCE_ID=instance.id)
        return env

    def _run(self, argv: list[str], env: dict[str, str], deadline: float | None,
             cwd: Path | None = None) -> ScriptCall:
        started = time.monotonic()
        shown = list(argv)
        contract = {name: env[name] for name in CONTRACT_ENV if name in env}
        # Check, start and register under the lock cancel() takes: a script is
        # either never started or known to cancel() (started and registered
        # apart, a cancel in between left it running: a `sleep 300` outlived it).
        with self._guard:
            if self._cancelled.is_set():
                return ScriptCall(argv=shown, env=contract, exit_code=None, stdout="",
                                  stderr="not run: snapledger is stopping", duration_s=0.0)
            try:
                # A session of its own: on time-out the whole process group is killed.
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=env, cwd=cwd, start_new_session=True,
                                        text=True)
            except OSError as error:
                return ScriptCall(argv=shown, env=contract, exit_code=None, stdout="",
                                  stderr=f"cannot run {argv[0]}: {error}", duration_s=0.0)
            self._running.add(proc)
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_group(proc)
            stdout, stderr = proc.communicate()
            # The time-out is the result, not an error in handling one: no chained traceback.
            raise _TimedOut(ScriptCall(argv=shown, env=contract, exit_code=None, stdout=_clip(stdout or ""),
                                       stderr=_clip(stderr or ""),
                                       duration_s=round(time.monotonic() - started, 6))) from None
        finally:
            with self._guard:
                self._running.discard(proc)
        return ScriptCall(argv=shown, env=contract, exit_code=proc.returncode, stdout=_clip(stdout),
                          stderr=_clip(stderr), duration_s=round(time.monotonic() - started, 6))

    @staticmethod
    def _kill_group(proc: subprocess.Popen[str]) -> None:
        with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
            os.killpg(proc.pid, signal.SIGKILL)

    def _wait(self, seconds: float, deadline: float | None) -> bool:
        """Wait as the script asked; False when that would pass the deadline."""
        scaled = seconds * self.wait_scale
        if deadline is not None and time.monotonic() + scaled > deadline:
            self.sleep(max(deadline - time.monotonic(), 0.0))
            return False
        if scaled > 0:
            self.sleep(scaled)
        return True

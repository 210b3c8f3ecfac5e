"""The local agent against real bash drain and stop scripts (the BOSH drain contract)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from snapledger.adapters.agent_local import LocalAgent
from snapledger.domain.agent import AgentInstance

SCALE = 0.01  # a script's "wait 2 s" is 20 ms here; the recorded sleeps prove the arithmetic


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def drain_script(jobs_dir: Path, job: str, body: str) -> Path:
    return script(jobs_dir / job / "bin" / "drain", body)


def instance(*jobs: str) -> AgentInstance:
    return AgentInstance(deployment="prod", job="db", index=0, id="inst-0", jobs=tuple(jobs or ("db",)))


class Recorder:
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        time.sleep(seconds)


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Path:
    return tmp_path / "jobs"


def make_agent(jobs_dir: Path, **kwargs: Any) -> tuple[LocalAgent, Recorder]:
    recorder = Recorder()
    return LocalAgent(jobs_dir, wait_scale=SCALE, sleep=recorder, **kwargs), recorder


def test_static_drain_gets_the_contract_and_waits_as_told(jobs_dir: Path, tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    drain_script(jobs_dir, "db", f"""
printf '{{"args": "%s", "state": %s, "next": %s, "instance": "%s"}}' "$*" "$BOSH_JOB_STATE" \\
  "$BOSH_JOB_NEXT_STATE" "$SNAPLEDGER_INSTANCE" > {seen}
echo 2
""")
    agent, recorder = make_agent(jobs_dir)
    result = agent.drain(instance("db"), "update", {"persistent_disk": 1024}, {"persistent_disk": 2048})
    assert result.ok and result.error is None
    (call,) = result.jobs[0].calls
    assert call.value == 2 and call.waited_s == 2 and call.exit_code == 0
    assert recorder.sleeps == [pytest.approx(2 * SCALE)]
    assert json.loads(seen.read_text()) == {"args": "job_changed hash_changed", "state": {"persistent_disk": 1024},
                                            "next": {"persistent_disk": 2048}, "instance": "db/0"}


def test_shutdown_drain_arguments(jobs_dir: Path, tmp_path: Path) -> None:
    seen = tmp_path / "args"
    drain_script(jobs_dir, "db", f'echo "$*" > {seen}\necho 0\n')
    agent, recorder = make_agent(jobs_dir)
    assert agent.drain(instance(), "shutdown", {"persistent_disk": 1}, {"persistent_disk": 0}).ok
    assert seen.read_text().strip() == "job_shutdown hash_unchanged"
    assert recorder.sleeps == []  # 0: done at once


def test_dynamic_drain_asks_again_until_non_negative(jobs_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "calls"
    drain_script(jobs_dir, "db", f"""
echo "$* next=${{BOSH_JOB_NEXT_STATE-unset}}" >> {log}
n=$(wc -l < {log})
case $n in 1) echo -1 ;; 2) echo -3 ;; 3) echo -2 ;; *) echo 0 ;; esac
""")
    agent, recorder = make_agent(jobs_dir)
    result = agent.drain(instance(), "update", {"persistent_disk": 1}, {"persistent_disk": 1})
    assert result.ok
    calls = result.jobs[0].calls
    assert [c.value for c in calls] == [-1, -3, -2, 0]
    assert log.read_text().splitlines() == [
        'job_changed hash_changed next={"persistent_disk": 1}',
        # BOSH re-invokes with job_check_status and no next state
        "job_check_status hash_unchanged next=unset",
        "job_check_status hash_unchanged next=unset",
        "job_check_status hash_unchanged next=unset",
    ]
    assert recorder.sleeps == [pytest.approx(s * SCALE) for s in (1, 3, 2)]


@pytest.mark.parametrize("output", ["soon", "1\n2", "", "3.5", "0x10"])
def test_output_that_is_not_one_signed_integer_fails_the_drain(jobs_dir: Path, output: str) -> None:
    drain_script(jobs_dir, "db", f"printf '%s\\n' '{output}'\n")
    agent, recorder = make_agent(jobs_dir)
    result = agent.drain(instance(), "update", {}, {})
    assert not result.ok
    assert result.error["type"] == "DrainInvalidOutput"
    assert "did not return a signed integer" in result.error["message"]
    assert result.jobs[0].calls[0].stdout == f"{output}\n"  # the output is recorded
    assert recorder.sleeps == []


def test_signed_integers_with_whitespace_and_plus_are_accepted(jobs_dir: Path) -> None:
    drain_script(jobs_dir, "db", "echo '  +1  '\n")
    agent, recorder = make_agent(jobs_dir)
    assert agent.drain(instance(), "update", {}, {}).ok
    assert recorder.sleeps == [pytest.approx(SCALE)]


def test_non_zero_exit_fails_the_drain_with_its_output(jobs_dir: Path) -> None:
    drain_script(jobs_dir, "db", "echo 0\necho 'cannot reach the leader' >&2\nexit 3\n")
    agent, _ = make_agent(jobs_dir)
    result = agent.drain(instance(), "update", {}, {})
    assert not result.ok
    assert result.error["type"] == "DrainScriptFailed"
    assert "exited 3" in result.error["message"] and "cannot reach the leader" in result.error["message"]
    call = result.jobs[0].calls[0]
    assert call.exit_code == 3 and "cannot reach the leader" in call.stderr


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status  # dead, waiting to be reaped


def test_drain_time_out_kills_the_whole_process_group(jobs_dir: Path, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    drain_script(jobs_dir, "db", f"sleep 300 &\necho $! >> {pids}\necho $$ >> {pids}\nwait\n")
    agent, _ = make_agent(jobs_dir, drain_timeout_s=0.5)
    result = agent.drain(instance(), "update", {}, {})
    assert not result.ok and result.error["type"] == "DrainTimeout"
    assert result.jobs[0].calls[0].exit_code is None
    recorded = [int(p) for p in pids.read_text().split()]
    assert len(recorded) == 2
    deadline = time.monotonic() + 10
    while not all(_gone(p) for p in recorded) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(p) for p in recorded), "the script's child survived the time-out"


def test_a_dynamic_drain_past_the_time_out_fails_without_waiting_it_out(jobs_dir: Path) -> None:
    drain_script(jobs_dir, "db", "echo -100000\n")
    agent = LocalAgent(jobs_dir, drain_timeout_s=0.2)  # real waits: 100000 s would hang the suite
    result = agent.drain(instance(), "update", {}, {})
    assert not result.ok and result.error["type"] == "DrainTimeout"
    assert "100000" in result.error["message"]


def test_drain_scripts_of_several_jobs_run_in_parallel(jobs_dir: Path, tmp_path: Path) -> None:
    # Each script waits for the other to have started: run one after the other, both would fail.
    for job, other in (("db", "backup"), ("backup", "db"), ("metrics", "db")):
        drain_script(jobs_dir, job, f"""
touch {tmp_path}/{job}.started
for i in $(seq 200); do [ -e {tmp_path}/{other}.started ] && {{ echo 1; exit 0; }}; sleep 0.05; done
exit 1
""")
    agent, recorder = make_agent(jobs_dir)
    result = agent.drain(instance("db", "backup", "metrics"), "update", {}, {})
    assert result.ok, result.error
    assert [j.job for j in result.jobs] == ["db", "backup", "metrics"]
    assert len(recorder.sleeps) == 3


def test_one_failing_job_fails_the_instance_and_is_named(jobs_dir: Path) -> None:
    drain_script(jobs_dir, "db", "echo 0\n")
    drain_script(jobs_dir, "backup", "echo nope\n")
    agent, _ = make_agent(jobs_dir)
    result = agent.drain(instance("db", "backup"), "update", {}, {})
    assert not result.ok
    assert [j.ok for j in result.jobs] == [True, False]
    assert result.error["message"].startswith("job backup:")


def test_jobs_without_a_drain_script_are_skipped(jobs_dir: Path) -> None:
    (jobs_dir / "db").mkdir(parents=True)
    agent, _ = make_agent(jobs_dir)
    result = agent.drain(instance("db", "absent"), "update", {}, {})
    assert result.ok and all(j.skipped and "no drain script" in j.skipped for j in result.jobs)


def test_a_drain_script_that_cannot_run_fails(jobs_dir: Path) -> None:
    path = drain_script(jobs_dir, "db", "echo 0\n")
    path.chmod(0o644)
    agent, _ = make_agent(jobs_dir)
    result = agent.drain(instance(), "update", {}, {})
    assert not result.ok and result.error["type"] == "DrainScriptFailed"
    assert "cannot run" in result.jobs[0].calls[0].stderr


def test_stop_runs_bin_stop_else_the_stop_command(jobs_dir: Path, tmp_path: Path) -> None:
    stopped = tmp_path / "stopped"
    script(jobs_dir / "db" / "bin" / "stop", f"echo db-script >> {stopped}\n")
    (jobs_dir / "backup" / "bin").mkdir(parents=True)
    agent, _ = make_agent(jobs_dir, stop_command=f'echo "command $SNAPLEDGER_JOB $SNAPLEDGER_INSTANCE" >> {stopped}')
    result = agent.stop(instance("db", "backup"))
    assert result.ok, result.error
    assert sorted(stopped.read_text().splitlines()) == ["command backup db/0", "db-script"]

    bare, _ = make_agent(jobs_dir)
    result = bare.stop(instance("backup"))
    assert result.ok and "no stop script" in result.jobs[0].skipped


def test_stop_failure_and_time_out(jobs_dir: Path) -> None:
    script(jobs_dir / "db" / "bin" / "stop", "echo 'monit: db still running' >&2\nexit 1\n")
    script(jobs_dir / "slow" / "bin" / "stop", "sleep 300\n")
    agent, _ = make_agent(jobs_dir, stop_timeout_s=0.3)
    result = agent.stop(instance("db"))
    assert not result.ok and result.error["type"] == "StopFailed" and "still running" in result.error["message"]
    result = agent.stop(instance("slow"))
    assert not result.ok and result.error["type"] == "StopTimeout"


def test_environment_is_inherited(jobs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAPLEDGER_TEST_MARKER", "kept")
    seen = tmp_path / "env"
    drain_script(jobs_dir, "db", f'echo "$SNAPLEDGER_TEST_MARKER" > {seen}\necho 0\n')
    agent, _ = make_agent(jobs_dir)
    assert agent.drain(instance(), "update", {}, {}).ok
    assert seen.read_text().strip() == "kept"
    assert os.environ["SNAPLEDGER_TEST_MARKER"] == "kept"


def test_cancel_ends_running_scripts_and_waits(jobs_dir: Path, tmp_path: Path) -> None:
    import threading

    started = tmp_path / "started"
    drain_script(jobs_dir, "db", f"touch {started}\nsleep 300\necho 0\n")
    drain_script(jobs_dir, "web", "echo 100000\n")  # asks for a (real) wait of 100000 s
    agent = LocalAgent(jobs_dir)
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(agent.drain(instance("db", "web"), "update", {}, {})))
    thread.start()
    deadline = time.monotonic() + 10
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    agent.cancel()  # what the worker does when the process stops
    thread.join(timeout=20)
    assert not thread.is_alive()
    (result,) = results
    assert not result.ok
    assert [j.error["type"] for j in result.jobs] == ["DrainCancelled", "DrainCancelled"]
    # A cancelled agent starts nothing more.
    again = agent.drain(instance("web"), "update", {}, {})
    assert not again.ok and "snapledger is stopping" in again.jobs[0].calls[0].stderr


def test_cancel_as_a_script_starts_kills_it(jobs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel that arrives while a script is being started (after the process
    exists, before the agent knows of it) still ends it: before, the script was
    registered after the start, so such a cancel missed it and a `sleep 300` kept
    the drain (and the stopping process) waiting."""
    import subprocess
    import threading

    import snapledger.adapters.agent_local as agent_local

    drain_script(jobs_dir, "db", "sleep 300\necho 0\n")
    agent = LocalAgent(jobs_dir)
    real_popen = subprocess.Popen

    def popen_then_cancel(*args: Any, **kwargs: Any) -> Any:
        proc = real_popen(*args, **kwargs)
        threading.Thread(target=agent.cancel).start()  # the stop signal, mid-start
        time.sleep(0.2)
        return proc

    monkeypatch.setattr(agent_local.subprocess, "Popen", popen_then_cancel)
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(agent.drain(instance("db"), "update", {}, {})))
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert [j.error["type"] for j in results[0].jobs] == ["DrainCancelled"]

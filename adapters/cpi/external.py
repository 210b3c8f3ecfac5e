"""Drive a BOSH CPI executable exactly as the BOSH Director does.

The external CPI protocol (bosh-director ``lib/cloud/external_cpi.rb``): one
process per call, the JSON request on stdin (stdin then closed), the JSON
response on stdout, free-form diagnostics on stderr. The exit code carries no
meaning -- only the response does -- so it is recorded, never trusted.

Everything an operator needs to debug a call (the CPI's ``log``, its stderr,
the exit code, the raw stdout when it was unusable) ends up in a
:class:`CallRecord` in ``last_call`` and in ``CpiError.log``, so the caller
can store it next to the snapshot it was working on.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import structlog

from snapledger.domain.cpi import (
    KNOWN_ERROR_TYPES,
    NOT_EXECUTABLE,
    TIMED_OUT,
    CallLog,
    CallRecord,
    CpiError,
)

from .external_protocol import (MIN_API_VERSION, Call, ResultCheck, error_from_response, invalid_response,
                                json_object, list_of_strings, non_empty_string, parse_response, require_supported)
from .call_processes import CallProcesses, StartWindow, TakeWindow, shared_call_processes
from .reaper import EXEC_FAILED, EXEC_FAILED_MARKER
from snapledger.domain.json_types import JsonList, JsonObject, JsonValue

log = structlog.get_logger(__name__)

# The Director runs CPIs with this PATH and nothing else it inherited
# (``unsetenv_others: true``): a CPI must not depend on the caller's environment.
CPI_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# Raw stdout is kept in the record only when it was invalid; bounded so a CPI
# spewing megabytes cannot bloat what the caller stores.
STDOUT_KEEP_CHARS = 10_000

_rng = random.SystemRandom()  # independent of any seeding done by the host program


class ExternalCpi:
    """A :class:`~snapledger.domain.cpi.Cpi` backed by a CPI executable."""

    def __init__(
        self,
        name: str,
        executable: str | Path,
        *,
        properties: JsonObject | None = None,
        director_uuid: str,
        timeout_s: float = 300.0,
        preferred_api_version: int = 2,
        env_passthrough: dict[str, str] | None = None,
        error_types: frozenset[str] = frozenset(),
        processes: CallProcesses | None = None,
    ) -> None:
        if preferred_api_version < MIN_API_VERSION:
            raise ValueError(f"preferred_api_version must be >= {MIN_API_VERSION}")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.name = name
        self.executable = str(executable)
        self.timeout_s = timeout_s
        self.preferred_api_version = preferred_api_version
        self._director_uuid = director_uuid
        # Kept private and never logged: CPI properties usually hold cloud credentials.
        self._properties = dict(properties or {})
        self._env_passthrough = dict(env_passthrough or {})
        # Error types this CPI is known to answer besides BOSH's own (its
        # throttling answer): kept as answered, not turned into UnknownError.
        self._error_types = KNOWN_ERROR_TYPES | error_types
        self._info: JsonObject | None = None
        self._info_lock = threading.Lock()
        self._calls = CallLog()
        self._processes = processes or shared_call_processes()
        self._window = threading.local()  # the current thread's next start window (starting_within)

    # --- the Cpi port ---------------------------------------------------------

    @property
    def last_call(self) -> CallRecord | None:
        """The record of the last call made by the current thread."""
        return self._calls.last

    def take_calls(self) -> list[CallRecord]:
        """Every call the current thread made since it last asked (`info` included)."""
        return self._calls.take()

    @contextlib.contextmanager
    def starting_within(self, window: StartWindow | TakeWindow) -> Iterator[None]:
        """The call the current thread makes meanwhile starts its process within `window`
        (or the window `window()` gives, asked once the call is ready to go): its
        rate-limit slot, kept by the call's reaper (adapters/cpi/reaper.py says why not
        by this thread); it raises MissedStart, never started, when that could not be.
        Its time-out and its duration count from the start."""
        self._window.current = window
        try:
            yield
        finally:
            self._window.current = None

    def info(self) -> JsonObject:
        """The CPI's ``info`` answer, fetched once per instance."""
        info = self._cached_info()
        require_supported(info)
        return copy.deepcopy(info)

    # Each result is JSON checked by its ResultCheck, then read as the type the check accepted
    # (the str()s convert nothing: the check let only strings through).

    def snapshot_disk(self, disk_cid: str, metadata: JsonObject) -> str:
        return str(self._call("snapshot_disk", [disk_cid, metadata], non_empty_string))

    def delete_snapshot(self, snapshot_cid: str) -> None:
        self._call("delete_snapshot", [snapshot_cid])

    def current_vm_id(self) -> str:
        return str(self._call("current_vm_id", [], non_empty_string))

    def get_disks(self, vm_cid: str) -> list[str]:
        cids = self._call("get_disks", [vm_cid], list_of_strings)
        return [str(cid) for cid in cids] if isinstance(cids, list) else []

    def create_disk(self, size_mb: int, cloud_properties: JsonObject, vm_cid: str | None) -> str:
        return str(self._call("create_disk", [size_mb, cloud_properties, vm_cid], non_empty_string))

    def call(self, method: str, arguments: JsonList) -> JsonValue:
        """Call any CPI method; the result is returned unvalidated."""
        if method == "info":
            return self.info()
        return self._call(method, arguments)

    # --- api version negotiation -------------------------------------------------

    def _call(self, method: str, arguments: JsonList, check: ResultCheck | None = None) -> JsonValue:
        api_version = self._api_version()  # a first call's `info` first, at once: it is not the limited call
        return self._invoke(method, arguments, api_version, check, getattr(self._window, "current", None))

    def _api_version(self) -> int:
        info = self._cached_info()
        return min(require_supported(info), self.preferred_api_version)

    def _cached_info(self) -> JsonObject:
        # Double-checked so concurrent first calls spawn a single `info` process.
        if self._info is None:
            with self._info_lock:
                if self._info is None:
                    self._info = self._fetch_info()
        return self._info

    def _fetch_info(self) -> JsonObject:
        try:
            # `info` is the one call made without api_version: it is how we learn it.
            info = self._invoke("info", [], None, json_object)
            return info if isinstance(info, dict) else {}
        except CpiError as e:
            if e.is_not_implemented:
                # The Director treats a CPI without `info` as API version 1.
                return {}
            raise

    # --- one process per call ------------------------------------------------------

    def _invoke(
        self, method: str, arguments: JsonList, api_version: int | None, check: ResultCheck | None,
        window: StartWindow | TakeWindow | None = None,
    ) -> JsonValue:
        request_id = f"cpi-{_rng.randint(100000, 999999)}"
        call = Call(method, request_id, time.monotonic())
        try:
            result = self._run(call, arguments, api_version, check, window)
        except CpiError as e:
            self._finish(call, e)
            raise
        call.answer = result
        self._finish(call, None)
        return result

    def _run(
        self, call: Call, arguments: JsonList, api_version: int | None, check: ResultCheck | None,
        window: StartWindow | TakeWindow | None,
    ) -> JsonValue:
        self._check_executable()
        request = self._request_json(call, arguments, api_version)
        stdout, call.stderr, call.exit_code = self._execute(call, request, window)
        response = parse_response(call, stdout)
        call.log = response["log"]
        if response["error"] is not None:
            raise error_from_response(call, response["error"], self._error_types)
        result = response["result"]
        if check is not None and (problem := check(result)) is not None:
            raise invalid_response(call, stdout, f"'{call.method}' result {problem}")
        return result

    def _check_executable(self) -> None:
        # Checked up front, as the Director does, so "not executable" is reported
        # as such instead of as an exec() errno.
        path = self.executable
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise CpiError(NOT_EXECUTABLE, f"Failed to run cpi: '{path}' is not executable")

    def _request_json(self, call: Call, arguments: JsonList, api_version: int | None) -> bytes:
        context = {"director_uuid": self._director_uuid, "request_id": call.request_id, **self._properties}
        request: JsonObject = {"method": call.method, "arguments": arguments, "context": context}
        if api_version is not None:
            request["api_version"] = api_version
        # No trailing newline: byte-for-byte what the Director writes.
        return json.dumps(request).encode()

    def _environment(self) -> dict[str, str]:
        env = {
            "PATH": CPI_PATH,
            "TMPDIR": os.environ.get("TMPDIR") or tempfile.gettempdir(),
        }
        home = os.environ.get("HOME")
        if home:
            env["HOME"] = home
        env.update(self._env_passthrough)
        return env

    def _execute(self, call: Call, request: bytes,
                 window: StartWindow | TakeWindow | None) -> tuple[str, str, int | None]:
        try:
            # Through a per-call reaper: the answer is taken when the CPI exits, and
            # nothing the CPI started outlives the call (adapters/cpi/reaper.py).
            finished = self._processes.run(self.executable, self._environment(), request, self.timeout_s,
                                           window=window)
        except OSError as e:  # the reaper server could not start the call
            raise CpiError(NOT_EXECUTABLE, f"Failed to run cpi: '{self.executable}' ({e.strerror or e})") from e
        stdout, stderr = _text(finished.stdout), _text(finished.stderr)
        call.start_ahead_s = finished.ahead_s
        if finished.window is not None:  # the wait for a slot is not the call's duration
            call.started = max(call.started, finished.window.at)
        if finished.timed_out:
            call.stderr, call.exit_code = stderr, finished.returncode
            raise CpiError(
                TIMED_OUT,
                f"CPI '{call.method}' timed out after {self.timeout_s:g}s (CPI request ID: '{call.request_id}')",
            )
        if finished.returncode == EXEC_FAILED and stderr.startswith(EXEC_FAILED_MARKER):
            raise CpiError(NOT_EXECUTABLE, f"Failed to run cpi: '{self.executable}' is not executable")
        return stdout, stderr, finished.returncode

    def _finish(self, call: Call, error: CpiError | None) -> None:
        duration = time.monotonic() - call.started
        extra: JsonObject = {"exit_code": call.exit_code}
        if call.start_ahead_s is not None:
            extra["start_ahead_s"] = call.start_ahead_s
        if call.invalid_stdout is not None:
            extra["stdout"] = call.invalid_stdout[:STDOUT_KEEP_CHARS]
        if error is not None:
            extra["error"] = error.as_dict()
        self._calls.add(CallRecord(
            method=call.method,
            request_id=call.request_id,
            log=call.log,
            stderr=call.stderr,
            duration_s=duration,
            extra=extra,
            answer=call.answer,
        ))
        if error is not None:
            error.log = _join_logs(call.log, call.stderr)
        # Deliberately neither arguments nor context: both may carry credentials.
        log.debug(
            "cpi call",
            cpi=self.name,
            method=call.method,
            request_id=call.request_id,
            duration_s=round(duration, 3),
            exit_code=call.exit_code,
            start_ahead_s=call.start_ahead_s,
            outcome="ok" if error is None else error.type,
        )


# --- helpers -----------------------------------------------------------------------------


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


def _join_logs(*parts: str) -> str:
    return "\n".join(p.rstrip("\n") for p in parts if p)

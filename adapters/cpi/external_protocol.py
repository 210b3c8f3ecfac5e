"""The BOSH external CPI protocol's answers: what a response must look like
(the Director's RESPONSE_SCHEMA), how an error answer becomes a CpiError, and
the checks of each method's result. No processes here (external.py runs them)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypedDict

from snapledger.domain.cpi import INVALID_RESPONSE, NOT_SUPPORTED, UNKNOWN_ERROR, CpiError
from snapledger.domain.json_types import JsonObject, JsonValue

MIN_API_VERSION = 2
STDOUT_EXCERPT_CHARS = 500

# A result validator returns a description of what is wrong, or None.
ResultCheck = Callable[[object], str | None]


class ErrorAnswer(TypedDict):
    """A response's `error` (the Director's RESPONSE_SCHEMA: these three, typed)."""

    type: str
    message: str
    ok_to_retry: bool


class Response(TypedDict):
    """A response as schema_problem accepts it (extra keys allowed, not read)."""

    result: JsonValue
    error: ErrorAnswer | None
    log: str


class Call:
    """What is known about one call so far, filled in as it progresses."""

    def __init__(self, method: str, request_id: str, started: float) -> None:
        self.method = method
        self.request_id = request_id
        self.started = started  # time.monotonic(): when it was made, or its process started at a slot
        self.log = ""
        self.stderr = ""
        self.exit_code: int | None = None
        self.start_ahead_s: float | None = None  # how early it reached its rate-limit slot (< 0: late)
        self.invalid_stdout: str | None = None
        self.answer: JsonValue = None


# --- response parsing ----------------------------------------------------------------


def invalid_response(call: Call, stdout: str, problem: str) -> CpiError:
    call.invalid_stdout = stdout
    return CpiError(
        INVALID_RESPONSE, f"Invalid CPI response - {problem}; stdout: {stdout[:STDOUT_EXCERPT_CHARS]}"
    )


def parse_response(call: Call, stdout: str) -> Response:
    try:
        response: Response = json.loads(stdout)  # a Response once schema_problem says so
    except ValueError as e:
        raise invalid_response(call, stdout, f"ParserError - {e}") from None
    problem = schema_problem(response)
    if problem is not None:
        raise invalid_response(call, stdout, f"SchemaValidationError: {problem}")
    return response


def schema_problem(response: object) -> str | None:
    # The Director's RESPONSE_SCHEMA: all three keys required, extra keys allowed.
    if not isinstance(response, dict):
        return f"expected an object, got {type(response).__name__}"
    for key in ("result", "error", "log"):
        if key not in response:
            return f"missing key '{key}'"
    if not isinstance(response["log"], str):
        return "'log' must be a string"
    error = response["error"]
    if error is None:
        return None
    if not isinstance(error, dict):
        return "'error' must be null or an object"
    for key, kind in (("type", str), ("message", str), ("ok_to_retry", bool)):
        if key not in error:
            return f"missing key 'error.{key}'"
        if not isinstance(error[key], kind):
            return f"'error.{key}' must be a {'boolean' if kind is bool else 'string'}"
    return None


def error_from_response(call: Call, error: ErrorAnswer, known: frozenset[str]) -> CpiError:
    cpi_error = CpiError(error["type"], error["message"], error["ok_to_retry"])
    # Legacy "method not implemented" spellings keep their type: CpiError recognises them.
    if cpi_error.type in known or cpi_error.is_not_implemented:
        return cpi_error
    return CpiError(
        UNKNOWN_ERROR,
        f"Unknown CPI error '{cpi_error.type}' with message '{cpi_error.message}' "
        f"in '{call.method}' CPI method (CPI request ID: '{call.request_id}')",
    )


# --- result checks -----------------------------------------------------------------


def require_supported(info: JsonObject) -> int:
    """The CPI's API version, if snapledger can speak it."""
    version = info.get("api_version", 1)  # no api_version means the original protocol, v1
    if not isinstance(version, int) or isinstance(version, bool):
        raise CpiError(
            INVALID_RESPONSE, f"Invalid CPI response - 'info' api_version must be an integer, got {version!r}"
        )
    if version < MIN_API_VERSION:
        raise CpiError(
            NOT_SUPPORTED,
            f"CPI API version {version} is not supported. Minimum required version is {MIN_API_VERSION}.",
        )
    return version


def json_object(result: object) -> str | None:
    return None if isinstance(result, dict) else f"must be an object, got {json.dumps(result)[:100]}"


def non_empty_string(result: object) -> str | None:
    if isinstance(result, str) and result:
        return None
    return f"must be a non-empty string, got {json.dumps(result)[:100]}"


def list_of_strings(result: object) -> str | None:
    if isinstance(result, list) and all(isinstance(item, str) for item in result):
        return None
    return f"must be a list of strings, got {json.dumps(result)[:100]}"

"""Request validation (marshmallow). Unknown fields are refused; errors name the field."""

from __future__ import annotations

import re
from datetime import UTC
from typing import Any, cast

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validates_schema
from marshmallow.validate import Length, OneOf, Range, Regexp

from snapledger.domain.names import CID_PATTERN, NAME_PATTERN, RESERVED_DEPLOYMENT_NAMES, TASK_ID_PATTERN

class WholeRegexp(Regexp):
    """A pattern that must match the whole value. marshmallow's Regexp uses
    `re.match`, whose `$` also matches before a trailing newline ("db\\n"
    passed). The pattern stays in its `^...$` form, which the API document
    (JSON Schema) shows as it is."""

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str) or cast("re.Pattern[str]", self.regex).fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


# Free text: anything but NUL (PostgreSQL text cannot hold it), said in the document too.
NO_NUL = WholeRegexp(r"^[^\u0000]*$", error="must not contain NUL characters")

NAME = WholeRegexp(NAME_PATTERN, error="must be 1-128 characters of letters, digits, '.', '_' or '-', "
                                 "starting with a letter or digit")
CID = WholeRegexp(CID_PATTERN, error="must be 1-255 characters of letters, digits, '.', '_', ':' or '-'")


class JsonInteger(fields.Integer):
    """A JSON integer: `83` and `83.0` (the same number in JSON, and an integer
    to JSON Schema), never a string, a boolean or `83.5`."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError("must be an integer")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValidationError("must be an integer")
            value = int(value)
        return super()._deserialize(value, attr, data, **kwargs)


MAX_POSITION = 2**63 - 1  # log positions are 64-bit integers in both stores


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class InstanceSchema(StrictSchema):
    job = fields.String(required=True, validate=NAME)
    index = JsonInteger(required=True, validate=Range(min=0, max=1_000_000))
    id = fields.String(validate=NAME)
    disks = fields.List(fields.String(validate=CID), load_default=list, validate=Length(max=64))
    # Release jobs whose drain/stop scripts a job update runs (default: [job]).
    jobs = fields.List(fields.String(validate=NAME), validate=Length(min=1, max=64))
    # The BOSH agent's id on the instance's VM: sent as `agent_id` in snapshot_disk's metadata,
    # as the Director sends it (null when absent, as for a VM-less instance in BOSH).
    agent_id = fields.String(validate=[Length(min=1, max=255), NO_NUL], allow_none=True)
    # The persistent disk's size in MB: the drain scripts' BOSH_JOB_STATE (unknown when absent).
    persistent_disk = JsonInteger(validate=Range(min=0, max=2**40), allow_none=True)


class DeploymentSchema(StrictSchema):
    tags = fields.Dict(keys=fields.String(validate=[Length(min=1, max=128), NO_NUL]),
                       values=fields.String(validate=[Length(max=256), NO_NUL]), load_default=dict,
                       # what apispec cannot say of a mapping's keys (api/openapi.py merges it)
                       metadata={"x-merge": {"propertyNames": {"minLength": 1, "maxLength": 128,
                                                               "pattern": r"^[^\u0000]*$"}}})
    instances = fields.List(fields.Nested(InstanceSchema), required=True, validate=Length(max=10_000))
    cpi = fields.String(validate=NAME)  # a configured CPI's name; default: the default CPI
    # Disks listed here that another deployment owns move to this one (the caller
    # must be allowed on both); any other disk of another deployment is refused.
    move_disks = fields.List(fields.String(validate=CID), load_default=list, validate=Length(max=64 * 10_000))
    # Release jobs another deployment owns that this one takes over (same rule).
    move_jobs = fields.List(fields.String(validate=NAME), load_default=list, validate=Length(max=10_000))


class DeploymentFileSchema(DeploymentSchema):
    """The CLI's `deploy FILE.yml`: the PUT body plus the deployment's name."""

    name = fields.String(required=True, validate=NAME)

    @validates_schema
    def _unique(self, data: dict[str, Any], **_: Any) -> None:
        # Said before sending, as the server would say it (409 there: domain.deployment.check_unique).
        from snapledger.domain.deployment import check_unique
        from snapledger.domain.errors import InventoryConflict

        try:
            check_unique(data.get("instances", []))
        except InventoryConflict as error:
            raise ValidationError(error.message, "instances") from None


class StrictBoolean(fields.Boolean):
    """Only JSON true/false: "yes" or 1 for a switch is more likely a mistake than intent."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError("must be true or false")
        return value


def _cron(value: str | None) -> None:
    from snapledger.domain.cron import CronError, CronSchedule

    if value is None or value.strip().lower() in ("", "off"):
        return
    try:
        CronSchedule.parse(value)
    except CronError as error:
        raise ValidationError(str(error)) from None


# BOSH's cron dialect (README "Scheduled snapshots"): no JSON Schema pattern can
# say it (ranges per field, IANA zones), so the document names it as a format.
# A string of that format, or one of the words that turn it off, or null, as `anyOf`
# (schemathesis treats any value of a field with a custom format as violating it in
# negative tests, null and "" included, unless each is a branch of its own).
CRON_FORMAT = {"x-replace": {
    "anyOf": [{"type": "string", "format": "bosh-cron", "maxLength": 200}, {"type": "string", "enum": ["", "off"]},
              {"type": "null"}],
    "description": "BOSH cron: 5 or 6 fields (seconds first), optional zone; null, \"\" or \"off\" turns "
                   "the schedule off"}}


class SnapshotConfigSchema(StrictSchema):
    """`PUT /config/snapshots`: any of the BOSH manifest keys; a schedule of null, "" or "off" turns it off.
    `{}` changes nothing and answers the configuration as it is (the document allows it)."""

    enable_snapshots = StrictBoolean()
    snapshot_schedule = fields.String(allow_none=True, validate=[Length(max=200), _cron], metadata=CRON_FORMAT)
    self_snapshot_schedule = fields.String(allow_none=True, validate=[Length(max=200), _cron], metadata=CRON_FORMAT)
    retention_schedule = fields.String(allow_none=True, validate=[Length(max=200), _cron], metadata=CRON_FORMAT)



class UtcDateTime(fields.AwareDateTime):
    """An ISO timestamp with a zone, read as UTC. `0001-01-01T00:00:00+14:00`
    parses but lies before year 1 in UTC (OverflowError deep in a query):
    refused here as out of range, naming the field."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:

        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(UTC)
        except OverflowError:
            raise ValidationError("is outside the years 1-9999 in UTC") from None


class ListQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    limit = fields.Integer(validate=Range(min=1, max=10_000))
    after = fields.Integer(validate=Range(min=0, max=MAX_POSITION))
    at = UtcDateTime(format="iso")  # the listing as it was at that moment


class TaskQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    deployment = fields.String(validate=NAME)
    state = fields.String(validate=OneOf(["queued", "processing", "cancelling", "done", "error", "cancelled"]))
    limit = fields.Integer(validate=Range(min=1, max=1000), load_default=100)
    in_doubt = fields.Boolean(load_default=False)  # only tasks with an in-doubt CPI call


class TaskEventsQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    after = fields.Integer(validate=Range(min=0, max=MAX_POSITION), load_default=0)


class TaskWaitQuerySchema(Schema):
    """`GET /tasks/{id}?wait=SECONDS&after=POSITION` (long poll; waits above 60 s are capped)."""

    class Meta:
        unknown = RAISE

    wait = fields.Float(validate=Range(min=0))
    after = fields.Integer(validate=Range(min=0))


def validate_deployment_name(name: str, *, creating: bool = False) -> None:
    errors = NAME_FIELD.validate({"name": name})
    if errors:
        raise ValidationError(errors)
    if creating and name in RESERVED_DEPLOYMENT_NAMES:
        raise ValidationError({"name": [f"'{name}' is reserved"]})


class _NameField(Schema):
    name = fields.String(required=True, validate=NAME)


NAME_FIELD = _NameField()


def _duration(value: str) -> None:
    from snapledger.domain.retention import InvalidPolicy, parse_duration

    if value == "":
        return  # no age rule, as null
    try:
        parse_duration(value)
    except InvalidPolicy as error:
        raise ValidationError(error.message) from None


class RetentionSchema(StrictSchema):
    """A retention policy; every rule optional, the most protective wins. `{}` keeps everything."""

    keep_last = JsonInteger(allow_none=True, validate=Range(min=1, max=100_000))
    keep_for = fields.String(allow_none=True, validate=[
        WholeRegexp(r"^([0-9]{1,6}[hdw])?$", error="a number and h, d or w (e.g. 7d, 12w), or empty"), _duration])
    keep_clean = StrictBoolean(load_default=False)
    inherit = StrictBoolean(load_default=False)  # deployment only: drop its own policy, use the default

    @post_load
    def _empty_is_none(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if data.get("keep_for") == "":
            data["keep_for"] = None
        return data


class RetentionRunQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    dry_run = fields.Boolean(load_default=False)


class PinSchema(StrictSchema):
    reason = fields.String(required=True, validate=[Length(min=1, max=500), NO_NUL])


class EventQuerySchema(Schema):
    """GET /events: every filter given must hold."""

    class Meta:
        unknown = RAISE

    deployment = fields.String(validate=WholeRegexp(r"^(_self|[A-Za-z0-9][A-Za-z0-9._-]{0,127})$"))
    job = fields.String(validate=NAME)
    index = fields.Integer(validate=Range(min=0, max=1_000_000))
    instance_id = fields.String(validate=NAME)
    disk_cid = fields.String(validate=CID)
    snapshot_cid = fields.String(validate=CID)
    task_id = fields.String(validate=WholeRegexp(TASK_ID_PATTERN))
    actor = fields.String(validate=[Length(min=1, max=128), NO_NUL])
    type = fields.String(validate=WholeRegexp(r"^[A-Za-z]+(\.[A-Za-z]+)?(,[A-Za-z]+(\.[A-Za-z]+)?)*$"))
    since = UtcDateTime(format="iso")
    until = UtcDateTime(format="iso")
    after = fields.Integer(validate=Range(min=0, max=MAX_POSITION), load_default=0)
    limit = fields.Integer(validate=Range(min=1, max=5000), load_default=500)

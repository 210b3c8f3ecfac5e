"""Request validation (marshmallow). Unknown fields are refused; errors name the field."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validates_schema
from marshmallow.validate import Length, OneOf, Range, Regexp

from snapledger.domain.names import CID_PATTERN, NAME_PATTERN, RESERVED_DEPLOYMENT_NAMES

NAME = Regexp(NAME_PATTERN, error="must be 1-128 characters of letters, digits, '.', '_' or '-', "
                                 "starting with a letter or digit")
CID = Regexp(CID_PATTERN, error="must be 1-255 characters of letters, digits, '.', '_', ':' or '-'")


MAX_POSITION = 2**63 - 1  # log positions are 64-bit integers in both stores


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class InstanceSchema(StrictSchema):
    job = fields.String(required=True, validate=NAME)
    index = fields.Integer(required=True, strict=True, validate=Range(min=0, max=1_000_000))
    id = fields.String(validate=NAME)
    disks = fields.List(fields.String(validate=CID), load_default=list, validate=Length(max=64))
    # Release jobs whose drain/stop scripts a job update runs (default: [job]).
    jobs = fields.List(fields.String(validate=NAME), validate=Length(min=1, max=64))


class DeploymentSchema(StrictSchema):
    tags = fields.Dict(keys=fields.String(validate=Length(min=1, max=128)),
                       values=fields.String(validate=Length(max=256)), load_default=dict)
    instances = fields.List(fields.Nested(InstanceSchema), required=True, validate=Length(max=10_000))
    cpi = fields.String(validate=NAME)  # a configured CPI's name; default: the default CPI

    @validates_schema
    def _unique(self, data: dict[str, Any], **_: Any) -> None:
        slugs, ids, disks = set(), set(), set()
        for inst in data.get("instances", []):
            slug = (inst["job"], inst["index"])
            if slug in slugs:
                raise ValidationError(f"duplicate instance {inst['job']}/{inst['index']}", "instances")
            slugs.add(slug)
            if inst.get("id"):
                if inst["id"] in ids:
                    raise ValidationError(f"duplicate instance id {inst['id']}", "instances")
                ids.add(inst["id"])
            for disk in inst["disks"]:
                if disk in disks:
                    raise ValidationError(f"disk {disk} is listed twice", "instances")
                disks.add(disk)


class DeploymentFileSchema(DeploymentSchema):
    """The CLI's `deploy FILE.yml`: the PUT body plus the deployment's name."""

    name = fields.String(required=True, validate=NAME)


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


class SnapshotConfigSchema(StrictSchema):
    """`PUT /config/snapshots`: any of the BOSH manifest keys; a schedule of null, "" or "off" turns it off."""

    enable_snapshots = StrictBoolean()
    snapshot_schedule = fields.String(allow_none=True, validate=[Length(max=200), _cron])
    self_snapshot_schedule = fields.String(allow_none=True, validate=[Length(max=200), _cron])
    retention_schedule = fields.String(allow_none=True, validate=[Length(max=200), _cron])

    @validates_schema
    def _not_empty(self, data: dict[str, Any], **_: Any) -> None:
        if not data:
            raise ValidationError("give at least one of enable_snapshots, snapshot_schedule, "
                                  "self_snapshot_schedule", "enable_snapshots")


class ListQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    limit = fields.Integer(validate=Range(min=1, max=10_000))
    after = fields.Integer(validate=Range(min=0, max=MAX_POSITION))
    at = fields.AwareDateTime(format="iso")  # the listing as it was at that moment


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

    try:
        parse_duration(value)
    except InvalidPolicy as error:
        raise ValidationError(error.message) from None


class RetentionSchema(StrictSchema):
    """A retention policy; every rule optional, the most protective wins. `{}` keeps everything."""

    keep_last = fields.Integer(strict=True, allow_none=True, validate=Range(min=1, max=100_000))
    keep_for = fields.String(allow_none=True, validate=[Length(max=12), _duration])
    keep_clean = StrictBoolean(load_default=False)
    inherit = StrictBoolean(load_default=False)  # deployment only: drop its own policy, use the default


class RetentionRunQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    dry_run = fields.Boolean(load_default=False)


class PinSchema(StrictSchema):
    reason = fields.String(required=True, validate=Length(min=1, max=500))


class EventQuerySchema(Schema):
    """GET /events: every filter given must hold."""

    class Meta:
        unknown = RAISE

    deployment = fields.String(validate=Regexp(r"^(_self|[A-Za-z0-9][A-Za-z0-9._-]{0,127})$"))
    job = fields.String(validate=NAME)
    index = fields.Integer(validate=Range(min=0, max=1_000_000))
    instance_id = fields.String(validate=NAME)
    disk_cid = fields.String(validate=CID)
    snapshot_cid = fields.String(validate=CID)
    task_id = fields.String(validate=Regexp(r"^[0-9a-fA-F-]{1,64}$"))
    actor = fields.String(validate=Length(min=1, max=128))
    type = fields.String(validate=Regexp(r"^[A-Za-z]+(\.[A-Za-z]+)?(,[A-Za-z]+(\.[A-Za-z]+)?)*$"))
    since = fields.AwareDateTime(format="iso")
    until = fields.AwareDateTime(format="iso")
    after = fields.Integer(validate=Range(min=0, max=MAX_POSITION), load_default=0)
    limit = fields.Integer(validate=Range(min=1, max=5000), load_default=500)

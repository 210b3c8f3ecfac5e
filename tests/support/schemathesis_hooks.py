"""What schemathesis cannot read from the API document: the `bosh-cron` format.

The document names BOSH's cron dialect as a string format (no JSON Schema
pattern can say it); this teaches schemathesis's generator its valid values,
so "a schema-valid request is accepted" is checked for schedules too. Loaded
with SCHEMATHESIS_HOOKS=schemathesis_hooks (tests/support on PYTHONPATH).
"""

from __future__ import annotations

import schemathesis
from hypothesis import strategies as st

_FIVE_FIELDS = st.builds(
    lambda minute, hour, dom, month, dow: f"{minute} {hour} {dom} {month} {dow}",
    st.one_of(st.just("*"), st.integers(0, 59).map(str), st.integers(1, 30).map(lambda n: f"*/{n}")),
    st.one_of(st.just("*"), st.integers(0, 23).map(str), st.just("1-5")),
    st.one_of(st.just("*"), st.integers(1, 28).map(str), st.just("L")),
    st.one_of(st.just("*"), st.integers(1, 12).map(str), st.sampled_from(["JAN", "JUN-AUG"])),
    st.one_of(st.just("*"), st.integers(0, 6).map(str), st.sampled_from(["MON-FRI", "SUN", "MON#2", "FRI#L"])),
)
_ZONE = st.sampled_from(["", " UTC", " Europe/Berlin", " +09:00", " -14:00"])

BOSH_CRON = st.one_of(
    st.builds(lambda fields, zone: fields + zone, _FIVE_FIELDS, _ZONE),
    st.builds(lambda second, fields: f"{second} {fields}", st.integers(0, 59), _FIVE_FIELDS),
    st.sampled_from(["@hourly", "@daily", "@weekly", "@monthly", "@yearly", "off", ""]),
)

schemathesis.openapi.format("bosh-cron", BOSH_CRON)

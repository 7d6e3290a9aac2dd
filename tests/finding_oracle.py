"""What a finding must say about the alert it was made from, written from Falco's and ASFF's
documentation and this project's README, not from handlers/: an oracle for property tests (as
asff_limits.py is one for the limits). It checks only what holds for every input: where the
alert's values are unusual (cut, escaped, dropped), it checks nothing rather than re-implement
the mapping.
"""

import re
from collections.abc import Sequence
from typing import Any

# Falco's priorities (any letter case, "info" too) -> (title-case name, ASFF Severity.Label), as
# the README's mapping table gives them.
SEVERITY = {
    "emergency": ("Emergency", "CRITICAL"),
    "alert": ("Alert", "CRITICAL"),
    "critical": ("Critical", "CRITICAL"),
    "error": ("Error", "HIGH"),
    "warning": ("Warning", "MEDIUM"),
    "notice": ("Notice", "LOW"),
    "informational": ("Informational", "INFORMATIONAL"),
    "info": ("Informational", "INFORMATIONAL"),
    "debug": ("Debug", "INFORMATIONAL"),
}
GENERATOR_IDS = {
    "Terminal shell in container": "falco/rule/terminal-shell-in-container",
    "Write below etc": "falco/rule/write-below-etc",
}
FINDING_ID = re.compile(r"falco/alert/[0-9a-f]{64}")
RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")
FALCO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z")
UNUSUAL_BEHAVIORS = {
    "Unusual Behaviors/Container",
    "Unusual Behaviors/Process",
    "Unusual Behaviors/User",
    "Unusual Behaviors/Application",
}
OUTPUT_FIELD = "falco/output_fields/"
NOT_AVAILABLE = "<NA>"  # Falco's rendering of a field it could not resolve


def assert_says_what_the_alert_says(
    finding: dict[str, Any], alert: dict[str, Any], ctx: Any, *, alone: bool
) -> None:
    """``alone``: the finding of one alert (to_finding), not of a coalesced group."""
    account, region, partition = ctx.account_id, ctx.region, ctx.partition
    assert finding["AwsAccountId"] == account
    assert finding["Region"] == region
    assert finding["ProductArn"] == (
        f"arn:{partition}:securityhub:{region}:{account}:product/{account}/default"
    )
    for resource in finding["Resources"]:
        assert (resource["Partition"], resource["Region"]) == (partition, region)
    assert FINDING_ID.fullmatch(finding["Id"]), finding["Id"]

    priority, label = SEVERITY[alert["priority"].strip().lower()]
    assert finding["Severity"] == {"Label": label, "Original": priority}
    assert finding["FindingProviderFields"] == {
        "Severity": finding["Severity"],
        "Types": finding["Types"],
    }
    product_fields = finding["ProductFields"]
    assert product_fields["falco/priority"] == priority

    rule = alert["rule"]
    if rule.isprintable() and len(rule.encode("utf-16-le", "surrogatepass")) <= 2 * 256:
        assert finding["Title"] == rule
    if rule in GENERATOR_IDS:
        assert finding["GeneratorId"] == GENERATOR_IDS[rule]
    tags = alert.get("tags")
    if not (isinstance(tags, list) and any(_names_a_tactic(tag) for tag in tags)):
        assert len(finding["Types"]) == 1
        assert finding["Types"][0] in UNUSUAL_BEHAVIORS

    for name in ("CreatedAt", "UpdatedAt"):
        assert RFC3339_UTC.fullmatch(finding[name]), finding[name]
    assert finding["FirstObservedAt"] == finding["CreatedAt"]
    assert finding["LastObservedAt"] == finding["UpdatedAt"]
    if alone:
        assert finding["CreatedAt"] == finding["UpdatedAt"]
        time = alert.get("time")
        if isinstance(time, str) and FALCO_TIME.fullmatch(time) and _valid_date(time):
            assert finding["CreatedAt"] == time

    _assert_output_fields_carried(product_fields, alert.get("output_fields"))


def assert_every_alert_counted_once(findings: Sequence[dict[str, Any]], alerts: int) -> None:
    """Coalescing loses no alert and counts none twice; a group's span is its finding's."""
    counted = 0
    for finding in findings:
        product_fields = finding["ProductFields"]
        occurrences = int(product_fields.get("falco/occurrences", "1"))
        assert occurrences >= 1
        if occurrences > 1:
            assert product_fields["falco/first_seen"] == finding["FirstObservedAt"]
            assert product_fields["falco/last_seen"] == finding["LastObservedAt"]
        counted += occurrences
    assert counted == alerts
    assert len({finding["Id"] for finding in findings}) == len(findings)


def _assert_output_fields_carried(product_fields: dict[str, str], fields: Any) -> None:
    """Known, plain output fields appear as they are, when all of them fit and no two names can
    share a key (names of printable ASCII, short enough not to be cut). Values of up to 64
    characters: a finding over 240 KB has its longer values cut."""
    if not isinstance(fields, dict) or "falco/output_fields_dropped" in product_fields:
        return
    if not all(name.isascii() and name.isprintable() and 0 < len(name) <= 100 for name in fields):
        return
    for name, value in fields.items():
        key = OUTPUT_FIELD + name
        if value is None or value == NOT_AVAILABLE:
            assert key not in product_fields
        elif type(value) is int and abs(value) < 10**18:
            assert product_fields[key] == str(value)
        elif (
            isinstance(value, str)
            and value.isprintable()
            and value.strip()
            and len(value.encode("utf-16-le", "surrogatepass")) <= 2 * 64
        ):
            assert product_fields[key] == value


def _names_a_tactic(tag: Any) -> bool:
    if not isinstance(tag, str):
        return False
    lowered = tag.strip().lower()
    return lowered.startswith("mitre_") or re.fullmatch(r"ta00\d\d", lowered) is not None


def _valid_date(time: str) -> bool:
    from datetime import datetime

    try:
        datetime.strptime(time[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return False
    return True

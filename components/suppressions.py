"""Suppressions as code: known-benign Falco findings are SUPPRESSED with a reason, never deleted.

The ``suppressionsFile`` setting names a YAML file (relative to the project directory): a list of
entries, each

    - name: ci-runner-shells            # unique; names the automation rule
      rule: Terminal shell in container # the Falco rule, exactly
      namespace: ci                     # optional, exact
      image: "registry.example.com/ci-runner*"  # optional: exact, prefix* or *contains*
      process: "*gitlab-runner-helper*" # optional: exact or *contains*
      reason: CI runners open shells to run jobs (SEC-1234)
      expires: 2027-03-31               # required: the suppression stops then

Each entry becomes one ``aws.securityhub.AutomationRule`` in the stack's Region (CSPM automation
rules apply only in the Region they are created in, so every region stack declares them). It sets
matching Falco findings' workflow status to SUPPRESSED with the reason (and expiry) as the note:
recorded, off the triage queue. Its criteria, all of which must match (each is a different
criteria field: several filters on one field are ORed by Security Hub):

* ``ProductName`` EQUALS Falco's product name and ``GeneratorId`` EQUALS ``falco/rule/<slug>``;
* namespace: ``ResourceId`` CONTAINS ``/<namespace>/pods/`` (the container resource's Id is
  ``k8s/<cluster>/<namespace>/pods/<pod>/<container>``);
* image: ``ResourceApplicationName`` (the behaviour finding puts the image there) EQUALS, PREFIX
  or CONTAINS;
* process: ``ResourceDetailsOther`` key ``Process`` (the command line) EQUALS or CONTAINS (map
  filters have no PREFIX).

An expired entry stops the program (a settings error naming the entry and its date): a
suppression must be renewed on purpose, never linger. Parsing is pure (``parse_suppressions``).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from handlers.findings import generator_id
from handlers.names import PRODUCT_NAME

COMPONENT_TYPE = "falco-securityhub:index:Suppressions"

# AutomationRule limits (CreateAutomationRule): rule name 256, description 1024, note text 512;
# 100 rules per account and Region, orders 1..1000.
MAX_RULES = 100
MAX_REASON_LENGTH = 400  # the note also says when the suppression expires
MAX_PATTERN_LENGTH = 512
RULE_ORDER_START = 100  # leaves room for rules other teams put before ours
NOTE_AUTHOR = "falco-securityhub suppressions"
FIELDS = ("name", "rule", "namespace", "image", "process", "reason", "expires")
REQUIRED = ("name", "rule", "reason", "expires")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class Pattern:
    comparison: str  # EQUALS | PREFIX | CONTAINS
    value: str


@dataclass(frozen=True)
class Suppression:
    name: str
    rule: str
    reason: str
    expires: datetime.date
    namespace: str | None = None
    image: Pattern | None = None
    process: Pattern | None = None


def _pattern(text: str, *, prefix_allowed: bool) -> Pattern | str:
    """``*x*`` -> CONTAINS, ``x*`` -> PREFIX (if allowed), else EQUALS; or why it is refused."""
    if not text or len(text) > MAX_PATTERN_LENGTH:
        return f"empty or longer than {MAX_PATTERN_LENGTH} characters"
    inner = text.strip("*")
    if not inner or "*" in inner:
        return "a '*' may only open and close the pattern (*text*) or end it (prefix*)"
    if text.startswith("*") and text.endswith("*") and len(text) > 1:
        return Pattern("CONTAINS", inner)
    if text.endswith("*"):
        if not prefix_allowed:
            return "prefix* is not possible here (Security Hub map filters have no PREFIX)"
        return Pattern("PREFIX", inner)
    if text.startswith("*"):
        return "*suffix is not possible (Security Hub has no suffix filter); use *text*"
    return Pattern("EQUALS", text)


def _entry(index: int, item: Any, today: datetime.date) -> Suppression | list[str]:
    where = f"entry {index + 1}"
    if not isinstance(item, dict):
        return [f"{where}: not a mapping of {', '.join(FIELDS)}"]
    if isinstance(item.get("name"), str):
        where = f"entry {index + 1} ({item['name']!r})"
    problems = [f"{where}: unknown key {key!r}" for key in item if key not in FIELDS]
    problems += [f"{where}: {key} is required" for key in REQUIRED if item.get(key) in (None, "")]
    text = {
        key: item[key]
        for key in FIELDS
        if key != "expires" and item.get(key) not in (None, "") and isinstance(item[key], str)
    }
    problems += [
        f"{where}: {key} must be text"
        for key in FIELDS
        if key != "expires" and item.get(key) not in (None, "") and key not in text
    ]
    name = text.get("name", "")
    if name and not _NAME.fullmatch(name):
        problems.append(f"{where}: name must be 1-64 letters, digits, '_', '.', '-'")
    namespace = text.get("namespace")
    if namespace and not _NAMESPACE.fullmatch(namespace):
        problems.append(f"{where}: namespace {namespace!r} is not a Kubernetes namespace name")
    if len(text.get("reason", "")) > MAX_REASON_LENGTH:
        problems.append(f"{where}: reason is longer than {MAX_REASON_LENGTH} characters")
    patterns: dict[str, Pattern] = {}
    for key, prefix_allowed in (("image", True), ("process", False)):
        if key in text:
            parsed = _pattern(text[key], prefix_allowed=prefix_allowed)
            if isinstance(parsed, str):
                problems.append(f"{where}: {key} {text[key]!r}: {parsed}")
            else:
                patterns[key] = parsed
    expires = item.get("expires")
    if isinstance(expires, str):
        try:
            expires = datetime.date.fromisoformat(expires)
        except ValueError:
            problems.append(f"{where}: expires {expires!r} is not a date (YYYY-MM-DD)")
    if isinstance(expires, datetime.datetime) or (
        expires is not None and not isinstance(expires, str | datetime.date)
    ):
        problems.append(f"{where}: expires must be a date (YYYY-MM-DD)")
    elif isinstance(expires, datetime.date) and expires < today:
        problems.append(
            f"{where}: expired on {expires.isoformat()}; renew it (a later expires, and say why "
            "in the reason) or delete it"
        )
    if problems:
        return problems
    return Suppression(
        name=name,
        rule=text["rule"],
        reason=text["reason"],
        expires=expires,  # type: ignore[arg-type]
        namespace=namespace,
        image=patterns.get("image"),
        process=patterns.get("process"),
    )


def parse_suppressions(
    text: str, today: datetime.date
) -> tuple[tuple[Suppression, ...], list[str]]:
    """The file's suppressions, and every problem (each names its entry); expired entries are
    problems. A suppression expires at the end of its ``expires`` day (UTC)."""
    import yaml

    try:
        items = yaml.safe_load(text)
    except yaml.YAMLError as error:
        return (), [f"not valid YAML ({error})"]
    if items is None:
        return (), []
    if not isinstance(items, list):
        return (), ["a suppressions file is a YAML list of entries"]
    found: list[Suppression] = []
    problems: list[str] = []
    for index, item in enumerate(items):
        parsed = _entry(index, item, today)
        if isinstance(parsed, list):
            problems.extend(parsed)
        else:
            found.append(parsed)
    names = [s.name for s in found]
    problems += [
        f"name {n!r} is used twice" for n in sorted({n for n in names if names.count(n) > 1})
    ]
    if len(items) > MAX_RULES:
        problems.append(f"{len(items)} entries; Security Hub allows {MAX_RULES} automation rules")
    return tuple(found), problems


# -- what each suppression becomes (pure) -------------------------------------------------------
def criteria(suppression: Suppression) -> dict[str, list[dict[str, str]]]:
    """The automation rule's criteria, as AutomationRuleCriteriaArgs keyword arguments."""
    found: dict[str, list[dict[str, str]]] = {
        "product_names": [{"comparison": "EQUALS", "value": PRODUCT_NAME}],
        "generator_ids": [{"comparison": "EQUALS", "value": generator_id(suppression.rule)}],
    }
    if suppression.namespace:
        found["resource_ids"] = [
            {"comparison": "CONTAINS", "value": f"/{suppression.namespace}/pods/"}
        ]
    if suppression.image:
        found["resource_application_names"] = [
            {"comparison": suppression.image.comparison, "value": suppression.image.value}
        ]
    if suppression.process:
        found["resource_details_others"] = [
            {
                "comparison": suppression.process.comparison,
                "key": "Process",
                "value": suppression.process.value,
            }
        ]
    return found


def note(suppression: Suppression) -> str:
    return f"Suppressed ({suppression.name}, until {suppression.expires.isoformat()}): " + (
        suppression.reason
    )


@dataclass
class SuppressionsArgs:
    suppressions: Sequence[Suppression]
    security_hub: pulumi.Resource  # automation rules need Security Hub enabled in the Region
    tags: dict[str, str] = field(default_factory=dict)


class Suppressions(pulumi.ComponentResource):
    """One Security Hub automation rule per suppression, in the stack's Region."""

    rule_arns: pulumi.Output[list[str]]

    def __init__(
        self, name: str, args: SuppressionsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        after_hub = pulumi.ResourceOptions(parent=self, depends_on=[args.security_hub])
        rules = []
        for index, suppression in enumerate(args.suppressions):
            found = criteria(suppression)
            rules.append(
                aws.securityhub.AutomationRule(
                    f"{name}-{suppression.name}",
                    rule_name=f"falco-suppress-{suppression.name}",
                    description=(f"Falco rule '{suppression.rule}': {suppression.reason}"[:1024]),
                    rule_order=RULE_ORDER_START + index,
                    rule_status="ENABLED",
                    is_terminal=False,
                    criteria=aws.securityhub.AutomationRuleCriteriaArgs(
                        product_names=[
                            aws.securityhub.AutomationRuleCriteriaProductNameArgs(**f)
                            for f in found["product_names"]
                        ],
                        generator_ids=[
                            aws.securityhub.AutomationRuleCriteriaGeneratorIdArgs(**f)
                            for f in found["generator_ids"]
                        ],
                        resource_ids=[
                            aws.securityhub.AutomationRuleCriteriaResourceIdArgs(**f)
                            for f in found.get("resource_ids", [])
                        ]
                        or None,
                        resource_application_names=[
                            aws.securityhub.AutomationRuleCriteriaResourceApplicationNameArgs(**f)
                            for f in found.get("resource_application_names", [])
                        ]
                        or None,
                        resource_details_others=[
                            aws.securityhub.AutomationRuleCriteriaResourceDetailsOtherArgs(**f)
                            for f in found.get("resource_details_others", [])
                        ]
                        or None,
                    ),
                    actions=[
                        aws.securityhub.AutomationRuleActionArgs(
                            type="FINDING_FIELDS_UPDATE",
                            finding_fields_update=aws.securityhub.AutomationRuleActionFindingFieldsUpdateArgs(
                                workflow=aws.securityhub.AutomationRuleActionFindingFieldsUpdateWorkflowArgs(
                                    status="SUPPRESSED"
                                ),
                                note=aws.securityhub.AutomationRuleActionFindingFieldsUpdateNoteArgs(
                                    text=note(suppression), updated_by=NOTE_AUTHOR
                                ),
                            ),
                        )
                    ],
                    tags=args.tags,
                    opts=after_hub,
                )
            )
        self.rule_arns = pulumi.Output.all(*[rule.arn for rule in rules])  # type: ignore[assignment]
        self.register_outputs({"rule_arns": self.rule_arns})

"""Shadow rules: a custom Falco rule tagged ``shadow`` is counted, never imported.

A team adds a rule with ``tags: [shadow, ...]`` to its custom rules file and watches its volume
(the ``ShadowAlerts`` metric, one per rule) for days before removing the tag makes it create
findings. ``python -m handlers replay --dry-run`` shows the findings it would have produced.

The ``Rule`` dimension takes only the names of the shadow rules the deployed rules file declares
(the function's ``SHADOW_RULES``, from :func:`shadow_rules`); any other rule that carries the tag
is counted under ``OTHER_RULE``, so the metric's cardinality is bounded by the configuration, not
by what arrives. Pure, except :func:`emit` which writes EMF documents through Powertools.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import IO, Any

from handlers.alerts import AlertRecord
from handlers.names import SHADOW_TAG

METRIC = "ShadowAlerts"
OTHER_RULE = "(other shadow rules)"
# CloudWatch allows 30 dimensions' worth of metrics per document, but each Rule value is its own
# metric: never more than this many per invocation, whatever SHADOW_RULES says.
MAX_RULES = 50


def is_shadow(record: AlertRecord) -> bool:
    tags = record.alert.get("tags")
    return type(tags) is list and SHADOW_TAG in tags


def shadow_rules(rules_text: str | None) -> tuple[str, ...]:
    """The names of the rules a Falco rules file tags ``shadow`` (declared or appended)."""
    if not rules_text:
        return ()
    import yaml  # the program's dependency only: the Lambda never reads rules files

    items = yaml.safe_load(rules_text)
    names: list[str] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("rule"), str):
            continue
        tags = item.get("tags")
        if isinstance(tags, list) and SHADOW_TAG in tags and item["rule"] not in names:
            names.append(item["rule"])
    return tuple(names)


def parse_rule_list(text: str | None) -> frozenset[str]:
    """``SHADOW_RULES`` (a JSON list of rule names) -> the set; empty when unset or malformed."""
    try:
        value = json.loads(text) if text else []
    except ValueError:
        return frozenset()
    return (
        frozenset(v for v in value if isinstance(v, str))
        if isinstance(value, list)
        else frozenset()
    )


def dimensions(counts: Mapping[str, int], known: frozenset[str]) -> Counter[str]:
    """Per-rule counts with unknown rules (and any beyond MAX_RULES) folded into OTHER_RULE."""
    folded: Counter[str] = Counter()
    for rule, count in counts.items():
        if rule in known and (rule in folded or len(folded) < MAX_RULES - 1):
            folded[rule] += count
        else:
            folded[OTHER_RULE] += count
    return folded


def count(records: Iterable[AlertRecord]) -> Counter[str]:
    return Counter(str(record.alert.get("rule")) for record in records)


def emit(counts: Mapping[str, int], known: frozenset[str], namespace: str, service: str) -> None:
    """One EMF document per rule (a dimension applies to every metric in its document)."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    for rule, value in dimensions(counts, known).items():
        with single_metric(
            name=METRIC, unit=MetricUnit.Count, value=value, namespace=namespace
        ) as metric:
            metric.add_dimension(name="service", value=service)
            metric.add_dimension(name="Rule", value=rule[:1024])


def split(records: list[AlertRecord]) -> tuple[list[AlertRecord], list[AlertRecord]]:
    """(records to import, shadow rules' records)."""
    kept = [record for record in records if not is_shadow(record)]
    return kept, [record for record in records if is_shadow(record)]


def write_dry_run(
    records: list[AlertRecord], ctx: Any, stdout: IO[str], stderr: IO[str], name: str
) -> None:
    """What shadow rules would have produced (``replay --dry-run``): their findings on stdout,
    marked ``falco/shadow: true`` in ProductFields, and per rule a line on stderr. Nothing of
    theirs is ever imported."""
    from handlers import findings  # not needed by the Lambda's shadow path

    produced = findings.coalesce(records, ctx)
    for finding in produced:
        finding["ProductFields"]["falco/shadow"] = "true"
        stdout.write(json.dumps(finding, sort_keys=True) + "\n")
    per_rule = Counter(finding["ProductFields"]["falco/rule"] for finding in produced)
    for rule, alerts in sorted(count(records).items()):
        stderr.write(
            f"{name}: shadow rule {rule!r}: {alerts} alerts -> {per_rule.get(rule, 0)} findings "
            "(not imported)\n"
        )

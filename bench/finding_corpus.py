"""Dump the findings the mapping makes for a fixed corpus, or compare two dumps value for value.

A check for refactoring findings.py: run ``dump`` on the code before the change and on the code
after, then ``compare`` the two files. Findings are compared as parsed JSON (key order may
differ). The corpus: the bench's 1,000 alerts, demo/falco-alerts.jsonl,
tests/fixtures/falco_alerts.jsonl, and seeded random batches with hostile values (control
characters, lone surrogates, huge values, lists, nested objects, missing fields, output field
names that collide once escaped or cut, alerts that coalesce).

    .venv/bin/python bench/finding_corpus.py dump /tmp/before.jsonl
    .venv/bin/python bench/finding_corpus.py compare /tmp/before.jsonl /tmp/after.jsonl

Generated dumps stay outside the repository.
"""

from __future__ import annotations

import copy
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from handler_bench import distinct_alerts  # noqa: E402

from handlers.alerts import AlertRecord  # noqa: E402
from handlers.findings import FindingContext, coalesce_texts  # noqa: E402

RANDOM_BATCHES = 4000
SEED = 7
FILES = (ROOT / "demo" / "falco-alerts.jsonl", ROOT / "tests" / "fixtures" / "falco_alerts.jsonl")

CONTEXTS = (
    FindingContext("123456789012", "us-east-1"),
    FindingContext(
        "123456789012",
        "eu-west-1",
        cluster_name="shop-prod",
        min_priority="Debug",
        log_group="/falco/alerts",
        log_stream="falco-x7k2p",
    ),
    FindingContext(
        "210987654321",
        "cn-north-1",
        partition="aws-cn",
        cluster_name="c" * 700,
        log_group="g\n\x00",
        log_stream="   ",
    ),
)


def file_alerts() -> list[dict[str, Any]]:
    found = []
    for path in FILES:
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                alert = record if "rule" in record else record.get("data")
                if alert is None and str(record.get("log", "")).startswith("{"):
                    alert = json.loads(record["log"])
            except (ValueError, AttributeError):  # the files hold broken lines on purpose
                continue
            if isinstance(alert, dict):
                found.append(alert)
    return found


def record(alert: dict[str, Any], n: int, rng: random.Random | None = None) -> AlertRecord:
    where = (rng or random.Random(n)).choice(
        [
            ("shop-prod", "i-0abc", "ip-10-0-0-1", {"ec2_instance_type": "m5.large"}),
            (None, None, None, None),
            ("c\u00e9", None, "node\n1", None),
            (None, "i-" + "9" * 600, "n", {"private_ip": "10.0.0.9", "ami_id": "  ", "vpc_id": 5}),
        ]
    )
    cluster, instance, node, aws = where
    return AlertRecord(
        alert=alert,
        log_event_id=f"3{n:055d}",
        timestamp_ms=1_700_000_000_000 + n,
        cluster_name=cluster,
        instance_id=instance,
        node_name=node,
        kubernetes=None,
        aws=aws,
    )


HOSTILE_TEXTS = (
    "",
    " ",
    "<NA>",
    "a\nb\x00c\x7f",
    "\ud800lone",
    "\U0001f600" * 300,
    "x" * 5000,
    "é" * 1100,
    "   padded   ",
    "13:44:05.478445995: with a time prefix",
    "2016-08-04T16:17:57.881785348+0000: iso prefix",
)
FIELD_NAMES = (
    "proc.name",
    "proc.exepath",
    "proc.pid",
    "proc.ppid",
    "container.id",
    "container.name",
    "container.image.repository",
    "container.image.tag",
    "container.image.digest",
    "container.start_ts",
    "container.privileged",
    "k8s.ns.name",
    "k8s.pod.name",
    "ka.target.resource",
    "ka.target.name",
    "ka.target.namespace",
    "ka.target.subresource",
    "evt.time",
    "evt.time.iso8601",
    "user.name",
    "fd.name",
    "x\n",
    "x\\n",
    "k" * 200 + "1",
    "k" * 200 + "2",
    "\ud800",
    "",
)


def hostile_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(12)
    if kind < 4:
        return rng.choice(HOSTILE_TEXTS)
    if kind == 4:
        return rng.choice([0, -1, 2**31, 2**31 - 1, 10**30, 1_700_000_000_000_000_000, 10**1200])
    if kind == 5:
        return rng.choice([True, False, None, 1.5, float("nan"), float("inf"), -0.0])
    if kind == 6 and depth < 2:
        return [hostile_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 7 and depth < 2:
        return {rng.choice(HOSTILE_TEXTS): hostile_value(rng, depth + 1) for _ in range(2)}
    if kind == 8:
        return "".join(chr(rng.randrange(0x30000)) for _ in range(rng.randrange(1, 30)))
    return f"value-{rng.randrange(5)}"


def random_alert(rng: random.Random, templates: list[dict[str, Any]]) -> dict[str, Any]:
    alert = copy.deepcopy(rng.choice(templates))
    fields = alert.get("output_fields")
    if not isinstance(fields, dict):
        fields = alert["output_fields"] = {}
    for _ in range(rng.randrange(6)):
        fields[rng.choice(FIELD_NAMES)] = hostile_value(rng)
    if rng.random() < 0.05:  # more output fields than ProductFields can hold
        for i in range(rng.randrange(40, 90)):
            fields[f"{rng.choice(['proc', 'zz', 'container'])}.f{i}"] = hostile_value(rng)
    if rng.random() < 0.02:  # over 240 KB unless shrunk
        for i in range(150):
            fields[f"big.{i}"] = "\U0001f600" * 3000
    if rng.random() < 0.3:
        alert["output"] = rng.choice([*HOSTILE_TEXTS, None, 5, ["a"]])
    if rng.random() < 0.2:
        alert["tags"] = rng.choice(
            [
                ["mitre_execution", "T1059", "container"],
                ["mitre_impact", "T1496", "T1489", "T9999"],
                ["TA0003", "t1098.001", "mitre_reconnaissance", "mitre_bogus"],
                [1, None, ["x"], "mitre_discovery"],
                "not a list",
                [],
                [" \n"],
            ]
        )
    if rng.random() < 0.2:
        alert["source"] = rng.choice(["k8s_audit", "aws_cloudtrail", "okta", None, "", "plugin"])
    if rng.random() < 0.1:
        alert.pop(rng.choice(["source", "hostname", "output", "output_fields", "time", "tags"]), 0)
    if rng.random() < 0.1:
        alert["hostname"] = hostile_value(rng)
    if rng.random() < 0.2:
        alert["time"] = rng.choice(
            [
                "2024-05-25T13:44:05.478445995Z",
                "2024-05-25T15:44:05.1234567891234+02:00",
                "2024-05-25 13:44:05z",
                "9999-12-31T23:59:59.999999999-01:00",
                "not a time",
                "2024-13-40T99:99:99Z",
                12345,
            ]
        )
    if rng.random() < 0.1:
        alert["rule"] = rng.choice((*HOSTILE_TEXTS, "!!!", "Rule " * 100))
    if rng.random() < 0.1:
        alert["priority"] = rng.choice(["warning", "INFO", " notice ", "critical"])
    return alert


def batches() -> Iterator[tuple[FindingContext, list[AlertRecord]]]:
    templates = [a for a in file_alerts() if isinstance(a.get("rule"), str)]
    bench = distinct_alerts(1000)
    for ctx in CONTEXTS:
        yield ctx, [record(a, n) for n, a in enumerate(bench)]
        yield ctx, [record(a, n) for n, a in enumerate(file_alerts())]
    rng = random.Random(SEED)
    for n in range(RANDOM_BATCHES):
        alerts = [random_alert(rng, templates) for _ in range(rng.randrange(1, 8))]
        # Coalescing groups: copies that differ in their time only, or not at all.
        for alert in list(alerts):
            for _ in range(rng.choice([0, 0, 1, 3])):
                twin = copy.deepcopy(alert)
                second = rng.randrange(60)
                twin["time"] = f"2024-05-25T13:44:{second:02d}.{rng.randrange(10**9):09d}Z"
                if isinstance(twin.get("output_fields"), dict) and rng.random() < 0.5:
                    twin["output_fields"]["evt.time"] = rng.randrange(10**18)
                alerts.append(twin)
        rng.shuffle(alerts)
        yield rng.choice(CONTEXTS), [record(a, n * 100 + i, rng) for i, a in enumerate(alerts)]


def dump(path: Path) -> None:
    count = 0
    with path.open("w") as out:
        for ctx, records in batches():
            try:
                found = [json.loads(text) for _, text in coalesce_texts(records, ctx)]
                line: dict[str, Any] = {"findings": found}
                count += len(found)
            except ValueError as exc:  # an alert without a string rule or a known priority
                line = {"error": type(exc).__name__}
            out.write(json.dumps(line) + "\n")
    print(f"{path}: {count} findings")


def compare(before: Path, after: Path) -> int:
    same = differ = errors = 0
    with before.open() as old, after.open() as new:
        for number, (a, b) in enumerate(zip(old, new, strict=True), 1):
            left, right = json.loads(a), json.loads(b)
            if "error" in left or "error" in right:
                errors += 1
                if left != right:
                    differ += 1
                    print(f"batch {number}: {left.get('error')} vs {right.get('error')}")
                continue
            for x, y in zip(left["findings"], right["findings"], strict=True):
                if x == y:
                    same += 1
                else:
                    differ += 1
                    keys = sorted(k for k in x.keys() | y.keys() if x.get(k) != y.get(k))
                    print(f"batch {number}, finding {x.get('Id')}: differs in {keys}")
    print(f"{same} findings equal, {differ} differ; {errors} batches refused (same error)")
    return 1 if differ else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["dump"]:
        dump(Path(sys.argv[2]))
        sys.exit(0)
    sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))

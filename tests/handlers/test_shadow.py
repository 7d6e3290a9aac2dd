"""Shadow rules (issue 12): a custom rule tagged ``shadow`` is counted per rule and never
imported; the replay CLI's dry run shows the findings it would have produced."""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aws_fakes import (
    REGION,
    FakeLambdaContext,
    falco_alert,
    moto_security_hub,
    stored_findings,
    subscription_event,
)

from handlers import heartbeat, ingest, shadow
from handlers.__main__ import main

RULES = """
- rule: Curl in checkout
  desc: trying it out
  condition: spawned_process and proc.name = curl
  output: curl ran (%proc.cmdline)
  priority: WARNING
  tags: [shadow, mitre_command_and_control]
- rule: Terminal shell in container
  append: true
  condition: and not k8s.ns.name = ci
- macro: spawned_process
  condition: evt.type = execve
"""


def shadow_alert(n: int, rule: str = "Curl in checkout") -> dict[str, Any]:
    return falco_alert(n, rule=rule, tags=("shadow", "mitre_command_and_control"))


def test_the_rules_file_names_its_shadow_rules() -> None:
    assert shadow.shadow_rules(RULES) == ("Curl in checkout",)
    assert shadow.shadow_rules("") == ()


def test_rule_dimension_is_bounded_by_the_configured_rules() -> None:
    counts = {"Curl in checkout": 3, "Someone else's rule": 2, "Another": 1}
    assert shadow.dimensions(counts, frozenset({"Curl in checkout"})) == {
        "Curl in checkout": 3,
        shadow.OTHER_RULE: 3,
    }
    many = {f"rule {n}": 1 for n in range(200)}
    assert len(shadow.dimensions(many, frozenset(many))) == shadow.MAX_RULES


def test_the_handler_counts_shadow_alerts_and_never_imports_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHADOW_RULES", json.dumps(["Curl in checkout"]))
    monkeypatch.delenv("CLUSTER_NAME", raising=False)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    messages = [json.dumps(a) for a in (shadow_alert(1), shadow_alert(2), falco_alert(3))]
    with moto_security_hub(REGION):
        ingest.securityhub_client.cache_clear()
        heartbeat.dynamodb_client.cache_clear()
        summary = ingest.handler(subscription_event(messages), FakeLambdaContext())
        found = stored_findings(REGION)
    assert summary["imported"] == 1
    assert [f["ProductFields"]["falco/rule"] for f in found] == ["Terminal shell in container"]
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    shadow_metrics = [d for d in documents if shadow.METRIC in d]
    assert [(d["Rule"], d[shadow.METRIC]) for d in shadow_metrics] == [("Curl in checkout", [2.0])]


def test_replay_dry_run_shows_what_shadow_rules_would_have_produced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "alerts.jsonl"
    lines = [shadow_alert(1), shadow_alert(2), falco_alert(3)]
    path.write_text("\n".join(json.dumps(a) for a in lines) + "\n")
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    assert main(["replay", str(path), "--dry-run"]) == 0
    printed = [json.loads(line) for line in out.getvalue().splitlines()]
    marked = [f for f in printed if f["ProductFields"].get("falco/shadow") == "true"]
    assert [f["ProductFields"]["falco/rule"] for f in marked] == ["Curl in checkout"] * 2
    assert "shadow rule 'Curl in checkout': 2 alerts -> 2 findings (not imported)" in err.getvalue()

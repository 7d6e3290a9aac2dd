"""The coverage part of ``make demo``: the silent node's finding appears among the alert findings
and is archived when the node reports again."""

from __future__ import annotations

import io

from aws_fakes import REGION, moto_security_hub

from handlers import coverage_demo


def test_demo_shows_the_silent_node_next_to_alerts_and_archives_it_when_it_returns() -> None:
    out = io.StringIO()
    with moto_security_hub(REGION):
        assert coverage_demo.run(REGION, "shop-prod-use1", out) == 0
    text = out.getvalue()
    assert "check: 3/4 nodes reporting (75%), opened 1 finding(s)" in text
    assert "HIGH          coverage Falco is not reporting from node ip-" in text
    assert "opened 0, active coverage findings 1 (no duplicate coverage findings)" in text
    assert "reports again: archived 1 finding(s), coverage 100%" in text

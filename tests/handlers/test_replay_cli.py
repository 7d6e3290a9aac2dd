"""``python -m handlers replay`` and ``python -m handlers demo``: the command line.

Dry runs make no AWS call at all (checked by making any call fail). Imports go over HTTP to an
emulator on 127.0.0.1 (``--endpoint-url``), as a user would point the CLI at one: moto, answering
through aws_fakes.LocalEndpoint (moto's own server needs Flask, not a project dependency).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.client
import pytest
from asff_limits import assert_within_asff_limits
from aws_fakes import (
    FAKE_CREDENTIALS,
    HttpFaults,
    LocalEndpoint,
    falco_alert,
    fluent_bit_log_record,
    fluent_bit_merged_record,
    moto_security_hub,
    stored_findings,
)

from handlers import replay, securityhub
from handlers.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
REGION = "eu-west-1"


def run_cli(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """main() with captured stdout/stderr (and stdin when given)."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr, sys.stdin
    sys.stdout, sys.stderr = out, err
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()))
    try:
        status = main(list(args))
    finally:
        sys.stdout, sys.stderr, sys.stdin = saved
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def alerts_file(tmp_path: Path) -> Path:
    """Six lines: three record shapes, a repeat, a banner, a broken line and a blank line."""
    repeat = [falco_alert(5, time=f"2026-03-14T03:02:0{s}.000000000Z") for s in (1, 2)]
    lines = [
        json.dumps(falco_alert(1, priority="Critical")),  # 1: raw Falco JSON
        fluent_bit_log_record(falco_alert(2, priority="Warning")),  # 2: `log` string
        fluent_bit_merged_record(repeat[0]),  # 3: merge key `data`
        fluent_bit_merged_record(repeat[1]),  # 4: the same alert, later: coalesces
        "Sat Mar 14 02:58:57 2026: Falco version: 0.41.3 (x86_64)",  # 5: banner
        "",  # 6: blank
        '{"hostname": "ip-10-0-1-23", "rule": "Write below etc", "prio',  # 7: cut short
        fluent_bit_log_record(falco_alert(3, priority="Debug")),  # 8
    ]
    path = tmp_path / "alerts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def no_aws_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Any, operation: str, params: Any) -> Any:
        raise AssertionError(f"unexpected AWS call {operation}")

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", refuse)
    for key in FAKE_CREDENTIALS:
        monkeypatch.delenv(key, raising=False)


# --- dry run ----------------------------------------------------------------------------------


def test_dry_run_prints_findings_as_json_lines_without_aws(
    alerts_file: Path, no_aws_calls: None
) -> None:
    status, out, err = run_cli(
        "replay", str(alerts_file), "--dry-run", "--region", REGION, "--cluster-name", "lab"
    )
    assert status == 0, err
    found = [json.loads(line) for line in out.splitlines()]
    assert len(found) == 4  # 5 alerts, two of them identical but for the time
    for finding in found:
        assert finding["AwsAccountId"] == "000000000000"
        assert finding["ProductArn"].startswith(f"arn:aws:securityhub:{REGION}:000000000000:")
        assert_within_asff_limits(finding)
    assert {f["Severity"]["Original"] for f in found} == {"Critical", "Warning", "Notice", "Debug"}


def test_dry_run_summary_counts_and_names_bad_lines(alerts_file: Path, no_aws_calls: None) -> None:
    status, _, err = run_cli("replay", str(alerts_file), "--dry-run")
    assert status == 0
    assert f"{alerts_file}: 8 lines read, 5 alerts -> 4 findings (1 coalesced)" in err
    assert "would import 4" in err
    assert "skipped not_json: 2" in err
    assert f"{alerts_file}:5: not_json: " in err
    assert f"{alerts_file}:7: not_json: " in err
    assert f"{alerts_file}:6:" not in err  # a blank line is not an error


def test_min_priority_and_account_id_apply(alerts_file: Path, no_aws_calls: None) -> None:
    status, out, err = run_cli(
        "replay",
        str(alerts_file),
        "--dry-run",
        "--min-priority",
        "WARNING",
        "--account-id",
        "210987654321",
    )
    assert status == 0
    found = [json.loads(line) for line in out.splitlines()]
    assert {f["Severity"]["Original"] for f in found} == {"Critical", "Warning"}
    assert {f["AwsAccountId"] for f in found} == {"210987654321"}
    assert "skipped below_min_priority: 3" in err


def test_reads_stdin(alerts_file: Path, no_aws_calls: None) -> None:
    status, out, err = run_cli("replay", "-", "--dry-run", stdin=alerts_file.read_text())
    assert status == 0
    assert len(out.splitlines()) == 4
    assert "<stdin>:7: not_json" in err


def test_strict_fails_on_lines_that_are_not_alerts(alerts_file: Path, no_aws_calls: None) -> None:
    status, _, _ = run_cli("replay", str(alerts_file), "--dry-run", "--strict")
    assert status == 1


def test_progress_bar_only_when_asked(alerts_file: Path, no_aws_calls: None) -> None:
    _, _, quiet = run_cli("replay", str(alerts_file), "--dry-run")
    _, _, shown = run_cli("replay", str(alerts_file), "--dry-run", "--progress")
    assert "\r" not in quiet  # stderr is not a terminal here
    assert "\rreplaying [" in shown
    assert "100%" in shown


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min-priority", "loud"], "--min-priority 'loud' is not a Falco priority; allowed: "),
        (["--account-id", "1"], "--account-id applies to --dry-run only"),
    ],
)
def test_usage_errors_exit_2(
    alerts_file: Path, no_aws_calls: None, args: list[str], message: str
) -> None:
    dry = [] if "--account-id" in args else ["--dry-run"]
    status, _, err = run_cli("replay", str(alerts_file), *dry, *args)
    assert status == 2
    assert message in err


def test_a_missing_file_is_named(tmp_path: Path, no_aws_calls: None) -> None:
    missing = tmp_path / "nope.jsonl"
    status, _, err = run_cli("replay", str(missing), "--dry-run")
    assert status == 2
    assert f"replay: cannot read {missing}" in err


# --- imports --------------------------------------------------------------------------------


@pytest.fixture
def endpoint() -> Iterator[LocalEndpoint]:
    """http://127.0.0.1:<port> answered by moto, Security Hub enabled in REGION."""
    with moto_security_hub(REGION), LocalEndpoint() as local:
        yield local


def test_import_into_security_hub_via_endpoint_url(
    alerts_file: Path, endpoint: LocalEndpoint
) -> None:
    args = ("replay", str(alerts_file), "--region", REGION, "--endpoint-url", endpoint.url)
    status, out, err = run_cli(*args)
    assert status == 0, err
    assert out == ""
    assert f"imported 4 into {REGION}; failed 0" in err
    assert endpoint.requests == ["sts./", "securityhub./findings/import"]  # one STS call
    stored = stored_findings(REGION)
    assert len(stored) == 4
    for finding in stored:
        assert finding["AwsAccountId"] == "123456789012"  # the caller's, from STS
        assert_within_asff_limits(finding)

    # Replaying the same file again (a backfill run twice) adds nothing.
    status, _, _ = run_cli(*args)
    assert status == 0
    assert {f["Id"] for f in stored_findings(REGION)} == {f["Id"] for f in stored}


def test_a_failed_finding_makes_the_exit_status_1(
    alerts_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process moto; the client rejects one finding permanently at the HTTP layer."""
    original = securityhub.new_client
    first: list[str] = []

    def is_first(finding_id: str) -> bool:
        first.append(finding_id) if not first else None
        return finding_id == first[0]

    def client_rejecting_one(*args: Any, **kwargs: Any) -> Any:
        client = original(*args, **kwargs)
        HttpFaults(client).reject(is_first, "InvalidInput", "Finding does not adhere to ASFF")
        return client

    monkeypatch.setattr(replay.securityhub, "new_client", client_rejecting_one)
    with moto_security_hub(REGION):
        status, _, err = run_cli("replay", str(alerts_file), "--region", REGION)
        assert len(stored_findings(REGION)) == 3
    assert status == 1
    assert "failed 1" in err
    assert "failed InvalidInput: 1" in err
    # The rejected finding is the first one sent: the raw alert on line 1.
    assert f"{alerts_file}:1: not imported: InvalidInput: Finding does not adhere to ASFF" in err


def test_no_credentials_is_a_usage_error(
    alerts_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key in FAKE_CREDENTIALS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    status, _, err = run_cli("replay", str(alerts_file), "--region", REGION)
    assert status == 2
    assert "cannot get the AWS account" in err
    assert "--dry-run" in err


# --- demo ---------------------------------------------------------------------------------------


def test_demo_runs_offline_and_shows_both_regions() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    done = subprocess.run(
        [sys.executable, "-m", "handlers", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for region in ("us-east-1", "eu-west-1"):
        assert f"Security Hub findings in {region}" in out
    assert out.count("(no duplicates)") == 2
    assert "skipped not_json: 1" in out
    assert "skipped internal_event: 1" in out
    assert "skipped below_min_priority" in out
    assert "CRITICAL (Critical)" in out
    assert '"level"' not in out  # handler JSON logs stay out of the table unless --verbose
    # Issue 12: a storm over several deliveries (some re-delivered) is one finding counting 300.
    assert " 300 x Detect outbound connections to common miner pool ports" in out


def test_the_demo_file_replays_and_names_its_broken_line(no_aws_calls: None) -> None:
    demo = ROOT / "demo" / "falco-alerts.jsonl"
    status, out, err = run_cli("replay", str(demo), "--dry-run", "--min-priority", "notice")
    assert status == 0
    assert len(out.splitlines()) == 11  # the demo's findings across both clusters
    assert f"{demo}:9: not_json: " in err  # the line cut short
    assert "skipped internal_event: 1" in err

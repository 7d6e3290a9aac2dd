"""Replay at the edges: streamed windows (flat memory, imports as it goes), gzip and CloudWatch
export files, a BOM, files with no usable line, Ctrl-C with a resume point, the installed
command."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_fakes import (
    FAKE_CREDENTIALS,
    LocalEndpoint,
    falco_alert,
    fluent_bit_log_record,
    moto_security_hub,
    stored_findings,
)
from test_replay_cli import run_cli

from handlers import replay

ROOT = Path(__file__).resolve().parents[2]
REGION = "eu-west-1"


def alert_lines(count: int, start: int = 0) -> list[str]:
    return [json.dumps(falco_alert(n)) for n in range(start, start + count)]


@pytest.fixture
def no_aws_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in FAKE_CREDENTIALS:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def endpoint() -> Iterator[LocalEndpoint]:
    with moto_security_hub(REGION), LocalEndpoint() as local:
        yield local


def totals(err: str) -> str:
    return err.rstrip("\n").splitlines()[-1]


def test_gzip_bom_and_cloudwatch_export_lines_replay_like_plain_lines(
    tmp_path: Path, no_aws_calls: None
) -> None:
    lines = alert_lines(6)
    plain = tmp_path / "plain.jsonl"
    plain.write_text("\n".join(lines) + "\n")
    zipped = tmp_path / "alerts.jsonl.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    export = tmp_path / "export.txt"  # CloudWatch Logs export: "<timestamp> <message>"
    export.write_text(
        "\ufeff"
        + "\n".join(
            f"2026-03-14T03:02:{n:02d}.000Z {fluent_bit_log_record(falco_alert(n))}"
            for n in range(6)
        )
        + "\n",
        encoding="utf-8",
    )
    outputs = {}
    for path in (plain, zipped, export):
        status, out, err = run_cli("replay", str(path), "--dry-run")
        assert status == 0, err
        assert totals(err) == (
            f"{path}: 6 lines read, 6 alerts -> 6 findings (0 coalesced); would import 6; failed 0"
        )
        outputs[path.name] = {json.loads(line)["Id"] for line in out.splitlines()}
    assert outputs["plain.jsonl"] == outputs["alerts.jsonl.gz"] == outputs["export.txt"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "no usable line"),
        (bytes(range(256)) * 40, "no usable line"),
        (b"\x1f\x8b\x08\x00garbage that is not deflate", "unreadable after line 0"),
        (gzip.compress(b"\n".join(s.encode() for s in alert_lines(3)))[:-30], "unreadable"),
        (b"\xef\xbb\xbf", "no usable line"),  # a BOM alone
    ],
)
def test_a_file_without_a_usable_line_exits_1_and_says_why(
    tmp_path: Path, no_aws_calls: None, content: bytes, message: str
) -> None:
    path = tmp_path / "input"
    path.write_bytes(content)
    status, _, err = run_cli("replay", str(path), "--dry-run")
    assert status == 1
    assert message in err
    assert "lines read" in totals(err)  # the output ends on the totals


def test_ctrl_c_prints_the_summary_and_the_line_to_resume_from(
    tmp_path: Path, endpoint: LocalEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "backfill.jsonl"
    path.write_text("\n".join(alert_lines(10)) + "\n")
    monkeypatch.setattr(replay, "WINDOW_LINES", 3)
    windows = 0
    original = replay._replay_window

    def interrupted_in_the_third_window(*args: Any) -> None:
        nonlocal windows
        windows += 1
        if windows == 3:
            raise KeyboardInterrupt
        original(*args)

    monkeypatch.setattr(replay, "_replay_window", interrupted_in_the_third_window)
    args = ("replay", str(path), "--region", REGION, "--endpoint-url", endpoint.url)
    status, _, err = run_cli(*args)
    assert status == 130
    assert "interrupted; lines 1-6 are done: resume with --from-line 7" in err
    assert "Traceback" not in err
    assert totals(err).startswith(f"{path}: 9 lines read")
    assert len(stored_findings(REGION)) == 6  # imported as it went

    monkeypatch.setattr(replay, "_replay_window", original)
    status, _, err = run_cli(*args, "--from-line", "7")
    assert status == 0, err
    assert "imported 4 into" in totals(err)
    assert len(stored_findings(REGION)) == 10


def test_memory_stays_flat_however_long_the_file(
    tmp_path: Path, no_aws_calls: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay, "WINDOW_LINES", 500)

    def peak_mb(lines: int) -> float:
        path = tmp_path / f"{lines}.jsonl"
        path.write_text("\n".join(alert_lines(lines)) + "\n")
        options = replay.ReplayOptions(source=str(path), dry_run=True, progress=False)
        with open(os.devnull, "w") as sink:
            tracemalloc.start()
            try:
                assert replay.run(options, stdout=sink, stderr=sink) == 0
                return tracemalloc.get_traced_memory()[1] / 1e6
            finally:
                tracemalloc.stop()

    short, long = peak_mb(1000), peak_mb(6000)
    assert long < short * 1.2, (short, long)


def test_the_installed_command_runs_from_any_directory(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "requirements.txt"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "handlers", source / "handlers")
    target = tmp_path / "installed"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), "."],
        cwd=source,
        check=True,
        capture_output=True,
    )
    alerts_file = tmp_path / "alerts.jsonl"
    alerts_file.write_text("\n".join(alert_lines(2)) + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [str(target / "bin" / "falco-securityhub"), "replay", "--dry-run", str(alerts_file)],
        cwd=elsewhere,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2

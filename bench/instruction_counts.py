"""Instructions per alert for the decode floor and each handler stage, counted by valgrind.

Run with ``make bench-instructions`` (needs valgrind: ``apt-get install valgrind``). Wall-clock
times on a shared VM move by +-15% between runs, which hides a change worth a few per cent;
instruction counts do not move at all, so they tell whether a change to parsing or mapping does
less work. They are not times: memory stalls do not show, and C loops (zlib, json's scanner) and
the Python interpreter do different work per instruction. bench/handler_bench.py gives the times.

How: a child interpreter decodes the bench's 1,000 alerts once (warming caches), then once more
inside ``exec``; callgrind counts only inside ``exec`` (--toggle-collect=builtin_exec). A child
that runs ``exec("pass")`` instead measures what else runs inside exec (dataclasses build their
methods with it at import), and is subtracted.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

STAGES = ("floor", "decode", "parse", "map")


def child(stage: str, events_file: str, measured: bool) -> None:
    """Run one stage (with the stages before it) twice, the second time inside exec."""
    import gc

    from handlers import alerts, findings

    events: list[dict[str, Any]] = pickle.loads(Path(events_file).read_bytes())
    ctx = findings.FindingContext(
        "123456789012", "us-east-1", "aws", None, "Debug", "/falco/alerts", "node-1"
    )
    gc.disable()  # as in the handler, which pauses the collector per event

    def floor() -> None:
        for event in events:
            payload = json.loads(gzip.decompress(base64.b64decode(event["awslogs"]["data"])))
            for log_event in payload["logEvents"]:
                json.loads(json.loads(log_event["message"])["log"])

    def handler_stages() -> None:
        for event in events:
            batch = alerts.decode_subscription_event(event)
            if stage == "decode":
                continue
            records = [alerts.parse_log_event(log_event) for log_event in batch.events]
            if stage == "parse":
                continue
            usable = [r for r in records if isinstance(r, alerts.AlertRecord)]
            for _ in findings.coalesce_texts(usable, ctx):
                pass

    work = floor if stage == "floor" else handler_stages
    work()
    exec("work()" if measured else "pass", {"work": work})  # the counted region


def collected(stage: str, events_file: str, measured: bool) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        "--collect-atstart=no",
        "--toggle-collect=builtin_exec",
        sys.executable,
        __file__,
        "--child",
        stage,
        events_file,
        "1" if measured else "0",
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    match = re.search(r"Collected : (\d+)", done.stderr)
    if match is None:
        raise RuntimeError(f"no count in valgrind's output:\n{done.stderr[-2000:]}")
    return int(match.group(1))


def main() -> int:
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    import handler_bench

    alerts = handler_bench.distinct_alerts(handler_bench.N_ALERTS)
    events = handler_bench.subscription_events(alerts)
    with tempfile.NamedTemporaryFile(suffix=".pickle", delete=False) as handle:
        handle.write(pickle.dumps(events))
    try:
        per_alert: dict[str, float] = {}
        for stage in STAGES:
            counted = collected(stage, handle.name, measured=True)
            baseline = collected(stage, handle.name, measured=False)
            per_alert[stage] = (counted - baseline) / len(alerts)
    finally:
        os.unlink(handle.name)

    print(f"instructions per alert ({len(alerts)} alerts, {len(events)} events, valgrind):")
    print(f"  decode floor (base64, gunzip, JSON, nested log JSON)  {per_alert['floor']:>9,.0f}")
    stages = {
        "alerts.decode_subscription_event": per_alert["decode"],
        "alerts.parse_log_event": per_alert["parse"] - per_alert["decode"],
        "findings.coalesce_texts": per_alert["map"] - per_alert["parse"],
    }
    for name, count in stages.items():
        print(f"  {name:<52} {count:>9,.0f}")
    print(f"  handler stages together (import not counted)          {per_alert['map']:>9,.0f}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3], sys.argv[4] == "1")
    else:
        sys.exit(main())

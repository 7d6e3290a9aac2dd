"""handlers.alerts: every shape Fluent Bit can deliver yields the same Falco alert; junk is skipped
with a reason an operator can count; a malformed envelope fails loudly."""

import base64
import gzip
import json
from pathlib import Path

import pytest

from handlers.alerts import (
    MAX_SKIP_DETAIL,
    SKIP_REASONS,
    AlertRecord,
    InvalidEvent,
    LogEvent,
    Skip,
    decode_subscription_event,
    parse_log_event,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "falco_alerts.jsonl"
ALERTS = [json.loads(line) for line in FIXTURES.read_text().splitlines() if line.strip()]
SHELL_IN_CONTAINER = ALERTS[0]

NODE = "ip-192-168-34-135.us-west-2.compute.internal"
AWS_FILTER = {
    "ec2_instance_id": "i-0123456789abcdef0",
    "ec2_instance_type": "m6i.large",
    "az": "us-west-2a",
    "account_id": "123456789012",
    "private_ip": "192.168.34.135",
    "vpc_id": "vpc-0a1b2c3d4e5f60718",
    "ami_id": "ami-0abcdef1234567890",
    "hostname": NODE,
}
KUBERNETES = {
    "pod_name": "falco-xczjd",
    "namespace_name": "falco",
    "pod_id": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
    "labels": {"app.kubernetes.io/name": "falco"},
    "annotations": {"kubectl.kubernetes.io/default-container": "falco"},
    "host": NODE,
    "container_name": "falco",
    "docker_id": "5b0a8e6c1d2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b",
    "container_image": "docker.io/falcosecurity/falco:0.39.2",
}
CRI_TIME = "2024-05-25T13:44:05.481237806Z"  # when containerd wrote the line, not the event time


def subscription_event(payload: object) -> dict:
    data = base64.b64encode(gzip.compress(json.dumps(payload).encode())).decode()
    return {"awslogs": {"data": data}}


def data_message(*messages: str) -> dict:
    return {
        "messageType": "DATA_MESSAGE",
        "owner": "123456789012",
        "logGroup": "/aws/containerinsights/prod/falco",
        "logStream": "falco.var.log.containers.falco-xczjd_falco_falco-5b0a8e6c.log",
        "subscriptionFilters": ["falco-to-securityhub"],
        "logEvents": [
            {
                "id": f"3792018711860010000000000000000{i:02d}",
                "timestamp": 1716644645482 + i,
                "message": message,
            }
            for i, message in enumerate(messages)
        ],
    }


def event(message: str, event_id: str = "37920187118600100000000000000000000000000000000000000001"):
    return LogEvent(id=event_id, timestamp_ms=1716644645482, message=message)


def cri_record(**extra: object) -> dict:
    return {"time": CRI_TIME, "stream": "stdout", "_p": "F", **extra}


# --- the envelope -----------------------------------------------------------------------------


def test_data_message_decodes_to_its_log_events():
    raw = json.dumps(SHELL_IN_CONTAINER)
    batch = decode_subscription_event(subscription_event(data_message(raw, "Falco banner")))

    assert batch.message_type == "DATA_MESSAGE"
    assert batch.owner == "123456789012"
    assert batch.log_group == "/aws/containerinsights/prod/falco"
    assert batch.log_stream.startswith("falco.var.log.containers.falco-xczjd")
    assert [e.message for e in batch.events] == [raw, "Falco banner"]
    assert batch.events[0].id == "379201871186001000000000000000000"
    assert batch.events[0].timestamp_ms == 1716644645482


def test_control_message_decodes():
    # CloudWatch Logs sends this when the subscription is created; ingest ignores it.
    control = {
        "messageType": "CONTROL_MESSAGE",
        "owner": "CloudwatchLogs",
        "logGroup": "",
        "logStream": "",
        "subscriptionFilters": [],
        "logEvents": [
            {
                "id": "",
                "timestamp": 1716644645000,
                "message": "CWL CONTROL MESSAGE: Checking health of destination Lambda function.",
            }
        ],
    }

    batch = decode_subscription_event(subscription_event(control))

    assert batch.message_type == "CONTROL_MESSAGE"
    assert batch.owner == "CloudwatchLogs"
    assert batch.events[0].message.startswith("CWL CONTROL MESSAGE")


def _gzip_b64(raw: bytes) -> str:
    return base64.b64encode(gzip.compress(raw)).decode()


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({}, "no 'awslogs' object"),
        ({"Records": [{"s3": {}}]}, "no 'awslogs' object"),
        ({"awslogs": {}}, "awslogs.data is missing"),
        ({"awslogs": {"data": 42}}, "awslogs.data is missing or not a string"),
        ({"awslogs": {"data": "abc"}}, "not base64"),
        ({"awslogs": {"data": base64.b64encode(b"plain text").decode()}}, "not gzip"),
        ({"awslogs": {"data": _gzip_b64(b"not json")}}, "does not hold JSON"),
        ({"awslogs": {"data": _gzip_b64(b"[1, 2]")}}, "holds a JSON array"),
        ({"awslogs": {"data": _gzip_b64(b'{"owner": "1"}')}}, "'messageType' is missing"),
        (
            {
                "awslogs": {
                    "data": _gzip_b64(
                        json.dumps(
                            {
                                "messageType": "DATA_MESSAGE",
                                "owner": "1",
                                "logGroup": "g",
                                "logStream": "s",
                            }
                        ).encode()
                    )
                }
            },
            "'logEvents' is missing",
        ),
        (
            {
                "awslogs": {
                    "data": _gzip_b64(
                        json.dumps(
                            {
                                "messageType": "DATA_MESSAGE",
                                "owner": "1",
                                "logGroup": "g",
                                "logStream": "s",
                                "logEvents": [{"id": "1", "timestamp": 1}],
                            }
                        ).encode()
                    )
                }
            },
            r"logEvents\[0\].message is missing",
        ),
        (
            {
                "awslogs": {
                    "data": _gzip_b64(
                        json.dumps(
                            {
                                "messageType": "DATA_MESSAGE",
                                "owner": "1",
                                "logGroup": "g",
                                "logStream": "s",
                                "logEvents": [
                                    {"id": "1", "timestamp": "yesterday", "message": "m"}
                                ],
                            }
                        ).encode()
                    )
                }
            },
            r"logEvents\[0\].timestamp",
        ),
    ],
)
def test_malformed_envelope_raises_invalid_event_saying_what_is_wrong(event, message):
    with pytest.raises(InvalidEvent, match=message) as caught:
        decode_subscription_event(event)

    assert isinstance(caught.value, ValueError)


# --- record shapes: all carry the same alert ----------------------------------------------------


def test_raw_falco_json_message_is_the_alert():
    parsed = parse_log_event(event(json.dumps(SHELL_IN_CONTAINER)))

    assert isinstance(parsed, AlertRecord)
    assert parsed.alert == SHELL_IN_CONTAINER
    assert parsed.log_event_id.endswith("0001")
    assert parsed.timestamp_ms == 1716644645482
    assert parsed.cluster_name is None
    assert parsed.instance_id is None
    assert parsed.node_name == SHELL_IN_CONTAINER["hostname"]
    assert parsed.kubernetes is None


def test_log_string_with_aws_and_kubernetes_metadata_carries_the_alert_and_the_node():
    record = cri_record(
        log=json.dumps(SHELL_IN_CONTAINER),
        kubernetes=KUBERNETES,
        cluster_name="prod",
        **AWS_FILTER,
    )

    parsed = parse_log_event(event(json.dumps(record)))

    assert isinstance(parsed, AlertRecord)
    assert parsed.alert == SHELL_IN_CONTAINER
    assert parsed.cluster_name == "prod"
    assert parsed.instance_id == "i-0123456789abcdef0"
    assert parsed.node_name == NODE
    assert parsed.kubernetes == KUBERNETES
    assert parsed.aws is not None
    assert parsed.aws["private_ip"] == "192.168.34.135"
    assert parsed.aws["ec2_instance_type"] == "m6i.large"


@pytest.mark.parametrize("merge_key", ["data", "log_processed", "falco_alert"])
def test_alert_under_a_merge_key_is_found(merge_key):
    # aws-for-fluent-bit merges under `data`; `log_processed` is Fluent Bit's own default; any
    # other key holding an object with rule and priority works too.
    record = cri_record(
        kubernetes=KUBERNETES, cluster_name="prod", **{merge_key: SHELL_IN_CONTAINER}
    )

    parsed = parse_log_event(event(json.dumps(record)))

    assert isinstance(parsed, AlertRecord)
    assert parsed.alert == SHELL_IN_CONTAINER
    assert parsed.cluster_name == "prod"
    assert parsed.node_name == NODE


def test_alert_merged_at_top_level_gets_falcos_time_back_from_the_cri_time_collision():
    # Merge_Log without a key: the alert's keys land beside the CRI keys, and `time` is the
    # container runtime's (when the line was written), not Falco's.
    record = {**SHELL_IN_CONTAINER, **cri_record(kubernetes=KUBERNETES), **AWS_FILTER}
    assert record["time"] == CRI_TIME

    parsed = parse_log_event(event(json.dumps(record)))

    assert isinstance(parsed, AlertRecord)
    assert parsed.alert == SHELL_IN_CONTAINER
    assert parsed.alert["time"] == "2024-05-25T13:44:05.478445995Z"
    assert parsed.instance_id == "i-0123456789abcdef0"
    assert parsed.node_name == NODE


def test_top_level_merge_with_the_log_kept_prefers_the_untouched_log_string():
    record = {
        **SHELL_IN_CONTAINER,
        **cri_record(log=json.dumps(SHELL_IN_CONTAINER), kubernetes=KUBERNETES),
    }

    parsed = parse_log_event(event(json.dumps(record)))

    assert isinstance(parsed, AlertRecord)
    assert parsed.alert == SHELL_IN_CONTAINER


def test_top_level_merge_without_evt_time_keeps_the_time_it_has():
    alert = {k: v for k, v in ALERTS[12].items()}  # old format
    alert["output_fields"] = {k: v for k, v in alert["output_fields"].items() if k != "evt.time"}
    record = {**alert, **cri_record(kubernetes=KUBERNETES)}

    parsed = parse_log_event(event(json.dumps(record)))

    assert isinstance(parsed, AlertRecord)
    assert parsed.alert["time"] == CRI_TIME
    assert parsed.alert["rule"] == "Terminal shell in container"


def test_raw_cri_line_without_the_cri_parser_still_yields_the_alert():
    line = f"{CRI_TIME} stdout F {json.dumps(SHELL_IN_CONTAINER)}"

    assert parse_log_event(event(line)).alert == SHELL_IN_CONTAINER
    assert parse_log_event(event(json.dumps(cri_record(log=line)))).alert == SHELL_IN_CONTAINER


@pytest.mark.parametrize("priority", ["WARNING", "warning", "Warning"])
def test_priority_is_recognised_in_any_letter_case(priority):
    alert = {**ALERTS[1], "priority": priority}

    parsed = parse_log_event(event(json.dumps(alert)))

    assert isinstance(parsed, AlertRecord)
    assert parsed.alert["priority"] == priority  # the alert is kept as Falco sent it


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: a["rule"])
def test_every_fixture_alert_parses(alert):
    assert isinstance(parse_log_event(event(json.dumps(alert))), AlertRecord)


def test_old_format_alert_without_source_tags_or_hostname_is_an_alert():
    old = ALERTS[12]
    assert not {"source", "tags", "hostname"} & old.keys()

    parsed = parse_log_event(event(json.dumps(old)))

    assert isinstance(parsed, AlertRecord)
    assert parsed.node_name is None


# --- junk ----------------------------------------------------------------------------------------

BANNER = "Wed May 25 13:40:01 2024: Falco version: 0.39.2 (x86_64)"
TEXT_ALERT = (
    "13:44:05.478445995: Notice A shell was spawned in a container with an attached terminal "
    "(user=root container_id=ee97d9c4186f)"
)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (BANNER, "not_json"),
        (
            "Wed May 25 13:40:01 2024: Loading rules from file /etc/falco/falco_rules.yaml",
            "not_json",
        ),
        (TEXT_ALERT, "not_json"),  # json_output off
        ("", "not_json"),
        ("   ", "not_json"),
        ('{"rule": "Terminal shell in container", "priority": "Notice"', "not_json"),
        ("[" * 100_000 + "]" * 100_000, "not_json"),
        ("1" * 5000, "not_falco_alert"),  # valid JSON: a number (kept as text)
        ("\x00\x01\ufffd", "not_json"),
        (json.dumps(cri_record(log=BANNER, kubernetes=KUBERNETES)), "not_json"),
        ("[1, 2, 3]", "not_falco_alert"),
        ("42", "not_falco_alert"),
        ("null", "not_falco_alert"),
        ("true", "not_falco_alert"),
        ('"Terminal shell in container"', "not_falco_alert"),
        ("{}", "not_falco_alert"),
        ('{"level": "info", "msg": "starting"}', "not_falco_alert"),
        ('{"rule": "Terminal shell in container"}', "not_falco_alert"),
        ('{"priority": "Notice"}', "not_falco_alert"),
        ('{"rule": "x", "priority": "Severe"}', "not_falco_alert"),
        ('{"rule": 42, "priority": "Notice"}', "not_falco_alert"),
        ('{"rule": "   ", "priority": "Notice"}', "not_falco_alert"),
        ('{"rule": "x", "priority": ["Notice"]}', "not_falco_alert"),
        ('{"rule": "x", "priority": null}', "not_falco_alert"),
        (json.dumps(cri_record(log='{"level": "info"}')), "not_falco_alert"),
        (json.dumps(cri_record(log="[1]")), "not_falco_alert"),
        (json.dumps(cri_record(log=42)), "not_falco_alert"),
        (json.dumps(cri_record(data={"rule": "x"})), "not_falco_alert"),
    ],
)
def test_junk_is_skipped_with_the_right_reason_and_the_log_event_id(message, reason):
    skipped = parse_log_event(event(message, event_id="evt-junk-1"))

    assert isinstance(skipped, Skip)
    assert skipped.reason == reason
    assert skipped.reason in SKIP_REASONS
    assert skipped.log_event_id == "evt-junk-1"
    assert 0 < len(skipped.detail) <= MAX_SKIP_DETAIL
    assert not skipped.detail.startswith("parser error")


def test_skip_detail_does_not_quote_the_payload():
    secret = "AKIA" + "X" * 200
    payloads = [
        json.dumps({"rule": "x", "priority": secret}),
        f"password={secret}",
        json.dumps(cri_record(log=f"token {secret}")),
    ]

    for payload in payloads:
        skipped = parse_log_event(event(payload))
        assert isinstance(skipped, Skip)
        assert secret not in skipped.detail
        assert payload not in skipped.detail


def test_skip_detail_explains_the_problem():
    skipped = parse_log_event(event('{"rule": "Write below etc", "priority": "Severe"}'))

    assert isinstance(skipped, Skip)
    assert "priority" in skipped.detail
    assert "Severe" in skipped.detail

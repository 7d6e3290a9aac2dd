"""handlers.findings: what a security engineer reads in the finding, field by field."""

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from asff_limits import assert_within_asff_limits, utf16_length

from handlers.alerts import AlertRecord, LogEvent, Skip, parse_log_event
from handlers.findings import (
    FindingContext,
    coalesce,
    filter_alert,
    to_finding,
    to_finding_text,
)
from handlers.names import parse_priority

FIXTURES = Path(__file__).parent.parent / "fixtures" / "falco_alerts.jsonl"
ALERTS = [json.loads(line) for line in FIXTURES.read_text().splitlines() if line.strip()]


def fixture(rule: str, *, source: str | None = "any", host: bool | None = None) -> dict[str, Any]:
    for alert in ALERTS:
        if alert["rule"] != rule or (source != "any" and alert.get("source") != source):
            continue
        is_host = alert.get("output_fields", {}).get("container.id") == "host"
        if host is None or host == is_host:
            return json.loads(json.dumps(alert))  # a private copy to change
    raise LookupError(rule)


SHELL = fixture("Terminal shell in container", source="syscall")
OLD_SHELL = fixture("Terminal shell in container", source=None)
SHADOW_IN_CONTAINER = fixture("Read sensitive file untrusted", host=False)
SHADOW_ON_HOST = fixture("Read sensitive file untrusted", host=True)
WRITE_BELOW_ETC = fixture("Write below etc")
DROP_AND_EXECUTE = fixture("Drop and execute new binary in container")
MINER = fixture("Detect crypto miners using the Stratum protocol")
REMOTE_COPY = fixture("Launch Remote File Copy Tools in Container")
RECONNAISSANCE = fixture("Basic Interactive Reconnaissance")
API_SERVER = fixture("Contact K8S API Server From Container")
EXEC_POD = fixture("Attach/Exec Pod")
SERVICEACCOUNT = fixture("K8s Serviceaccount Created")
DISALLOWED_USER = fixture("Disallowed K8s User")
DROPPED_SYSCALLS = fixture("Falco internal: syscall event drop")

ACCOUNT = "123456789012"
NODE = "ip-192-168-34-135.us-west-2.compute.internal"
INSTANCE = "i-0123456789abcdef0"
CTX = FindingContext(account_id=ACCOUNT, region="us-west-2", cluster_name="prod")
NO_CLUSTER = FindingContext(account_id=ACCOUNT, region="us-west-2")
EVENT_ID = "37920187118600100000000000000000000000000000000000000001"


def record(
    alert: dict[str, Any],
    *,
    event_id: str = EVENT_ID,
    timestamp_ms: int = 1716644645482,
    cluster: str | None = None,
    instance: str | None = None,
    node: str | None = NODE,
) -> AlertRecord:
    """The alert as Fluent Bit ships it: a CRI record with the kubernetes and aws filters."""
    shipped: dict[str, Any] = {
        "time": "2024-05-25T13:44:05.481237806Z",
        "stream": "stdout",
        "_p": "F",
        "log": json.dumps(alert),
    }
    if node:
        shipped["kubernetes"] = {"pod_name": "falco-xczjd", "namespace_name": "falco", "host": node}
    if cluster:
        shipped["cluster_name"] = cluster
    if instance:
        shipped.update(
            ec2_instance_id=instance,
            ec2_instance_type="m6i.large",
            ami_id="ami-0abcdef1234567890",
            vpc_id="vpc-0a1b2c3d4e5f60718",
            private_ip="192.168.34.135",
        )
    parsed = parse_log_event(LogEvent(event_id, timestamp_ms, json.dumps(shipped)))
    assert isinstance(parsed, AlertRecord), parsed
    return parsed


def finding(alert: dict[str, Any], ctx: FindingContext = CTX, **shipping: Any) -> dict[str, Any]:
    produced = to_finding(record(alert, **shipping), ctx)
    assert_within_asff_limits(produced)
    return produced


def resource(produced: dict[str, Any], kind: str) -> dict[str, Any]:
    matches = [r for r in produced["Resources"] if r["Type"] == kind]
    assert len(matches) == 1, [r["Type"] for r in produced["Resources"]]
    return matches[0]


# --- identity and provenance ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "alert", [a for a in ALERTS if a.get("source") != "internal"], ids=lambda a: a["rule"]
)
def test_every_fixture_alert_becomes_a_finding_within_asff_limits(alert):
    produced = finding(alert)

    assert produced["Title"] == alert["rule"]
    assert produced["AwsAccountId"] == ACCOUNT


def test_finding_names_falco_as_its_product_in_the_account_default_product():
    produced = finding(SHELL)

    assert produced["SchemaVersion"] == "2018-10-08"
    assert produced["ProductArn"] == (
        "arn:aws:securityhub:us-west-2:123456789012:product/123456789012/default"
    )
    assert produced["CompanyName"] == "Falco"
    assert produced["ProductName"] == "Falco runtime security"
    assert produced["Region"] == "us-west-2"


def test_partition_comes_from_the_context():
    china = FindingContext(
        account_id=ACCOUNT, region="cn-north-1", partition="aws-cn", cluster_name="prod"
    )

    produced = finding(SHELL, china, instance=INSTANCE)

    assert produced["ProductArn"].startswith("arn:aws-cn:securityhub:cn-north-1:")
    assert resource(produced, "AwsEksCluster")["Id"].startswith("arn:aws-cn:eks:cn-north-1:")
    assert resource(produced, "AwsEc2Instance")["Id"].startswith("arn:aws-cn:ec2:cn-north-1:")
    assert {r["Partition"] for r in produced["Resources"]} == {"aws-cn"}


def test_generator_id_is_stable_per_rule():
    shell = finding(SHELL)
    other_shell = finding({**SHELL, "time": "2024-05-26T08:00:00.000000001Z"})
    old_shell = finding(OLD_SHELL)

    assert shell["GeneratorId"] == "falco/rule/terminal-shell-in-container"
    assert other_shell["GeneratorId"] == old_shell["GeneratorId"] == shell["GeneratorId"]
    assert finding(WRITE_BELOW_ETC)["GeneratorId"] == "falco/rule/write-below-etc"


def test_generator_id_of_a_very_long_rule_name_fits_and_stays_distinct():
    first = finding({**SHELL, "rule": "Shell " * 200 + "one"})
    second = finding({**SHELL, "rule": "Shell " * 200 + "two"})

    assert len(first["GeneratorId"]) <= 512
    assert first["GeneratorId"] != second["GeneratorId"]


def test_the_same_alert_delivered_again_keeps_its_id():
    first = finding(SHELL, event_id="event-1")
    again = finding(SHELL, event_id="event-1")
    # The replay tool or another record shape carries the same alert under another log event id.
    raw = parse_log_event(LogEvent("replay:1", 0, json.dumps(SHELL)))
    assert isinstance(raw, AlertRecord)

    assert again["Id"] == first["Id"]
    assert to_finding(raw, CTX)["Id"] == first["Id"]
    assert again["UpdatedAt"] == first["UpdatedAt"]
    assert first["Id"].startswith("falco/alert/")
    assert len(first["Id"]) <= 512


def test_distinct_alerts_get_distinct_ids():
    later = {**SHELL, "time": "2024-05-25T13:44:05.478445996Z"}  # one nanosecond later
    other_pod = json.loads(json.dumps(SHELL))
    other_pod["output"] = SHELL["output"].replace("k8s_pod_name=kubecon", "k8s_pod_name=kubecon-2")
    other_host = {**SHELL, "hostname": "ip-192-168-99-1.us-west-2.compute.internal"}

    ids = {finding(alert)["Id"] for alert in (SHELL, later, other_pod, other_host)}

    assert len(ids) == 4


def test_without_any_event_time_the_log_event_id_tells_alerts_apart():
    timeless = {key: value for key, value in OLD_SHELL.items() if key != "time"}
    timeless["output_fields"] = {
        key: value for key, value in timeless["output_fields"].items() if key != "evt.time"
    }

    first = finding(timeless, event_id="event-1", timestamp_ms=1716644645000)
    second = finding(timeless, event_id="event-2", timestamp_ms=1716644645000)
    first_again = finding(timeless, event_id="event-1", timestamp_ms=1716644645000)

    assert first["Id"] != second["Id"]
    assert first_again["Id"] == first["Id"]


# --- what happened -------------------------------------------------------------------------------


def test_title_is_the_rule_and_description_is_falcos_output_without_its_time_prefix():
    produced = finding(SHELL)

    assert produced["Title"] == "Terminal shell in container"
    assert produced["Description"] == SHELL["output"].split(": ", 1)[1]
    assert produced["Description"].startswith("Notice A shell was spawned in a container")


def test_iso_8601_output_prefix_is_stripped_too():
    alert = {**SHELL, "output": "2024-05-25T13:44:05.478445995+0000: Notice A shell was spawned"}

    assert finding(alert)["Description"] == "Notice A shell was spawned"


def test_description_without_falco_output_says_what_is_known_not_a_placeholder():
    alert = {key: value for key, value in WRITE_BELOW_ETC.items() if key != "output"}

    description = finding(alert)["Description"]

    assert description.startswith("Falco rule 'Write below etc' (Error) matched on ")
    assert "container.id=abf59e2e5b42" in description
    assert "fd.name=/etc/21" in description
    assert "proc.cmdline=touch /etc/21" in description
    assert "test" not in description.lower()


@pytest.mark.parametrize(
    ("priority", "label"),
    [
        ("Emergency", "CRITICAL"),
        ("Alert", "CRITICAL"),
        ("Critical", "CRITICAL"),
        ("Error", "HIGH"),
        ("Warning", "MEDIUM"),
        ("Notice", "LOW"),
        ("Informational", "INFORMATIONAL"),
        ("Debug", "INFORMATIONAL"),
    ],
)
def test_severity_follows_falco_priority(priority, label):
    produced = finding({**SHADOW_IN_CONTAINER, "priority": priority.upper()})

    assert produced["Severity"] == {"Label": label, "Original": priority}
    assert produced["FindingProviderFields"]["Severity"] == produced["Severity"]


# --- when ----------------------------------------------------------------------------------------


def test_all_four_timestamps_are_the_alerts_own_time_with_nanoseconds():
    produced = finding(SHELL, timestamp_ms=1_900_000_000_000)

    for key in ("CreatedAt", "UpdatedAt", "FirstObservedAt", "LastObservedAt"):
        assert produced[key] == "2024-05-25T13:44:05.478445995Z"


@pytest.mark.parametrize(
    ("time", "expected"),
    [
        ("2024-05-25T15:44:05.478445995+02:00", "2024-05-25T13:44:05.478445995Z"),
        ("2024-05-25T08:44:05.1-05:00", "2024-05-25T13:44:05.1Z"),
        ("2024-05-25t13:44:05.478445995z", "2024-05-25T13:44:05.478445995Z"),
        ("2024-05-25T13:44:05Z", "2024-05-25T13:44:05Z"),
        ("2024-05-25T13:44:05.4784459951234Z", "2024-05-25T13:44:05.478445995Z"),
        ("2024-05-26T00:30:00.5+11:00", "2024-05-25T13:30:00.5Z"),
    ],
)
def test_alert_time_is_normalised_to_utc(time, expected):
    assert finding({**SHELL, "time": time})["CreatedAt"] == expected


@pytest.mark.parametrize("time", [None, "yesterday", "2024-13-45T99:00:00Z", 1716644645, ""])
def test_unusable_time_falls_back_to_falcos_evt_time(time):
    alert = {**SHELL, "time": time}

    assert finding(alert)["CreatedAt"] == "2024-05-25T13:44:05.478445995Z"


def test_without_alert_time_or_evt_time_the_log_event_timestamp_is_used():
    alert = {key: value for key, value in SHELL.items() if key != "time"}
    alert["output_fields"] = {k: v for k, v in SHELL["output_fields"].items() if k != "evt.time"}

    produced = finding(alert, timestamp_ms=1716644645482)

    assert produced["CreatedAt"] == produced["UpdatedAt"] == "2024-05-25T13:44:05.482Z"


# --- types ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alert", "types"),
    [
        (SHELL, ["TTPs/Execution", "TTPs/Execution/T1059"]),
        (SHADOW_IN_CONTAINER, ["TTPs/Credential Access", "TTPs/Credential Access/T1555"]),
        (WRITE_BELOW_ETC, ["TTPs/Persistence", "TTPs/Persistence/T1098"]),
        (API_SERVER, ["TTPs/Discovery", "TTPs/Discovery/T1565"]),
        (MINER, ["Effects/Resource Consumption", "Effects/Resource Consumption/T1496"]),
        (REMOTE_COPY, ["Effects/Data Exfiltration", "Effects/Data Exfiltration/T1020"]),
        (RECONNAISSANCE, ["TTPs/Discovery"]),  # mitre_reconnaissance + TA0043, no technique
        (DROP_AND_EXECUTE, ["TTPs/Persistence"]),  # mitre_persistence + TA0003
    ],
    ids=lambda value: value["rule"] if isinstance(value, dict) else None,
)
def test_mitre_tags_become_asff_types_with_techniques_as_classifiers(alert, types):
    produced = finding(alert)

    assert produced["Types"] == types
    assert produced["FindingProviderFields"]["Types"] == types


@pytest.mark.parametrize(
    ("tactic", "category"),
    [
        ("initial_access", "TTPs/Initial Access"),
        ("execution", "TTPs/Execution"),
        ("persistence", "TTPs/Persistence"),
        ("privilege_escalation", "TTPs/Privilege Escalation"),
        ("defense_evasion", "TTPs/Defense Evasion"),
        ("credential_access", "TTPs/Credential Access"),
        ("discovery", "TTPs/Discovery"),
        ("reconnaissance", "TTPs/Discovery"),
        ("lateral_movement", "TTPs/Lateral Movement"),
        ("collection", "TTPs/Collection"),
        ("command_and_control", "TTPs/Command and Control"),
        ("exfiltration", "Effects/Data Exfiltration"),
        ("impact", "Effects/Data Destruction"),
    ],
)
def test_every_falcosecurity_tactic_maps_to_an_asff_category(tactic, category):
    alert = {**SHELL, "tags": ["container", f"mitre_{tactic}", "T1611"]}

    assert finding(alert)["Types"] == [category, f"{category}/T1611"]


@pytest.mark.parametrize(
    ("technique", "category"),
    [
        ("T1496", "Effects/Resource Consumption"),
        ("T1485", "Effects/Data Destruction"),
        ("T1499.004", "Effects/Denial of Service"),
    ],
)
def test_impact_is_refined_by_its_technique(technique, category):
    alert = {**MINER, "tags": ["mitre_impact", technique]}

    assert finding(alert)["Types"] == [category, f"{category}/{technique}"]


def test_types_are_deduplicated_in_a_stable_order_and_capped_at_50():
    tactics = ["mitre_execution", "mitre_persistence", "MITRE_EXECUTION", "TA0002"]
    techniques = [f"T{1000 + n}" for n in range(60)] + ["t1000"]

    types = finding({**SHELL, "tags": tactics + techniques})["Types"]

    assert types[:3] == ["TTPs/Execution", "TTPs/Execution/T1000", "TTPs/Execution/T1001"]
    assert len(types) == len(set(types)) == 50
    assert types == finding({**SHELL, "tags": tactics + techniques})["Types"]


@pytest.mark.parametrize(
    ("alert", "behavior"),
    [
        ({**SHELL, "tags": ["container", "shell"]}, "Unusual Behaviors/Container"),
        (OLD_SHELL, "Unusual Behaviors/Container"),
        ({**SHADOW_ON_HOST, "tags": ["host"]}, "Unusual Behaviors/Process"),
        (EXEC_POD, "Unusual Behaviors/User"),
        (SERVICEACCOUNT, "Unusual Behaviors/User"),
        (
            {**SHELL, "source": "gcp_auditlog", "tags": ["GCP"], "output_fields": {}},
            "Unusual Behaviors/User",
        ),
        (
            {**SHELL, "source": "dummy", "tags": [], "output_fields": {}},
            "Unusual Behaviors/Application",
        ),
    ],
)
def test_alerts_without_mitre_tags_get_an_unusual_behavior_type(alert, behavior):
    assert finding(alert)["Types"] == [behavior]


# --- where ---------------------------------------------------------------------------------------


def test_container_alert_names_the_container_the_node_and_the_cluster():
    produced = finding(SHELL, instance=INSTANCE)

    assert [r["Type"] for r in produced["Resources"]] == [
        "Container",
        "AwsEc2Instance",
        "AwsEksCluster",
    ]
    container = produced["Resources"][0]
    assert container["Id"] == "k8s/prod/default/pods/kubecon/kubecon"
    # Falco's SHELL alert names no image digest: no ImageId (the container id is not one).
    assert container["Details"]["Container"] == {
        "Name": "kubecon",
        "ImageName": "docker.io/library/alpine:3.19",
    }
    node = resource(produced, "AwsEc2Instance")
    assert node["Id"] == f"arn:aws:ec2:us-west-2:{ACCOUNT}:instance/{INSTANCE}"
    assert node["Details"]["AwsEc2Instance"] == {
        "Type": "m6i.large",
        "ImageId": "ami-0abcdef1234567890",
        "VpcId": "vpc-0a1b2c3d4e5f60718",
        "IpV4Addresses": ["192.168.34.135"],
    }
    cluster = resource(produced, "AwsEksCluster")
    assert cluster["Id"] == f"arn:aws:eks:us-west-2:{ACCOUNT}:cluster/prod"
    assert cluster["Details"]["AwsEksCluster"] == {"Name": "prod", "Arn": cluster["Id"]}
    for entry in produced["Resources"]:
        assert entry["Partition"] == "aws"
        assert entry["Region"] == "us-west-2"


def test_the_image_digest_is_the_containers_image_id():
    digest = "sha256:" + "0123456789abcdef" * 4
    alert = {**SHELL, "output_fields": {**SHELL["output_fields"], "container.image.digest": digest}}

    details = resource(finding(alert), "Container")["Details"]["Container"]

    assert details["ImageId"] == digest
    full_id = SHELL["output_fields"]["container.full_id"]
    assert finding(alert)["ProductFields"]["falco/output_fields/container.full_id"] == full_id


def test_container_launch_time_is_given_only_when_falco_knows_it():
    with_start = finding(DROP_AND_EXECUTE)
    without = finding(SHELL)

    launched = resource(with_start, "Container")["Details"]["Container"]["LaunchedAt"]
    assert launched == "2024-05-25T12:26:40.123456789Z"
    assert "LaunchedAt" not in resource(without, "Container")["Details"]["Container"]


def test_image_without_tag_and_container_without_full_id():
    produced = finding(OLD_SHELL)

    details = resource(produced, "Container")["Details"]["Container"]
    assert details == {"Name": "788861c3cf83", "ImageName": "alpine"}


def test_cluster_name_from_the_record_wins_over_the_context():
    produced = finding(SHELL, cluster="staging")

    assert resource(produced, "AwsEksCluster")["Id"].endswith(":cluster/staging")
    assert resource(produced, "Container")["Id"].startswith("k8s/staging/")


def test_without_a_cluster_name_there_is_no_cluster_resource():
    produced = finding(SHELL, NO_CLUSTER)

    assert "AwsEksCluster" not in [r["Type"] for r in produced["Resources"]]
    assert resource(produced, "Container")["Id"] == "k8s/-/default/pods/kubecon/kubecon"


def test_without_an_instance_id_the_node_is_named_by_its_kubernetes_name():
    produced = finding(SHELL)

    node = resource(produced, "Other")
    assert node["Id"] == f"k8s/prod/-/nodes/{NODE}"
    assert node["Details"]["Other"] == {"Node": NODE}


def test_host_alert_names_the_node_first_and_no_container():
    produced = finding(SHADOW_ON_HOST)

    assert [r["Type"] for r in produced["Resources"]] == ["Other", "AwsEksCluster"]
    assert produced["Resources"][0]["Id"] == f"k8s/prod/-/nodes/{NODE}"


def test_host_alert_with_an_instance_id_names_the_ec2_instance():
    produced = finding(SHADOW_ON_HOST, instance=INSTANCE)

    assert [r["Type"] for r in produced["Resources"]] == ["AwsEc2Instance", "AwsEksCluster"]


def test_host_alert_shipped_raw_names_the_node_by_falcos_hostname():
    raw = parse_log_event(LogEvent("e1", 0, json.dumps(SHADOW_ON_HOST)))
    assert isinstance(raw, AlertRecord)

    produced = to_finding(raw, NO_CLUSTER)

    assert produced["Resources"] == [
        {
            "Type": "Other",
            "Id": f"k8s/-/-/nodes/{SHADOW_ON_HOST['hostname']}",
            "Partition": "aws",
            "Region": "us-west-2",
            "Details": {"Other": {"Node": SHADOW_ON_HOST["hostname"]}},
        }
    ]


def test_k8s_audit_alert_names_the_kubernetes_object_not_falcos_node():
    produced = finding(EXEC_POD, instance=INSTANCE)

    assert [r["Type"] for r in produced["Resources"]] == ["Other", "AwsEksCluster"]
    target = produced["Resources"][0]
    assert target["Id"] == "k8s/prod/default/pods/kubecon"
    assert target["Details"]["Other"] == {
        "Cluster": "prod",
        "Namespace": "default",
        "Resource": "pods",
        "Name": "kubecon",
        "Subresource": "exec",
        "User": "kubernetes-admin",
    }


def test_cluster_scoped_kubernetes_object_has_no_namespace():
    produced = finding(DISALLOWED_USER)

    name = DISALLOWED_USER["output_fields"]["ka.target.name"]
    assert produced["Resources"][0]["Id"] == f"k8s/prod/-/volumeattachments/{name}"


def test_an_alert_with_nothing_to_point_at_still_names_where_it_came_from():
    bare = {"rule": "Custom rule", "priority": "Warning", "source": "dummy", "hostname": "edge-1"}
    parsed = parse_log_event(LogEvent("e1", 0, json.dumps(bare)))
    assert isinstance(parsed, AlertRecord)

    produced = to_finding(parsed, NO_CLUSTER)

    assert_within_asff_limits(produced)
    assert produced["Resources"] == [
        {"Type": "Other", "Id": "falco/dummy/edge-1", "Partition": "aws", "Region": "us-west-2"}
    ]


# --- process -------------------------------------------------------------------------------------


def test_process_comes_from_the_proc_fields():
    assert finding(SHELL)["Process"] == {
        "Name": "sh",
        "Path": "/bin/busybox",
        "Pid": 23876,
        "ParentPid": 23860,
    }


def test_audit_alerts_have_no_process():
    assert "Process" not in finding(EXEC_POD)


def test_process_fields_of_the_wrong_type_are_left_out():
    alert = json.loads(json.dumps(SHELL))
    alert["output_fields"].update({"proc.pid": True, "proc.ppid": 2**40, "proc.exepath": "<NA>"})

    assert finding(alert)["Process"] == {"Name": "sh"}


def test_long_process_name_and_path_are_truncated_visibly():
    alert = json.loads(json.dumps(SHELL))
    alert["output_fields"]["proc.name"] = "n" * 100
    alert["output_fields"]["proc.exepath"] = "/opt/" + "p" * 1000

    process = finding(alert)["Process"]

    assert len(process["Name"]) == 64
    assert process["Name"].endswith("…[truncated]")
    assert len(process["Path"]) == 512
    assert process["Path"].endswith("…[truncated]")


# --- product fields ------------------------------------------------------------------------------


def test_product_fields_carry_the_alert_for_the_analyst():
    fields = finding(WRITE_BELOW_ETC)["ProductFields"]

    assert fields["falco/rule"] == "Write below etc"
    assert fields["falco/priority"] == "Error"
    assert fields["falco/source"] == "syscall"
    assert (
        fields["falco/tags"] == "T1098,container,filesystem,host,maturity_sandbox,mitre_persistence"
    )
    assert fields["falco/hostname"] == NODE
    assert fields["falco/log_event_id"] == EVENT_ID
    assert fields["falco/output_fields/proc.cmdline"] == "touch /etc/21"
    assert fields["falco/output_fields/proc.pid"] == "13940"
    assert fields["falco/output_fields/fd.name"] == "/etc/21"
    # Falco sends null for fields it could not resolve: nothing to show.
    assert "falco/output_fields/proc.aname[2]" not in fields
    assert all(isinstance(value, str) and value for value in fields.values())


def test_blank_output_field_values_are_shown_quoted():
    fields = finding(SERVICEACCOUNT)["ProductFields"]

    assert fields["falco/output_fields/ka.auth.reason"] == '""'
    assert fields["falco/output_fields/ka.response.code"] == "201"


def test_old_format_alert_has_no_source_tags_or_hostname_fields():
    produced = finding(OLD_SHELL, node=None)

    fields = produced["ProductFields"]
    assert "falco/source" not in fields
    assert "falco/tags" not in fields
    assert "falco/hostname" not in fields
    assert fields["falco/rule"] == "Terminal shell in container"
    assert produced["CreatedAt"] == "2021-06-13T19:35:58.532086161Z"
    assert produced["Types"] == ["Unusual Behaviors/Container"]


def test_when_output_fields_do_not_fit_the_important_ones_stay_and_the_rest_are_counted():
    alert = json.loads(json.dumps(SHELL))
    alert["output_fields"] = {
        **{f"evt.arg.extra{n}": f"value {n}" for n in range(80)},
        **SHELL["output_fields"],
    }

    fields = finding(alert)["ProductFields"]

    assert len(fields) <= 45
    for key in (
        "container.id",
        "container.name",
        "k8s.pod.name",
        "k8s.ns.name",
        "proc.cmdline",
        "proc.name",
        "user.name",
    ):
        assert fields[f"falco/output_fields/{key}"] == str(SHELL["output_fields"][key])
    shown = sum(key.startswith("falco/output_fields/") for key in fields)
    assert int(fields["falco/output_fields_dropped"]) == len(alert["output_fields"]) - shown


def test_control_characters_are_escaped_so_a_command_line_cannot_forge_lines():
    alert = json.loads(json.dumps(SHELL))
    alert["output_fields"]["proc.cmdline"] = "sh -c 'echo ok\nFINDING RESOLVED\x1b[2J'"
    alert["output"] = "13:44:05.478445995: Notice shell\nResolved: yes"

    produced = finding(alert)

    assert produced["ProductFields"]["falco/output_fields/proc.cmdline"] == (
        "sh -c 'echo ok\\nFINDING RESOLVED\\x1b[2J'"
    )
    assert produced["Description"] == "Notice shell\\nResolved: yes"


# --- limits --------------------------------------------------------------------------------------


def test_oversized_alert_is_truncated_visibly_within_every_limit():
    alert = json.loads(json.dumps(SHELL))
    alert["rule"] = "R" * 1000
    alert["output"] = "13:44:05.478445995: Notice " + "o" * 5000
    alert["hostname"] = "h" * 3000
    alert["output_fields"].update({"proc.cmdline": "c" * 10_000, "k" * 300: "v"})

    produced = finding(alert)

    assert produced["Title"].endswith("…[truncated]")
    assert len(produced["Title"]) == 256
    assert produced["Description"].endswith("…[truncated]")
    assert len(produced["Description"]) == 1024
    fields = produced["ProductFields"]
    assert fields["falco/output"].endswith("…[truncated]")
    assert len(fields["falco/output"]) == 2048
    assert fields["falco/output_fields/proc.cmdline"].endswith("…[truncated]")
    assert len(fields["falco/output_fields/proc.cmdline"]) == 2048
    assert all(len(key) <= 128 for key in fields)
    assert fields["falco/hostname"].endswith("…[truncated]")


def test_long_field_names_stay_distinct_when_cut():
    alert = json.loads(json.dumps(SHELL))
    alert["output_fields"].update({"x" * 200 + "1": "first", "x" * 200 + "2": "second"})

    fields = finding(alert)["ProductFields"]

    assert {"first", "second"} <= set(fields.values())


def test_quotes_backslashes_and_non_ascii_text_pass_through_unchanged():
    # JSON escapes quotes, backslashes and non-ASCII characters; they are printable all the same,
    # so the finding shows them as Falco sent them.
    alert = json.loads(json.dumps(SHELL))
    alert["output_fields"]["proc.cmdline"] = 'sh -c "echo \\\\ ok" # café 日本'
    alert["output"] = '13:44:05.478445995: Notice shell cmdline=sh -c "echo \\\\ ok" café'

    produced = finding(alert)

    fields = produced["ProductFields"]
    assert fields["falco/output_fields/proc.cmdline"] == 'sh -c "echo \\\\ ok" # café 日本'
    assert produced["Description"] == 'Notice shell cmdline=sh -c "echo \\\\ ok" café'


def test_two_field_names_that_escape_to_one_key_give_that_key_once():
    # A newline is shown escaped, so "a\nb" and the literal "a\\nb" name one ProductFields key. A
    # JSON object with a key twice is not one to send: the key appears once, with the last value.
    alert = json.loads(json.dumps(SHELL))
    alert["output_fields"] = {"a\nb": "first", "proc.name": "bash", "a\\nb": "second"}

    text = to_finding_text(record(alert), CTX)[1]
    pairs = json.loads(text, object_pairs_hook=lambda items: items)
    product_fields = dict(pairs)["ProductFields"]

    keys = [key for key, _ in product_fields]
    assert len(keys) == len(set(keys))
    assert dict(product_fields)["falco/output_fields/a\\nb"] == "second"
    assert dict(product_fields)["falco/output_fields/proc.name"] == "bash"


def test_a_finding_of_many_wide_characters_still_fits_240_kb():
    # 45 pairs of 2,048 emoji would be ~1 MB of JSON; the finding is shrunk to fit.
    alert = json.loads(json.dumps(SHELL))
    alert["output"] = "\U0001f600" * 3000
    alert["output_fields"] = {f"proc.arg{n}": "\U0001f600" * 3000 for n in range(60)}

    produced = finding(alert)

    assert len(json.dumps(produced)) <= 240_000
    assert utf16_length(produced["Description"]) <= 1024
    assert produced["ProductFields"]["falco/output_fields_dropped"]


@pytest.mark.parametrize("kind", ["container", "host", "k8s_audit"])
def test_every_capped_field_at_its_limit_leaves_room_for_product_fields(kind):
    # findings.py skips serialising a finding to measure it when ProductFields and Description
    # are small, trusting that everything else stays under 64 KB of JSON. This is the worst case.
    wide = "\U0001f600" * 5000
    fields = {
        key: wide
        for key in (
            "container.id",
            "container.name",
            "container.full_id",
            "container.image.repository",
            "container.image.tag",
            "k8s.ns.name",
            "k8s.pod.name",
            "proc.name",
            "proc.exepath",
            "ka.target.resource",
            "ka.target.name",
            "ka.target.namespace",
            "ka.target.subresource",
        )
    }
    if kind == "host":
        fields["container.id"] = "host"
    tactics = [
        f"mitre_{tactic}"
        for tactic in (
            "execution",
            "persistence",
            "privilege_escalation",
            "defense_evasion",
            "credential_access",
            "discovery",
            "lateral_movement",
            "collection",
            "command_and_control",
            "exfiltration",
            "impact",
            "initial_access",
        )
    ]
    alert = {
        "rule": wide,
        "priority": "Warning",
        "source": "k8s_audit" if kind == "k8s_audit" else "syscall",
        "hostname": wide,
        "time": "2024-05-25T13:44:05.123456789Z",
        "output": "x",
        "tags": tactics + [f"T{1000 + n}.{n:03d}" for n in range(60)],
        "output_fields": fields,
    }
    shipped = {
        "log": json.dumps(alert),
        "cluster_name": wide,
        "kubernetes": {"host": wide},
        "ec2_instance_id": wide,
        "ec2_instance_type": wide,
        "ami_id": wide,
        "vpc_id": wide,
        "private_ip": wide,
    }
    parsed = parse_log_event(LogEvent(wide, 0, json.dumps(shipped)))
    assert isinstance(parsed, AlertRecord)

    produced = to_finding(parsed, FindingContext(ACCOUNT, "us-west-2", cluster_name=wide))

    assert_within_asff_limits(produced)
    rest = {k: v for k, v in produced.items() if k not in ("ProductFields", "Description")}
    assert len(json.dumps(rest, separators=(",", ":"))) <= 64_000


def test_limits_hold_for_non_bmp_text_counted_in_utf16_units():
    alert = {**SHELL, "rule": "\U0001f6a8" * 200}

    title = finding(alert)["Title"]

    assert utf16_length(title) == 256  # 122 emoji of 2 units each, then the 12-unit marker
    assert title == "\U0001f6a8" * 122 + "…[truncated]"


# --- filtering -----------------------------------------------------------------------------------


def test_falco_internal_events_are_skipped():
    by_source = filter_alert(record(DROPPED_SYSCALLS), CTX)
    # Falco < 0.33 sent internal events without a source: the rule name gives them away.
    untagged = {k: v for k, v in DROPPED_SYSCALLS.items() if k != "source"}
    by_rule = filter_alert(record(untagged), CTX)

    for skipped in (by_source, by_rule):
        assert isinstance(skipped, Skip)
        assert skipped.reason == "internal_event"
        assert skipped.log_event_id == EVENT_ID


@pytest.mark.parametrize(
    ("priority", "skipped"),
    [("Emergency", False), ("Error", False), ("Warning", False), ("notice", True), ("Debug", True)],
)
def test_alerts_below_the_minimum_priority_are_skipped(priority, skipped):
    ctx = FindingContext(account_id=ACCOUNT, region="us-west-2", min_priority="warning")

    outcome = filter_alert(record({**SHELL, "priority": priority}), ctx)

    if skipped:
        assert isinstance(outcome, Skip)
        assert outcome.reason == "below_min_priority"
        assert "Warning" in outcome.detail
    else:
        assert outcome is None


def test_by_default_nothing_is_below_the_minimum():
    assert filter_alert(record({**SHELL, "priority": "Debug"}), NO_CLUSTER) is None


def test_an_unknown_minimum_priority_fails_naming_the_allowed_values():
    with pytest.raises(ValueError, match="Emergency, Alert, Critical, Error, Warning"):
        FindingContext(account_id=ACCOUNT, region="us-west-2", min_priority="severe")


@pytest.mark.parametrize("value", ["warning", "WARNING", " Warning "])
def test_parse_priority_is_case_insensitive(value):
    assert parse_priority(value) == "Warning"


# --- coalescing ----------------------------------------------------------------------------------


def at(alert: dict[str, Any], second: int, nanos: int = 0) -> dict[str, Any]:
    """The same alert, `second` seconds later: time, evt.time and the output prefix move."""
    moved = json.loads(json.dumps(alert))
    base = alert["output_fields"]["evt.time"]
    event_ns = base + second * 1_000_000_000 + nanos
    fraction = event_ns % 1_000_000_000
    moved["time"] = f"2024-05-25T13:44:{5 + second:02d}.{fraction:09d}Z"
    moved["output_fields"]["evt.time"] = event_ns
    moved["output"] = f"13:44:{5 + second:02d}.{fraction:09d}: " + alert["output"].split(": ", 1)[1]
    return moved


def test_identical_alerts_in_one_invocation_become_one_finding_with_counts():
    records = [record(at(SHELL, n), event_id=f"e{n}") for n in (0, 3, 7)]

    [produced] = coalesce(records, CTX)

    assert_within_asff_limits(produced)
    fields = produced["ProductFields"]
    assert fields["falco/occurrences"] == "3"
    assert fields["falco/first_seen"] == produced["CreatedAt"] == produced["FirstObservedAt"]
    assert fields["falco/last_seen"] == produced["UpdatedAt"] == produced["LastObservedAt"]
    assert produced["CreatedAt"] == records[0].alert["time"]
    assert produced["UpdatedAt"] == records[2].alert["time"]


def test_coalesced_finding_has_the_id_of_its_first_alert_alone():
    records = [record(at(SHELL, n), event_id=f"e{n}") for n in (0, 1, 2)]

    [produced] = coalesce(records, CTX)

    assert produced["Id"] == to_finding(records[0], CTX)["Id"]


def test_coalescing_is_deterministic_for_a_redelivered_batch():
    records = [record(at(SHELL, n), event_id=f"e{n}") for n in (0, 1, 2)]

    assert coalesce(records, CTX) == coalesce(list(records), CTX)


def test_first_and_last_seen_come_from_the_times_not_the_order_of_arrival():
    records = [record(at(SHELL, n), event_id=f"e{n}") for n in (5, 0, 9, 2)]

    [produced] = coalesce(records, CTX)

    assert produced["CreatedAt"] == records[1].alert["time"]
    assert produced["UpdatedAt"] == records[2].alert["time"]
    assert produced["Id"] == to_finding(records[1], CTX)["Id"]


def test_alerts_that_differ_in_more_than_time_are_not_coalesced_and_keep_their_order():
    other_pid = at(SHELL, 1)
    other_pid["output_fields"]["proc.pid"] = 99999
    records = [
        record(at(SHELL, 0)),
        record(at(WRITE_BELOW_ETC, 0)),
        record(other_pid),
        record(at(SHELL, 2)),
        record(at(SHELL, 3), node="ip-192-168-7-7.us-west-2.compute.internal"),
    ]

    produced = coalesce(records, CTX)

    assert [f["Title"] for f in produced] == [
        "Terminal shell in container",
        "Write below etc",
        "Terminal shell in container",
        "Terminal shell in container",
    ]
    assert produced[0]["ProductFields"]["falco/occurrences"] == "2"
    assert "falco/occurrences" not in produced[1]["ProductFields"]
    assert "falco/occurrences" not in produced[2]["ProductFields"]


def test_a_single_alert_coalesces_to_exactly_its_own_finding():
    single = record(SHELL)

    assert coalesce([single], CTX) == [to_finding(single, CTX)]


def test_coalescing_an_empty_batch_gives_nothing():
    assert coalesce([], CTX) == []


def test_values_of_different_json_types_are_different_alerts():
    one = json.loads(json.dumps(SHELL))
    one["output_fields"]["user.uid"] = 1
    true = json.loads(json.dumps(SHELL))
    true["output_fields"]["user.uid"] = True

    assert len(coalesce([record(at(one, 0)), record(at(true, 1))], CTX)) == 2


def test_alerts_with_nested_values_coalesce_too():
    nested = json.loads(json.dumps(SHELL))
    nested["output_fields"]["evt.args"] = {"flags": ["O_RDONLY", ["deep"]]}

    produced = coalesce([record(at(nested, 0)), record(at(nested, 4))], CTX)

    assert len(produced) == 1
    assert produced[0]["ProductFields"]["falco/occurrences"] == "2"


def test_the_same_alert_in_another_record_shape_coalesces_with_its_twin():
    shipped = record(at(SHELL, 0), node=None)
    raw = parse_log_event(LogEvent("e2", 0, json.dumps(at(SHELL, 1))))
    assert isinstance(raw, AlertRecord)

    assert len(coalesce([shipped, raw], CTX)) == 1


def test_the_same_alert_from_another_cluster_is_not_coalesced():
    here = record(at(SHELL, 0))
    there = replace(record(at(SHELL, 1)), cluster_name="staging")

    assert len(coalesce([here, there], CTX)) == 2


def test_findings_of_one_batch_never_share_an_id():
    # Same output and time, different output fields: two alerts, one Id-worth of identity.
    twin = json.loads(json.dumps(SHELL))
    twin["output_fields"]["proc.pid"] = 4242
    records = [record(SHELL), record(twin), record(SHELL, cluster="staging")]

    produced = coalesce(records, CTX)

    assert len(produced) == 3
    assert len({f["Id"] for f in produced}) == 3
    assert produced[0]["Id"] == to_finding(records[0], CTX)["Id"]
    assert [f["Id"] for f in coalesce(records, CTX)] == [f["Id"] for f in produced]

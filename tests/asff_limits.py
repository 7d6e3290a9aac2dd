"""One checker for every limit a finding must respect before BatchImportFindings takes it.

The limits are written out here from the AWS documentation (AwsSecurityFinding in the Security Hub
API reference, the ASFF types taxonomy, BatchImportFindings), not imported from handlers.findings,
so a wrong constant there is caught here. Lengths are counted in UTF-16 code units, the stricter
way a Java-based API can count them.
"""

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

SCHEMA_VERSION = "2018-10-08"
MAX_ID = 512
MAX_GENERATOR_ID = 512
MAX_TITLE = 256
MAX_DESCRIPTION = 1024
MAX_TYPES = 50
MAX_RESOURCES = 32
MAX_PRODUCT_FIELDS = 50
# Security Hub adds aws/securityhub/FindingId, /ProductName and /CompanyName itself; the project
# promises to leave room for them by keeping its own pairs to 45.
MAX_OWN_PRODUCT_FIELDS = 45
MAX_FIELD_KEY = 128
MAX_PRODUCT_FIELD_VALUE = 2048
MAX_DETAILS_OTHER = 50
MAX_DETAILS_OTHER_VALUE = 1024
MAX_SEVERITY_ORIGINAL = 64
MAX_PROCESS_NAME = 64
MAX_PROCESS_PATH = 512
MAX_FINDING_BYTES = 240_000  # "240 KB", read as the stricter 240,000
MAX_JAVA_INT = 2**31 - 1

SEVERITY_LABELS = {"INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL"}
TYPE_NAMESPACES = {
    "Software and Configuration Checks",
    "TTPs",
    "Effects",
    "Unusual Behaviors",
    "Sensitive Data Identifications",
}
PARTITIONS = {"aws", "aws-cn", "aws-us-gov", "aws-us-iso", "aws-us-iso-b"}
REQUIRED = (
    "SchemaVersion",
    "Id",
    "ProductArn",
    "GeneratorId",
    "AwsAccountId",
    "Types",
    "CreatedAt",
    "UpdatedAt",
    "Severity",
    "Title",
    "Description",
    "Resources",
)
TIMESTAMPS = ("CreatedAt", "UpdatedAt", "FirstObservedAt", "LastObservedAt")
RFC3339_UTC = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z")
PRODUCT_ARN = re.compile(r"arn:[a-z-]+:securityhub:[a-z0-9-]+:(\d{12}):product/(\d{12})/default")
JAVA_WHITESPACE = " \t\n\x0b\f\r"  # what the API's NonEmptyString pattern .*\S.* rejects alone
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def assert_within_asff_limits(finding: dict[str, Any]) -> None:
    """Fail with a message naming the field when ``finding`` breaks any ASFF limit."""
    missing = [key for key in REQUIRED if key not in finding]
    assert not missing, f"required ASFF attributes missing: {missing}"
    assert finding["SchemaVersion"] == SCHEMA_VERSION

    _assert_text(finding["Id"], MAX_ID, "Id")
    _assert_text(finding["GeneratorId"], MAX_GENERATOR_ID, "GeneratorId")
    _assert_text(finding["Title"], MAX_TITLE, "Title")
    _assert_text(finding["Description"], MAX_DESCRIPTION, "Description")
    account = finding["AwsAccountId"]
    assert re.fullmatch(r"\d{12}", account), f"AwsAccountId {account!r}"
    arn = PRODUCT_ARN.fullmatch(finding["ProductArn"])
    assert arn, f"ProductArn {finding['ProductArn']!r}"
    assert arn.group(1) == arn.group(2) == account, "ProductArn must name the finding's account"

    moments = {}
    for key in TIMESTAMPS:
        if key in finding:
            moments[key] = _timestamp_ns(finding[key], key)
    assert moments["CreatedAt"] <= moments["UpdatedAt"], "CreatedAt after UpdatedAt"
    if "FirstObservedAt" in moments and "LastObservedAt" in moments:
        assert moments["FirstObservedAt"] <= moments["LastObservedAt"]

    _assert_severity(finding["Severity"], "Severity")
    _assert_types(finding["Types"], "Types")
    provider = finding.get("FindingProviderFields")
    if provider is not None:
        _assert_severity(provider["Severity"], "FindingProviderFields.Severity")
        _assert_types(provider["Types"], "FindingProviderFields.Types")
        assert provider["Severity"] == finding["Severity"], "the two Severity copies differ"
        assert provider["Types"] == finding["Types"], "the two Types copies differ"

    resources = finding["Resources"]
    assert isinstance(resources, list)
    assert 1 <= len(resources) <= MAX_RESOURCES, f"{len(resources)} Resources"
    for index, resource in enumerate(resources):
        where = f"Resources[{index}]"
        for key in ("Type", "Id", "Region"):
            _assert_text(resource[key], None, f"{where}.{key}")
        assert resource["Partition"] in PARTITIONS, f"{where}.Partition {resource['Partition']!r}"
        other = resource.get("Details", {}).get("Other")
        if other is not None:
            _assert_field_map(other, MAX_DETAILS_OTHER, MAX_DETAILS_OTHER_VALUE, f"{where}.Other")

    if "ProductFields" in finding:
        _assert_field_map(
            finding["ProductFields"],
            MAX_OWN_PRODUCT_FIELDS,
            MAX_PRODUCT_FIELD_VALUE,
            "ProductFields",
        )

    process = finding.get("Process")
    if process is not None:
        assert process, "an empty Process object"
        if "Name" in process:
            _assert_text(process["Name"], MAX_PROCESS_NAME, "Process.Name")
        if "Path" in process:
            _assert_text(process["Path"], MAX_PROCESS_PATH, "Process.Path")
        for key in ("Pid", "ParentPid"):
            if key in process:
                value = process[key]
                assert type(value) is int, f"Process.{key} is {type(value).__name__}"
                assert 0 <= value <= MAX_JAVA_INT, f"Process.{key} {value} out of range"

    for path, text in _strings(finding, "finding"):
        _assert_text(text, None, path)

    encoded = json.dumps(finding, separators=(",", ":"))
    assert len(encoded) <= MAX_FINDING_BYTES, f"finding is {len(encoded)} bytes of JSON"
    assert len(json.dumps(finding, ensure_ascii=False).encode("utf-8")) <= MAX_FINDING_BYTES


def _assert_text(value: Any, limit: int | None, where: str) -> None:
    assert isinstance(value, str), f"{where} is {type(value).__name__}, not a string"
    assert value.strip(JAVA_WHITESPACE), f"{where} is blank"
    value.encode("utf-8")  # raises on a lone surrogate, which no request can carry
    assert not CONTROL_CHARACTERS.search(value), f"{where} holds a control character"
    if limit is not None:
        length = utf16_length(value)
        assert length <= limit, f"{where} is {length} characters (limit {limit})"


def _assert_severity(severity: dict[str, Any], where: str) -> None:
    assert severity["Label"] in SEVERITY_LABELS, f"{where}.Label {severity['Label']!r}"
    _assert_text(severity["Original"], MAX_SEVERITY_ORIGINAL, f"{where}.Original")


def _assert_types(types: list[str], where: str) -> None:
    assert isinstance(types, list)
    assert 1 <= len(types) <= MAX_TYPES, f"{where} has {len(types)} entries"
    assert len(set(types)) == len(types), f"{where} has duplicates"
    for entry in types:
        _assert_text(entry, None, where)
        parts = entry.split("/")
        assert parts[0] in TYPE_NAMESPACES, f"{where}: {entry!r} is not in an ASFF namespace"
        assert len(parts) <= 3, f"{where}: {entry!r} is deeper than namespace/category/classifier"
        assert all(parts), f"{where}: {entry!r} has an empty level"


def _assert_field_map(pairs: dict[str, str], max_pairs: int, max_value: int, where: str) -> None:
    assert isinstance(pairs, dict)
    assert len(pairs) <= max_pairs, f"{where} has {len(pairs)} pairs (limit {max_pairs})"
    for key, value in pairs.items():
        _assert_text(key, MAX_FIELD_KEY, f"{where} key {key[:40]!r}")
        _assert_text(value, max_value, f"{where}[{key[:40]!r}]")


def _timestamp_ns(value: Any, where: str) -> int:
    assert isinstance(value, str), f"{where} is not a string"
    match = RFC3339_UTC.fullmatch(value)
    assert match, f"{where} {value!r} is not RFC 3339 in UTC with up to 9 fractional digits"
    year, month, day, hour, minute, second, fraction = match.groups()
    moment = datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC
    )
    seconds = (moment - EPOCH) // timedelta(seconds=1)
    return seconds * 1_000_000_000 + int((fraction or "0").ljust(9, "0"))


def _strings(value: Any, path: str) -> list[tuple[str, str]]:
    found = []
    if isinstance(value, str):
        found.append((path, value))
    elif isinstance(value, dict):
        for key, item in value.items():
            found.append((f"{path} key", key))
            found.extend(_strings(item, f"{path}.{key}"))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_strings(item, f"{path}[{index}]"))
    return found

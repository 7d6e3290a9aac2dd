"""ASFF as this project writes it: the finding's shape (typed), Security Hub's limits, the text
rules that keep any value within them, and the one JSON encoding of a finding. Pure.

Lengths are counted in UTF-16 code units, the stricter of the two ways a Java-based API can count
them. Text over a limit is cut with ``TRUNCATION_MARKER``; identifiers over a limit are cut with
the marker and a hash of the whole value, so they stay distinct. Control (C0, DEL, C1), format
(Cf: U+202E right-to-left override, zero-width characters...) and line/paragraph separator
characters are escaped visibly (``\\n``, ``\\u202e``), so a hostile command line can neither forge
lines in a console nor display reversed.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any, NotRequired, TypedDict

SCHEMA_VERSION = "2018-10-08"

# ASFF limits: AwsSecurityFinding in the Security Hub API reference, and BatchImportFindings.
MAX_ID_LENGTH = 512
MAX_GENERATOR_ID_LENGTH = 512
MAX_TITLE_LENGTH = 256
MAX_DESCRIPTION_LENGTH = 1024
MAX_TYPES = 50
MAX_RESOURCES = 32
MAX_PRODUCT_FIELDS = 50
MAX_PRODUCT_FIELD_KEY_LENGTH = 128
MAX_PRODUCT_FIELD_VALUE_LENGTH = 2048
MAX_SEVERITY_ORIGINAL_LENGTH = 64
MAX_PROCESS_NAME_LENGTH = 64
MAX_PROCESS_PATH_LENGTH = 512
MAX_DETAILS_OTHER = 50
# "240 KB per finding": read as 240,000 bytes of JSON, the stricter reading.
MAX_FINDING_BYTES = 240_000
MAX_INTEGER = 2**31 - 1  # ASFF Integer fields (Pid, ParentPid) are Java ints

# Our own caps where ASFF documents none, chosen so that everything outside ProductFields and
# Description stays far below MAX_FINDING_BYTES whatever the input.
OWN_PRODUCT_FIELDS = 45  # leaves room for the aws/securityhub/* keys Security Hub adds
MAX_RESOURCE_ID_LENGTH = 512
MAX_DETAIL_LENGTH = 512

TRUNCATION_MARKER = "…[truncated]"

# Characters that would let an alert forge lines in consoles and tickets, or display text other
# than what it holds (U+202E reverses what follows it): shown escaped. Unicode categories Cc
# (C0, DEL, C1), Cf (format), Zl and Zp (U+2028, U+2029); Cs (lone surrogates: JSON can carry
# them, UTF-8 cannot) is escaped the same way.
_CONTROL_ESCAPES = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
# Everything but printable ASCII: only these characters need a look.
_NOT_PLAIN = re.compile(r"[^\x20-\x7e]")


def _escape_character(match: re.Match[str]) -> str:
    character = match.group()
    code = ord(character)
    if code in _CONTROL_ESCAPES:
        return _CONTROL_ESCAPES[code]
    if unicodedata.category(character) not in _ESCAPED_CATEGORIES:
        return character  # printable, or a space/private/unassigned character: shown as is
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


class FindingSeverity(TypedDict):
    Label: str  # SEVERITY_LABELS
    Original: str  # Falco's priority


class ProviderFields(TypedDict):
    Severity: FindingSeverity
    Types: list[str]


class FindingResource(TypedDict):
    Type: str  # Container | Other | AwsEc2Instance | AwsEksCluster
    Id: str
    Partition: str
    Region: str
    Details: NotRequired[dict[str, Any]]


class FindingProcess(TypedDict, total=False):
    Name: str
    Path: str
    Pid: int
    ParentPid: int


class Finding(TypedDict):
    SchemaVersion: str
    Id: str
    ProductArn: str
    ProductName: str
    CompanyName: str
    GeneratorId: str
    AwsAccountId: str
    Region: str
    Types: list[str]
    CreatedAt: str
    UpdatedAt: str
    FirstObservedAt: str
    LastObservedAt: str
    # Both copies, on purpose. FindingProviderFields is the provider's own record of Severity and
    # Types: Security Hub keeps it when analysts change the top-level values with
    # BatchUpdateFindings, and later imports update the top level from it only where analysts
    # have not. The top level is what the console, insights, filters and automation rules read.
    Severity: FindingSeverity
    FindingProviderFields: ProviderFields
    Title: str
    Description: str
    Resources: list[FindingResource]
    Process: NotRequired[FindingProcess]
    Network: NotRequired[dict[str, str]]  # audit alerts: the API request's source address
    ProductFields: dict[str, str]


def finding_json(finding: Finding | dict[str, Any]) -> str:
    """A finding as it goes into a request: compact JSON, ASCII only (so len() is its bytes)."""
    return _ENCODER.encode(finding)


# A finding is a tree built fresh for each alert: it cannot hold a cycle, so the cycle check (a
# dict lookup per object and list) is skipped; a cycle would still fail, with RecursionError.
_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)


def escaped(value: str) -> str:
    """``value`` with control, format and separator characters and lone surrogates escaped
    (``\\n``, ``\\x85``, ``\\u202e``, ``\\udc80``), so every string can be sent as UTF-8 and
    shows what it held."""
    if value.isprintable():  # no Cc, Cf, Zl, Zp or Cs (nor Zs but " ", Co, Cn: kept below)
        return value
    return _NOT_PLAIN.sub(_escape_character, value)


def truncate(value: str, limit: int) -> str:
    """``value`` within ``limit`` UTF-16 code units, cut with TRUNCATION_MARKER if needed."""
    if len(value) <= limit and (value.isascii() or _utf16_length(value) <= limit):
        return value
    return _prefix(value, limit - len(TRUNCATION_MARKER)) + TRUNCATION_MARKER


def identifier(value: str, limit: int) -> str:
    """An identifier within ``limit``: a cut one ends with the marker and a hash of the whole, so
    two long identifiers that share a beginning stay distinct."""
    value = escaped(value)
    if len(value) <= limit and (value.isascii() or _utf16_length(value) <= limit):
        return value
    suffix = TRUNCATION_MARKER + short_hash(value)
    return _prefix(value, limit - len(suffix)) + suffix


def _prefix(value: str, room: int) -> str:
    """The longest start of ``value`` within ``room`` UTF-16 code units."""
    cut = value[:room]
    if cut.isascii() or _utf16_length(cut) <= room:
        return cut
    # Cut in UTF-16 itself; "ignore" drops a surrogate pair split by the cut.
    return cut.encode("utf-16-le", "surrogatepass")[: 2 * room].decode("utf-16-le", "ignore")


def _utf16_length(value: str) -> int:
    return len(value.encode("utf-16-le", "surrogatepass")) // 2


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def short_hash(value: str) -> str:
    return sha256(value)[:12]

"""Kubernetes audit alert -> the ASFF pieces that name what was touched, who acted and from where.

Pure functions over one alert's ``output_fields`` (source ``k8s_audit``, as Falco's k8saudit
rules emit them through the k8saudit-eks plugin); the findings builder puts the pieces in place.

* The Kubernetes object: an ``Other`` resource ``k8s/<cluster>/<namespace>/<resource>/<name>``
  (``-`` for an unknown part; cluster-scoped objects have no namespace) whose ``Details.Other``
  holds the object, the verb and the request's actor and origin as plain text.
  ``ka.target.name`` is empty when a request creates an object (the name is in the body, or
  generated); ``ka.resp.name`` names it then.
* The actor: ``ka.user.name`` (on EKS an IAM identity appears as its mapped user name or its
  session ARN), its groups, the impersonated user, and the IAM principal behind it, which the
  audit event carries in ``user.extra`` (``canonicalArn``, ``arn``). Falco has no ``ka.*`` field
  for those; the audit Falco adds them as ``IAM_ARN_FIELD`` and ``IAM_CANONICAL_ARN_FIELD``
  (components/audit_detection.py, ``append_output``). An IAM role or user ARN also becomes its
  own resource (``AwsIamRole`` / ``AwsIamUser``), so Security Hub's resource filters find it.
* The source IP: ASFF ``Network`` (``Direction: IN``, ``SourceIpV4`` or ``SourceIpV6``) with the
  first of ``ka.sourceips`` (the client as the API server saw it; later entries are proxies).
  Not ``Action.AwsApiCallAction.RemoteIpDetails``: that object describes a call to an AWS service
  API (its ``Api`` and ``ServiceName`` come from AWS's catalogue) and the Kubernetes API is not
  one; ``Network.SourceIpV4`` is a first-class Security Hub filter that takes CIDR ranges.

Every string is escaped (control characters as ``\\n``, ``\\x1b``) and cut to ``MAX_VALUE_LENGTH``
UTF-16 code units; identifiers cut that way keep a hash of the whole value so they stay distinct.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal, NotRequired, TypedDict

from handlers.asff import (
    MAX_DETAIL_LENGTH,
    MAX_DETAILS_OTHER,
    MAX_RESOURCE_ID_LENGTH,
    escaped,
    identifier,
    truncate,
)

__all__ = [
    "AUDIT_SOURCE",
    "IAM_ARN_FIELD",
    "IAM_CANONICAL_ARN_FIELD",
    "Actor",
    "AuditPieces",
    "IamResource",
    "KubernetesObjectResource",
    "Network",
    "audit_pieces",
]

AUDIT_SOURCE = "k8s_audit"

# Output fields the audit Falco appends to every k8s_audit alert (append_output extra_fields with
# a json-plugin format): the IAM principal EKS's authenticator records in the audit event's
# user.extra. Defined here, where they are read; the component imports them.
IAM_ARN_FIELD = "eks.user.arn"
IAM_CANONICAL_ARN_FIELD = "eks.user.canonical_arn"

# Values are cut like the findings builder's other details, which keeps a finding small whatever
# the request URI or user agent holds.
MAX_VALUE_LENGTH = MAX_DETAIL_LENGTH
_NOT_AVAILABLE = "<NA>"  # how Falco renders a field it could not extract
# An IAM role or user as EKS's authenticator writes it in user.extra.canonicalArn.
_IAM_PRINCIPAL = re.compile(
    r"arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b):iam::\d{12}:(role|user)/[\w+=,.@/-]{1,512}",
    re.ASCII,
)


class OtherDetails(TypedDict):
    Other: dict[str, str]


class KubernetesObjectResource(TypedDict):
    """The Kubernetes object of the request; the builder adds Partition and Region."""

    Type: Literal["Other"]
    Id: str
    Details: OtherDetails


class IamResource(TypedDict):
    """The IAM role or user behind the Kubernetes user; the builder adds Partition and Region."""

    Type: Literal["AwsIamRole", "AwsIamUser"]
    Id: str


class Network(TypedDict):
    """ASFF Network: the request came in to the API server from SourceIpV4 or SourceIpV6."""

    Direction: Literal["IN"]
    SourceIpV4: NotRequired[str]
    SourceIpV6: NotRequired[str]


class Actor(TypedDict):
    """Who made the request, as the audit event records it."""

    user: str | None
    groups: list[str]
    impersonated_user: str | None
    iam_arn: str | None
    """The IAM principal: user.extra.canonicalArn when present, else user.extra.arn."""


class AuditPieces(TypedDict):
    resource: KubernetesObjectResource | None
    """None when the request names no object (non-resource URLs such as /healthz)."""
    actor: Actor
    actor_resource: IamResource | None
    network: Network | None
    source_ips: list[str]


def audit_pieces(output_fields: dict[str, Any], cluster: str | None) -> AuditPieces:
    """The object, the actor and the source of one k8s_audit alert's ``output_fields``.

    ``cluster`` is the cluster the record was shipped from (Fluent Bit's ``cluster_name``, or the
    Lambda's CLUSTER_NAME), None when unknown.
    """
    fields = output_fields
    resource_kind = _clean(fields.get("ka.target.resource"))
    name = _clean(fields.get("ka.target.name")) or _clean(fields.get("ka.resp.name"))
    namespace = _clean(fields.get("ka.target.namespace"))
    source_ips = [ip for ip in (_clean(v) for v in _listed(fields.get("ka.sourceips"))) if ip]
    canonical_arn = _clean(fields.get(IAM_CANONICAL_ARN_FIELD))
    actor: Actor = {
        "user": _clean(fields.get("ka.user.name")),
        "groups": [g for g in (_clean(v) for v in _listed(fields.get("ka.user.groups"))) if g],
        "impersonated_user": _clean(fields.get("ka.impuser.name")),
        "iam_arn": canonical_arn or _clean(fields.get(IAM_ARN_FIELD)),
    }

    resource: KubernetesObjectResource | None = None
    if resource_kind or name:
        # From the whole values (not the cut ones) so that long names keep distinct Ids.
        whole_name = _text(fields.get("ka.target.name")) or _text(fields.get("ka.resp.name"))
        parts = (
            _text(cluster),
            _text(fields.get("ka.target.namespace")),
            _text(fields.get("ka.target.resource")),
            whole_name,
        )
        object_id = "k8s/" + "/".join(part or "-" for part in parts)
        details = {
            label: value
            for label, value in (
                ("Cluster", _clean(cluster)),
                ("Namespace", namespace),
                ("Resource", resource_kind),
                ("Name", name),
                ("Subresource", _clean(fields.get("ka.target.subresource"))),
                ("Verb", _clean(fields.get("ka.verb"))),
                ("User", actor["user"]),
                ("Groups", _clean(", ".join(actor["groups"]))),
                ("ImpersonatedUser", actor["impersonated_user"]),
                ("IamPrincipalArn", actor["iam_arn"]),
                ("SourceIps", _clean(", ".join(source_ips))),
                ("UserAgent", _clean(fields.get("ka.useragent"))),
                ("AuthorizationDecision", _clean(fields.get("ka.auth.decision"))),
                ("ResponseCode", _clean(_scalar_text(fields.get("ka.response.code")))),
                ("RequestUri", _clean(fields.get("ka.uri"))),
                ("AuditId", _clean(fields.get("ka.auditid"))),
            )
            if value
        }
        assert len(details) <= MAX_DETAILS_OTHER
        resource = {
            "Type": "Other",
            "Id": identifier(object_id, MAX_RESOURCE_ID_LENGTH),
            "Details": {"Other": details},
        }

    return {
        "resource": resource,
        "actor": actor,
        "actor_resource": _iam_resource(canonical_arn),
        "network": _network(source_ips[0] if source_ips else None),
        "source_ips": source_ips,
    }


def _iam_resource(arn: str | None) -> IamResource | None:
    """An AwsIamRole/AwsIamUser for an IAM ARN; session (sts) ARNs name no resource."""
    if arn is None or not _IAM_PRINCIPAL.fullmatch(arn):
        return None
    kind = arn.split(":", 5)[5].split("/", 1)[0]
    return {"Type": "AwsIamRole" if kind == "role" else "AwsIamUser", "Id": arn}


def _network(address: str | None) -> Network | None:
    if address is None:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None  # a hostname or garbage: kept in Details.Other only
    if isinstance(ip, ipaddress.IPv4Address):
        return {"Direction": "IN", "SourceIpV4": str(ip)}
    return {"Direction": "IN", "SourceIpV6": str(ip)}


def _listed(value: Any) -> list[Any]:
    """A list field's values: Falco writes a JSON list, or one string "(a,b)" in its text
    rendering; a single plain string is one value."""
    if isinstance(value, list):
        return value
    if not isinstance(value, str) or value in ("", _NOT_AVAILABLE):
        return []
    text = value.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
        return [part.strip() for part in text.split(",")] if text else []
    return [text]


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return value if isinstance(value, str) else None


def _clean(value: Any) -> str | None:
    """Usable text: not blank, not "<NA>", control characters escaped, cut to the limit."""
    text = _text(value)
    return truncate(text, MAX_VALUE_LENGTH) if text else None


def _text(value: Any) -> str | None:
    """Usable text, escaped but whole; None for non-strings, blanks and "<NA>"."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or value == _NOT_AVAILABLE:
        return None
    return escaped(value)

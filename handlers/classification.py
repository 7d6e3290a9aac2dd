"""What kind of finding an alert is: Falco's priority -> ASFF Severity, its MITRE ATT&CK tags ->
ASFF Types (the types taxonomy), and the Types of an alert without such tags. Pure."""

from __future__ import annotations

import re

from handlers.asff import MAX_TYPES
from handlers.caching import bounded_cache

SEVERITY_LABELS = {
    "Emergency": "CRITICAL",
    "Alert": "CRITICAL",
    "Critical": "CRITICAL",
    "Error": "HIGH",
    "Warning": "MEDIUM",
    "Notice": "LOW",
    "Informational": "INFORMATIONAL",
    "Debug": "INFORMATIONAL",
}
CONTAINER_BEHAVIOR = "Unusual Behaviors/Container"
PROCESS_BEHAVIOR = "Unusual Behaviors/Process"
USER_BEHAVIOR = "Unusual Behaviors/User"
APPLICATION_BEHAVIOR = "Unusual Behaviors/Application"
# Plugin sources whose events are actions of an identity against an API.
AUDIT_LOG_SOURCES = frozenset({"k8s_audit", "aws_cloudtrail", "gcp_auditlog", "okta", "github"})
# falcosecurity/rules tactic tags (mitre_<tactic>) -> ASFF types taxonomy. ASFF's TTPs categories
# follow ATT&CK but have no Reconnaissance, Exfiltration or Impact: reconnaissance inside a running
# container or host (whoami, id, uname) is discovery; exfiltration and impact are what ASFF files
# under Effects. Resource development (pre-attack, no falcosecurity rule uses it) maps to nothing.
TACTIC_TYPES = {
    "initial_access": "TTPs/Initial Access",
    "execution": "TTPs/Execution",
    "persistence": "TTPs/Persistence",
    "privilege_escalation": "TTPs/Privilege Escalation",
    "defense_evasion": "TTPs/Defense Evasion",
    "credential_access": "TTPs/Credential Access",
    "discovery": "TTPs/Discovery",
    "reconnaissance": "TTPs/Discovery",
    "lateral_movement": "TTPs/Lateral Movement",
    "collection": "TTPs/Collection",
    "command_and_control": "TTPs/Command and Control",
    "exfiltration": "Effects/Data Exfiltration",
    # ATT&CK's Impact is "manipulate, interrupt, or destroy systems and data"; the technique
    # refines it (IMPACT_TECHNIQUE_TYPES), destruction is the default.
    "impact": "Effects/Data Destruction",
}
IMPACT_TECHNIQUE_TYPES = {
    "T1496": "Effects/Resource Consumption",  # resource hijacking (crypto miners)
    "T1485": "Effects/Data Destruction",
    "T1486": "Effects/Data Destruction",
    "T1490": "Effects/Data Destruction",
    "T1491": "Effects/Data Destruction",
    "T1561": "Effects/Data Destruction",
    "T1565": "Effects/Data Destruction",
    "T1489": "Effects/Denial of Service",
    "T1498": "Effects/Denial of Service",
    "T1499": "Effects/Denial of Service",
    "T1529": "Effects/Denial of Service",
    "T1531": "Effects/Denial of Service",
}
# Falco rules also tag tactics by id (e.g. TA0003 on "Drop and execute new binary in container").
TACTIC_IDS = {
    "TA0001": "initial_access",
    "TA0002": "execution",
    "TA0003": "persistence",
    "TA0004": "privilege_escalation",
    "TA0005": "defense_evasion",
    "TA0006": "credential_access",
    "TA0007": "discovery",
    "TA0008": "lateral_movement",
    "TA0009": "collection",
    "TA0010": "exfiltration",
    "TA0011": "command_and_control",
    "TA0040": "impact",
    "TA0043": "reconnaissance",
}
_TECHNIQUE = re.compile(r"T\d{4}(?:\.\d{3})?", re.IGNORECASE | re.ASCII)


# A rule's tags are a handful of short words; a hostile alert's are not cached (caching.py).
@bounded_cache(maxsize=2048, max_chars=2048)
def mitre_types(tags: tuple[str, ...]) -> tuple[str, ...]:
    """The Types that a rule's tags give (none without a MITRE tactic tag)."""
    tactics: list[str] = []
    techniques: list[str] = []
    for tag in tags:
        lowered = tag.strip().lower()
        if lowered.startswith("mitre_"):
            tactic = lowered[len("mitre_") :]
        elif lowered.upper() in TACTIC_IDS:
            tactic = TACTIC_IDS[lowered.upper()]
        else:
            if _TECHNIQUE.fullmatch(lowered) and lowered.upper() not in techniques:
                techniques.append(lowered.upper())
            continue
        if tactic in TACTIC_TYPES and tactic not in tactics:
            tactics.append(tactic)

    # Falco's tags do not say which technique belongs to which tactic, so each technique is
    # classified under each tactic of the rule (falcosecurity rules carry one tactic).
    types: dict[str, None] = {}  # an ordered set
    for tactic in tactics:
        if tactic == "impact":
            effects = [(IMPACT_TECHNIQUE_TYPES.get(t.split(".")[0]), t) for t in techniques]
            known = [(category, t) for category, t in effects if category is not None]
            if known:
                for category, technique in known:
                    types[category] = None
                    types[f"{category}/{technique}"] = None
                continue
        category = TACTIC_TYPES[tactic]
        types[category] = None
        for technique in techniques:
            types[f"{category}/{technique}"] = None
    return tuple(types)[:MAX_TYPES]

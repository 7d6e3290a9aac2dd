"""Start the pack as the Pulumi CLI does and ask it over gRPC, in the pack's own environment:

    policy/venv/bin/python policy/smoke.py        (make policy-smoke)

It checks what the unit tests (tests/policy/, which call posture.py directly) cannot: that the
pulumi-policy wrapper in pack.py registers every policy at its level, turns the engine's
properties into the checks' input, reports violations and reads the opt-in policy config.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2, struct_pb2
from posture import ALLOW_ANYWHERE, RESOURCE_POLICIES, STACK_POLICIES, Enforcement
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

PACK_DIR = Path(__file__).resolve().parent
LEVELS = {Enforcement.MANDATORY: "MANDATORY", Enforcement.ADVISORY: "ADVISORY"}
ALL_LOGS = ["api", "audit", "authenticator", "controllerManager", "scheduler"]


def main() -> int:
    program = f"import runpy; runpy.run_path({str(PACK_DIR)!r}, run_name='__main__')"
    pack = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE)  # noqa: S603
    try:
        assert pack.stdout is not None
        port = int(pack.stdout.readline())
        stub = analyzer_pb2_grpc.AnalyzerStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        return check(stub)
    finally:
        pack.terminate()


def analyze(stub: Any, resource_type: str, props: dict[str, Any]) -> list[str]:
    properties = struct_pb2.Struct()
    properties.update(json.loads(json.dumps(props)))
    request = analyzer_pb2.AnalyzeRequest(
        type=resource_type,
        properties=properties,
        urn=f"urn:pulumi:s::p::{resource_type}::r",
        name="r",
    )
    return sorted({d.policyName for d in stub.Analyze(request).diagnostics})


def check(stub: Any) -> int:
    problems = []
    info = stub.GetAnalyzerInfo(empty_pb2.Empty())
    registered = {
        p.name: analyzer_pb2.EnforcementLevel.Name(p.enforcementLevel) for p in info.policies
    }
    expected = {p.name: LEVELS[p.enforcement] for p in [*RESOURCE_POLICIES, *STACK_POLICIES]}
    if registered != expected:
        problems.append(f"registered policies {registered} != {expected}")

    open_cluster = {
        "publicAccessCidrs": ["0.0.0.0/0"],
        "encryptionConfigKeyArn": "arn:aws:kms:us-east-1:123456789012:key/k",
        "enabledClusterLogTypes": ALL_LOGS,
    }
    cases = [
        ("aws:kms/key:Key", {"enableKeyRotation": True}, []),
        ("aws:kms/key:Key", {"enableKeyRotation": False}, ["kms-key-rotation"]),
        ("eks:index:Cluster", open_cluster, ["eks-public-endpoint-restricted"]),
        # Unknown during a preview: not judged now; `pulumi up` runs the policy on known values.
        ("aws:kms/key:Key", {"enableKeyRotation": "1c4a061d-8072-4f0a-a4cb-0ff528b18fe7"}, []),
    ]
    for resource_type, props, violated in cases:
        found = analyze(stub, resource_type, props)
        if found != violated:
            problems.append(f"{resource_type} {props}: {found}, expected {violated}")

    configure = analyzer_pb2.ConfigureAnalyzerRequest()
    opt_in = configure.policyConfig["eks-public-endpoint-restricted"]
    opt_in.enforcementLevel = analyzer_pb2.MANDATORY
    opt_in.properties.update({ALLOW_ANYWHERE: True})
    stub.Configure(configure)
    if analyze(stub, "eks:index:Cluster", open_cluster):
        problems.append("the opt-in policy config did not reach eks-public-endpoint-restricted")

    for problem in problems:
        print(f"policy pack smoke test: {problem}", file=sys.stderr)
    print(
        f"policy pack smoke test: {len(registered)} policies, {len(cases) + 1} cases, "
        f"{len(problems)} problems"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

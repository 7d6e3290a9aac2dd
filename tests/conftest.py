"""Shared fixtures: Pulumi mocks that record every resource the program declares.

How a Pulumi test here reads:

    def test_log_group_is_encrypted(pulumi_mocks):
        @pulumi.runtime.test
        def declare():
            pipeline = FindingsPipeline("findings", args)
            return pipeline.log_group_arn        # anything awaitable; the test waits for all of it
        declare()
        group = pulumi_mocks.one("aws:cloudwatch/logGroup:LogGroup")
        assert group.inputs["kmsKeyId"]

Assert *after* the decorated function returns (assertions inside an `apply` are racy or silently
skipped). Inputs are recorded with Pulumi's engine names (camelCase), as a reviewer sees them in
`pulumi preview --diff`.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pytest
from asff_limits import assert_within_asff_limits
from aws_fakes import (
    REGION,
    HttpFaults,
    fast_botocore_retries,
    http_faults,
    moto_security_hub,
    reset_security_hub,
    stored_findings,
)
from pulumi.runtime import mocks as pulumi_mock_runtime
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.proto import resource_pb2

from handlers import ingest

ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "us-east-1"
ORGANIZATION = "organization"


@dataclass(frozen=True)
class RecordedResource:
    """One resource as the program declared it."""

    type: str
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    provider: str
    custom: bool

    def policy(self, key: str = "policy") -> dict[str, Any]:
        """A JSON policy input (policy, assumeRolePolicy, ...) parsed back into a dict."""
        value = self.inputs[key]
        return json.loads(value) if isinstance(value, str) else value


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    """Answers like AWS would for what the program reads back, and records every declaration."""

    region: str = DEFAULT_REGION
    resources: list[RecordedResource] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    stack_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # EKS clusters that exist before the program runs (existingClusterName), by name, as
    # DescribeCluster would show them; and the (cluster, principal ARN) pairs with access entries.
    eks_clusters: dict[str, dict[str, Any]] = field(default_factory=dict)
    access_entries: set[tuple[str, str]] = field(default_factory=set)
    # This account's zone name -> zone ID map for the region (default: a, b, c; none EKS refuses).
    availability_zones: dict[str, str] = field(default_factory=dict)

    def add_eks_cluster(
        self,
        name: str,
        *,
        authentication_mode: str = "API_AND_CONFIG_MAP",
        status: str = "ACTIVE",
        public_endpoint: bool = True,
    ) -> dict[str, Any]:
        """An existing cluster in the mocks' region; returns getCluster's answer for it."""
        arn = f"arn:aws:eks:{self.region}:{ACCOUNT_ID}:cluster/{name}"
        self.eks_clusters[name] = {
            "id": name,
            "name": name,
            "arn": arn,
            "status": status,
            "version": "1.33",
            "endpoint": f"https://{name.upper()}.gr7.{self.region}.eks.amazonaws.com",
            "certificateAuthorities": [{"data": "TU9DSy1DQQ=="}],
            "accessConfigs": [
                {
                    "authenticationMode": authentication_mode,
                    "bootstrapClusterCreatorAdminPermissions": True,
                }
            ],
            "vpcConfig": {
                "endpointPublicAccess": public_endpoint,
                "endpointPrivateAccess": True,
                "publicAccessCidrs": ["198.18.0.0/24"],
                "subnetIds": ["subnet-existing-a", "subnet-existing-b"],
                "vpcId": "vpc-existing",
            },
            "identities": [
                {"oidcs": [{"issuer": f"https://oidc.eks.{self.region}.amazonaws.com/id/MOCK"}]}
            ],
        }
        return self.eks_clusters[name]

    # -- engine callbacks ------------------------------------------------------------------
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        region = args.inputs.get("region") or self.region
        physical = args.inputs.get("name") or f"{args.name}-mock"
        resource_id = f"{args.name}-id"
        outputs: dict[str, Any] = {**args.inputs}
        outputs.setdefault("arn", self._arn(args.typ, str(physical), str(region)))
        outputs.setdefault("id", resource_id)
        outputs.update(self._computed_outputs(args.typ, args.name, args.inputs, str(region)))
        if args.typ == "pulumi:pulumi:StackReference":
            stack = args.inputs.get("name", args.name)
            outputs["outputs"] = self.stack_outputs.get(stack, {})
        self.resources.append(
            RecordedResource(
                type=args.typ,
                name=args.name,
                inputs=dict(args.inputs),
                outputs=outputs,
                provider=args.provider or "",
                custom=args.custom,
            )
        )
        return resource_id, outputs

    def call(
        self, args: pulumi.runtime.MockCallArgs
    ) -> dict[str, Any] | tuple[dict[str, Any], list[tuple[str, str]]]:
        self.calls.append((args.token, dict(args.args)))
        region = args.args.get("region") or self.region
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": ACCOUNT_ID,
                "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/mock",
                "userId": "AIDAMOCK",
                "id": ACCOUNT_ID,
            }
        if args.token == "aws:index/getRegion:getRegion":
            return {"name": region, "region": region, "id": region}
        if args.token == "aws:index/getPartition:getPartition":
            return {
                "partition": "aws",
                "dnsSuffix": "amazonaws.com",
                "id": "aws",
            }
        if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            # Zone names map to zone IDs per account; EC2 drops the excluded IDs.
            zones = self.availability_zones or {
                f"{region}{suffix}": f"{region[:2]}{region.split('-')[1][0]}{region[-1]}-az{i}"
                for i, suffix in enumerate("abc", start=4)
            }
            excluded = set(args.args.get("excludeZoneIds") or [])
            kept = {name: zone_id for name, zone_id in zones.items() if zone_id not in excluded}
            return {"names": list(kept), "zoneIds": list(kept.values())}
        if args.token == "aws:ssm/getParameter:getParameter":
            name = str(args.args["name"])
            if name.startswith("/aws/service/powertools/python/"):
                # AWS's public parameter: the value is the managed layer's ARN for that version.
                _, arch, runtime, _version = name.rsplit("/", 3)
                value = (
                    f"arn:aws:lambda:{region}:017000801446:layer:AWSLambdaPowertoolsPythonV3-"
                    f"{runtime.replace('.', '')}-{arch}:99"
                )
                return {"name": name, "value": value, "insecureValue": value, "type": "String"}
        if args.token == "aws:eks/getCluster:getCluster":
            name = str(args.args["name"])
            if name not in self.eks_clusters:
                # A failed invoke, as the engine reports a provider's error (the program sees an
                # exception from the data source), with what EKS answers for an unknown name.
                return {}, [("name", f"ResourceNotFoundException: No cluster found for {name}.")]
            return self.eks_clusters[name]
        if args.token == "aws:iam/getSessionContext:getSessionContext":
            arn = str(args.args["arn"])
            # arn:aws:sts::<acct>:assumed-role/<role>/<session> -> arn:aws:iam::<acct>:role/<role>
            issuer = arn
            if ":assumed-role/" in arn:
                role = arn.split(":assumed-role/", 1)[1].split("/")[0]
                issuer = f"arn:aws:iam::{ACCOUNT_ID}:role/{role}"
            return {"arn": arn, "issuerArn": issuer, "id": arn}
        if args.token == "aws:eks/getAccessEntry:getAccessEntry":
            key = (str(args.args["clusterName"]), str(args.args["principalArn"]))
            if key not in self.access_entries:
                return {}, [("principalArn", "ResourceNotFoundException: no such access entry")]
            return {"clusterName": key[0], "principalArn": key[1], "id": ":".join(key)}
        # Anything else is a data source the program should not depend on in tests: say so.
        raise NotImplementedError(f"mock has no answer for data source {args.token}")

    # -- what AWS would compute ------------------------------------------------------------
    @staticmethod
    def _arn(typ: str, physical: str, region: str) -> str:
        # "aws:kms/key:Key" -> service "kms", kind "key"
        if not typ.startswith("aws:"):
            return f"arn:mock:{typ}:{physical}"
        module = typ.split(":")[1].split("/")[0]
        kind = typ.split(":")[-1].lower()
        if module == "iam":
            return f"arn:aws:iam::{ACCOUNT_ID}:{kind}/{physical}"
        return f"arn:aws:{module}:{region}:{ACCOUNT_ID}:{kind}/{physical}"

    @staticmethod
    def _computed_outputs(
        typ: str, name: str, inputs: dict[str, Any], region: str
    ) -> dict[str, Any]:
        physical = inputs.get("name") or f"{name}-mock"
        if typ == "eks:index:Cluster":
            issuer = f"https://oidc.eks.{region}.amazonaws.com/id/MOCK{abs(hash(name)) % 10**8}"
            kubeconfig = {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": physical, "cluster": {"server": "https://mock.eks"}}],
                "contexts": [{"name": physical, "context": {"cluster": physical}}],
                "current-context": physical,
                "users": [],
            }
            return {
                "kubeconfig": kubeconfig,
                "kubeconfigJson": json.dumps(kubeconfig),
                "oidcIssuer": issuer.removeprefix("https://"),
                "oidcProviderUrl": issuer,
                "oidcProviderArn": (
                    f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/{issuer.removeprefix('https://')}"
                ),
                "clusterSecurityGroupId": "sg-cluster-mock",
                "nodeSecurityGroupId": "sg-node-mock",
                # `core` is left out on purpose: its members are resource references that a
                # unit test cannot fake; code under test must not read cluster.core.
            }
        if typ == "aws:kms/key:Key":
            return {"keyId": f"{name}-key-id"}
        if typ == "aws:sqs/queue:Queue":
            queue = inputs.get("name") or f"{name}-mock"
            return {
                "url": f"https://sqs.{region}.amazonaws.com/{ACCOUNT_ID}/{queue}",
                "arn": f"arn:aws:sqs:{region}:{ACCOUNT_ID}:{queue}",
            }
        if typ == "aws:lambda/function:Function":
            function = inputs.get("name") or f"{name}-mock"
            return {
                "arn": f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{function}",
                "invokeArn": f"arn:aws:apigateway:{region}:lambda:path/functions/{function}",
                "name": function,
            }
        if typ == "aws:cloudwatch/logGroup:LogGroup":
            group = inputs.get("name") or f"/mock/{name}"
            return {"arn": f"arn:aws:logs:{region}:{ACCOUNT_ID}:log-group:{group}", "name": group}
        if typ == "aws:sns/topic:Topic":
            topic = inputs.get("name") or f"{name}-mock"
            return {"arn": f"arn:aws:sns:{region}:{ACCOUNT_ID}:{topic}"}
        if typ == "aws:ec2/vpc:Vpc":
            return {"id": f"vpc-{name}"}
        if typ == "aws:securityhub/account:Account":
            return {"arn": f"arn:aws:securityhub:{region}:{ACCOUNT_ID}:hub/default"}
        if typ == "aws:securityhub/findingAggregator:FindingAggregator":
            return {
                "arn": f"arn:aws:securityhub:{region}:{ACCOUNT_ID}:finding-aggregator/mock-id",
            }
        return {}

    # -- what tests read ---------------------------------------------------------------------
    def of_type(self, typ: str) -> list[RecordedResource]:
        return [r for r in self.resources if r.type == typ]

    def one(self, typ: str, name: str | None = None) -> RecordedResource:
        """The single resource of a type (and logical name, if given); fails loudly otherwise."""
        found = [r for r in self.of_type(typ) if name is None or r.name == name]
        assert len(found) == 1, (
            f"expected exactly one {typ}{' named ' + name if name else ''}, "
            f"found {[r.name for r in found]}"
        )
        return found[0]

    def types(self) -> set[str]:
        return {r.type for r in self.resources}


class ResourceReferenceFreeMonitor(pulumi_mock_runtime.MockMonitor):
    """A mock monitor that does not advertise resource references.

    Resource-typed inputs to remote components (e.g. pulumi-eks's ``ManagedNodeGroup(cluster=...)``)
    otherwise fail under mocks with "Task attached to a different loop"; without the feature they
    arrive as URN/ID strings. The program itself avoids such inputs (its node group is a plain
    aws.eks.NodeGroup), so it also runs under the default mock monitor.
    """

    def SupportsFeature(self, request: Any) -> Any:  # gRPC method name
        has_support = request.id not in ("outputValues", "resourceReferences")
        return type("SupportsFeatureResponse", (object,), {"hasSupport": has_support})

    def GetDeploymentInfo(self, request: Any) -> Any:  # gRPC method name
        info = super().GetDeploymentInfo(request)
        features = [
            f
            for f in info.supportedFeatures
            if f != resource_pb2.RESOURCE_MONITOR_FEATURE_RESOURCE_REFERENCES
        ]
        return resource_pb2.DeploymentInfo(supportedFeatures=features)


def configure_pulumi_mocks(
    *,
    project: str = "falco-securityhub",
    stack: str = DEFAULT_REGION,
    region: str = DEFAULT_REGION,
    config: dict[str, Any] | None = None,
) -> RecordingMocks:
    """Fresh mocks, event loop, root stack and config: nothing leaks from one test to the next.

    ``config`` maps full keys (``aws:region``, ``falco-securityhub:cluster``) to values; objects
    and lists are JSON-encoded as the engine would pass them.
    """
    asyncio.set_event_loop(asyncio.new_event_loop())
    pulumi_settings.ROOT.set(None)
    all_config = {"aws:region": region}
    for key, value in (config or {}).items():
        all_config[key] = value if isinstance(value, str) else json.dumps(value)
    pulumi.runtime.set_all_config(all_config)
    recording = RecordingMocks(region=region)
    pulumi.runtime.set_mocks(
        recording,
        project=project,
        stack=stack,
        # What a self-managed (S3, local) backend calls every organization.
        organization=ORGANIZATION,
        preview=False,
        monitor=ResourceReferenceFreeMonitor(recording),
    )
    return recording


@pytest.fixture
def pulumi_mocks() -> Iterator[RecordingMocks]:
    """Mocks for one test in the home region; call configure_pulumi_mocks for other settings."""
    yield configure_pulumi_mocks()
    pulumi.runtime.set_all_config({})


# -- the ingest handler against moto (tests/handlers) ---------------------------------------------
@pytest.fixture
def ingest_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The function's environment, a fresh Security Hub client (made inside moto), no sleeps."""
    monkeypatch.setenv("CLUSTER_NAME", "shop-prod-use1")
    monkeypatch.delenv("MIN_PRIORITY", raising=False)
    ingest.securityhub_client.cache_clear()
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # no real backoff between rounds


@pytest.fixture(scope="module")
def moto() -> Iterator[None]:
    with moto_security_hub(REGION):
        yield


@pytest.fixture
def hub(moto: None) -> Iterator[Any]:
    """Security Hub (moto) enabled in us-east-1; the handler's own client; botocore sleeps off."""
    reset_security_hub(REGION)
    with fast_botocore_retries() as backoff:
        client = ingest.securityhub_client(REGION)
        client.backoff = backoff
        yield client
    ingest.securityhub_client.cache_clear()
    # moto accepts anything; real Security Hub would refuse a finding over a limit.
    for finding in stored_findings(REGION):
        assert_within_asff_limits(finding)


@pytest.fixture
def wire(hub: Any) -> Iterator[HttpFaults]:
    with http_faults(hub) as faults:
        yield faults


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """The handler's JSON log lines (Powertools writes to the stream it was created with)."""
    sink = io.StringIO()
    handler = ingest.logger.registered_handler
    previous = handler.setStream(sink)  # type: ignore[attr-defined]
    yield sink
    handler.setStream(previous)  # type: ignore[attr-defined]

"""deploy/k8s: every manifest validates against the Kubernetes schemas (kubernetes-validate,
offline, strict: an unknown field is an error), and the couplings the service depends on hold."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is a dev dependency: pip install -e '.[dev]'"
)

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
VERSION = "1.30.0"


def _docs() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


@pytest.mark.parametrize("doc", _docs(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_manifest_validates_against_the_schema(doc: dict) -> None:
    kubernetes_validate.validate(doc, VERSION, strict=True)


def _one(kind: str) -> dict:
    return next(d for d in _docs() if d["kind"] == kind)


def test_the_deployment_keeps_its_couplings() -> None:
    """CPU request = limit = DS_WORKERS; native gRPC readiness on the served port; the grace
    period covers the preStop pause and the server's drain; the headless Service selects the
    pods (client-side round_robin); the PDB and HPA target the same pods."""
    deployment = _one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    server = pod["containers"][0]
    env = {e["name"]: e["value"] for e in server["env"]}
    cpu = server["resources"]["requests"]["cpu"]
    assert cpu == server["resources"]["limits"]["cpu"] == env["DS_WORKERS"]
    port = server["ports"][0]["containerPort"]
    assert server["readinessProbe"]["grpc"]["port"] == port == server["startupProbe"]["grpc"]["port"]
    assert "tcpSocket" in server["livenessProbe"]  # a Redis outage must not restart pods
    drain = float(env["DS_GRACE_PERIOD_S"]) + server["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > drain
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = _one("Service")
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["selector"].items() <= labels.items()
    assert _one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert _one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    retrain = _one("CronJob")["spec"]
    assert retrain["concurrencyPolicy"] == "Forbid"  # two publishers never race for CURRENT

"""Where bureau traffic goes (issue 15). Service-to-service HTTP is mutual TLS: every bureau pod,
and the collector that scrapes them, is in the Linkerd mesh and admits only authenticated
(mTLS) peers; its proxy may reach the mesh's control plane. Each printer on the floor is
reached by its one service."""

from __future__ import annotations

import pytest

from tests.support.k8s import OVERLAYS, of_kind, render

MESHED = {"intake", "keymgmt", "graphical", "fulfillment", "audit", "witness", "otel-collector"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_http_workload_is_meshed_with_strict_inbound_mtls(overlay: str) -> None:
    objects = render(overlay)
    deployments = {d["metadata"]["name"]: d for d in of_kind(objects, "Deployment")}
    assert set(deployments) == MESHED
    for name, deployment in deployments.items():
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations.get("linkerd.io/inject") == "enabled", name
        policy = annotations.get("config.linkerd.io/default-inbound-policy")
        assert policy == "all-authenticated", name
    (policy,) = [
        p["spec"]
        for p in of_kind(objects, "NetworkPolicy")
        if p["metadata"]["name"] == "mesh-control-plane"
    ]
    assert set(policy["podSelector"]["matchExpressions"][0]["values"]) == MESHED
    (rule,) = policy["egress"]
    assert rule["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "linkerd"}}}
    ]
    assert {p["port"] for p in rule["ports"]} == {8080, 8086, 8090}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_printer_is_reached_by_its_one_service(overlay: str) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(render(overlay), "NetworkPolicy")}
    for policy, service in (
        ("graphical-to-card-printer", "graphical"),
        ("keymgmt-to-pin-printer", "keymgmt"),
    ):
        spec = policies[policy]
        assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": service}}
        (rule,) = spec["egress"]
        (peer,) = rule["to"]
        cidr = peer["ipBlock"]["cidr"]
        assert rule["ports"] == [{"protocol": "TCP", "port": 631}]
        for name, other in policies.items():  # no other pod reaches that printer
            for egress in other.get("egress", []):
                if any(p.get("ipBlock", {}).get("cidr") == cidr for p in egress.get("to", [])):
                    assert other["podSelector"] == spec["podSelector"], name

"""The floor ingress exposes only what the floor agents use (issue 15): keymgmt's routes that
admit a station, or name the qa service, read from keymgmt's own routers, and no other route
(Kubernetes Ingress path matching: Exact, or Prefix by whole path elements)."""

from __future__ import annotations

from tests.support.k8s import Obj, of_kind, render
from tests.support.k8s_env import Admits, route_admissions, service_app

# A Prefix cannot tell /v1/ca-keys/test/1 from /v1/ca-keys/<rid>/1: this route also passes the
# floor ingress. It admits admins and custodians only, whose tokens are never on the floor, and
# keymgmt's floor credentials hold no verifier of theirs.
PREFIX_EXTRAS = {("POST", "/v1/ca-keys/test/{ca_index}")}


def is_floor_route(admits: Admits) -> bool:
    return "station" in admits.roles or admits.services == ("qa",)


def matches(template: str, path: str, path_type: str) -> bool:
    """Whether a request for the route `template` can match the Ingress path."""
    route = template.strip("/").split("/")
    wanted = path.strip("/").split("/")
    if path_type == "Exact" and len(route) != len(wanted):
        return False
    if len(wanted) > len(route):
        return False
    return all(r == w or r.startswith("{") for r, w in zip(route, wanted, strict=False))


def floor_paths(objects: tuple[Obj, ...]) -> list[tuple[str, str]]:
    found = []
    for ingress in of_kind(objects, "Ingress"):
        if ingress["spec"]["ingressClassName"] != "floor":
            continue
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["name"] == "keymgmt"
                found.append((path["path"], path["pathType"]))
    return found


def test_the_floor_ingress_exposes_exactly_the_station_and_qa_routes() -> None:
    routes = route_admissions(service_app("keymgmt"))
    floor = {key for key, admits in routes.items() if is_floor_route(admits)}
    assert ("POST", "/v1/perso/secure-scripts") in floor
    paths = floor_paths(render("prod"))
    reachable = {key for key in routes if any(matches(key[1], path, kind) for path, kind in paths)}
    assert floor <= reachable, f"floor routes the ingress does not pass: {floor - reachable}"
    floor_templates = {template for _, template in floor}
    extra = {key for key in reachable - floor if key[1] not in floor_templates}
    # Another method on a floor route's own path cannot be told apart by an Ingress.
    assert extra == PREFIX_EXTRAS, f"the floor reaches more than its routes: {extra}"
    for key in reachable - floor:
        assert not routes[key].roles & {"station", "service"}, key


def test_the_dev_overlay_has_no_floor_ingress() -> None:
    assert floor_paths(render("dev")) == []

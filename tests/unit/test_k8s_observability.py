"""deploy/k8s/observability: the collector's pipelines are wired, and the dashboard asks only
for metrics the services expose (shared/metrics.py defines them all) with the labels they
carry, and charts every one of them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.metrics import MetricWrapperBase

from shared import metrics

OBSERVABILITY = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "observability"
HISTOGRAM_SERIES = re.compile(r"_(bucket|sum|count)$")


def exposed_metrics() -> dict[str, tuple[str, ...]]:
    """Each metric by the name a query uses (a counter's ends in _total), with its labels
    (prometheus-client keeps them in `_labelnames`; a metric without samples shows none)."""
    exposed: dict[str, tuple[str, ...]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            (family,) = value.describe()
            name = family.name + ("_total" if family.type == "counter" else "")
            exposed[name] = tuple(value._labelnames)
    assert {m.name for m in metrics.REGISTRY.collect()} == {
        name.removesuffix("_total") for name in exposed
    }, "a metric of the registry is not a module-level definition"
    return exposed


def test_collector_pipelines_use_only_declared_components() -> None:
    config: dict[str, Any] = yaml.safe_load((OBSERVABILITY / "otel-collector.yaml").read_text())
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"metrics", "traces"}
    for name, pipeline in pipelines.items():
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline[section]:
                assert component in config[section], f"{name}: {section} {component}"
    assert pipelines["metrics"]["receivers"] == ["prometheus"]
    # Spans never leave the namespace with an attribute named like cardholder data.
    assert "attributes/no-cardholder-data" in pipelines["traces"]["processors"]
    (scrape,) = config["receivers"]["prometheus"]["config"]["scrape_configs"]
    kept = scrape["relabel_configs"][0]
    assert kept["action"] == "keep"
    assert kept["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]


def test_dashboard_queries_exposed_metrics_and_labels() -> None:
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    registered = exposed_metrics()
    queried: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            for name in re.findall(r"\bbureau_[a-z_]+", target["expr"]):
                base = name if name in registered else HISTOGRAM_SERIES.sub("", name)
                assert base in registered, f"{panel['title']}: {name} is not exposed"
                queried.add(base)
            for label in re.findall(r"by \(([^)]*)\)", target["expr"]):
                for used in (part.strip() for part in label.split(",")):
                    if used == "le":
                        continue
                    owners = [name for name, labels in registered.items() if used in labels]
                    assert owners, f"{panel['title']}: no metric has a label {used!r}"
    assert queried == set(registered), f"not on the dashboard: {set(registered) - queried}"

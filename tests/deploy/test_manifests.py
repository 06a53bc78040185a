"""deploy/ checked offline (no cluster, no Docker engine, no network): the
Kubernetes manifests against the Kubernetes schemas, KEDA and PodMonitor
resources against ours, the compose file, Prometheus and Grafana against the
worker's contract (DESIGN.md §7).

Each check returns the problems it finds. It runs once on the real files,
which must have none, and on broken copies, where it must find the break: so
no check here passes for want of looking.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from workers import QUEUES

from .check_compose import compose_problems, prometheus_problems
from .check_custom import keda_problems, podmonitor_problems
from .check_grafana import metric_problems, structure_problems
from .check_kubernetes import (
    connection_problems,
    schema_problems,
    service_problems,
    worker_problems,
    workload_problems,
)
from .manifests import (
    COMPOSE,
    GRAFANA_DASHBOARD,
    PROMETHEUS,
    Doc,
    core_manifest_files,
    find,
    k8s_documents,
    load_documents,
    load_yaml,
)

# The oldest Kubernetes these manifests support, and the newest one whose
# schemas the installed kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", f"{kubernetes_validate.latest_version()}.0")
LATEST = K8S_VERSIONS[-1]

Mutation = Callable[[Any], object]


def _get(docs: list[Doc], kind: str, name: str) -> Doc:
    doc = find(docs, kind, name)
    assert doc is not None, f"{kind}/{name} is gone from the manifests"
    return doc


def _container(docs: list[Doc], kind: str, name: str) -> Doc:
    container: Doc = _get(docs, kind, name)["spec"]["template"]["spec"]["containers"][0]
    return container


def _payments(docs: list[Doc]) -> Doc:
    return _container(docs, "Deployment", "stackshift-payments-worker")


def _payments_pod(docs: list[Doc]) -> Doc:
    pod: Doc = _get(docs, "Deployment", "stackshift-payments-worker")["spec"][
        "template"
    ]["spec"]
    return pod


def _set_option(words: list[str], option: str, value: str) -> None:
    words[words.index(option) + 1] = value


def _scaled(docs: list[Doc]) -> Doc:
    return _get(docs, "ScaledObject", "stackshift-payments-worker")


def _trigger(docs: list[Doc]) -> Doc:
    """The payments ScaledObject's first trigger (pendingEntriesCount)."""
    trigger: Doc = _scaled(docs)["spec"]["triggers"][0]
    return trigger


def _endpoint(docs: list[Doc]) -> Doc:
    monitor = _get(docs, "PodMonitor", "stackshift-workers")
    endpoint: Doc = monitor["spec"]["podMetricsEndpoints"][0]
    return endpoint


def _behavior(docs: list[Doc]) -> Doc:
    advanced = _scaled(docs)["spec"]["advanced"]
    behavior: Doc = advanced["horizontalPodAutoscalerConfig"]["behavior"]
    return behavior


def all_k8s_problems(docs: list[Doc], changed: list[Doc]) -> list[str]:
    """Every check on ``docs``; the (slow) schema check only on ``changed``."""
    return [
        *[p for doc in changed for p in schema_problems(doc, LATEST)],
        *workload_problems(docs),
        *worker_problems(docs),
        *service_problems(docs),
        *connection_problems(docs),
        *keda_problems(docs, LATEST),
        *podmonitor_problems(docs),
    ]


# --- the real files have no problems


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", core_manifest_files(), ids=lambda p: Path(p).name)
def test_core_manifests_are_valid_kubernetes(path: Path, version: str) -> None:
    docs = load_documents(path)
    assert docs
    assert [p for doc in docs for p in schema_problems(doc, version)] == []


def test_workers_expose_metrics_and_probes_and_drain_before_sigkill() -> None:
    assert worker_problems(k8s_documents()) == []


def test_workloads_run_as_non_root_with_resources_and_defined_config() -> None:
    docs = k8s_documents()
    assert workload_problems(docs) == []
    assert service_problems(docs) == []
    assert connection_problems(docs) == []


def test_every_documented_queue_has_a_worker_deployment_and_a_scaler() -> None:
    docs = k8s_documents()
    streams = {
        trigger["metadata"]["stream"]
        for doc in docs
        if doc["kind"] == "ScaledObject"
        for trigger in doc["spec"]["triggers"]
    }
    assert streams == {f"stackshift:{{{queue}}}:stream" for queue in QUEUES}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_keda_scaled_objects_watch_the_workers_streams(version: str) -> None:
    assert keda_problems(k8s_documents(), version) == []


def test_podmonitor_scrapes_every_worker() -> None:
    assert podmonitor_problems(k8s_documents()) == []


def test_compose_stack_is_durable_observable_and_drains() -> None:
    assert compose_problems(load_yaml(COMPOSE), QUEUES) == []


def test_prometheus_scrapes_every_compose_worker() -> None:
    assert prometheus_problems(load_yaml(PROMETHEUS), load_yaml(COMPOSE)) == []


def test_grafana_dashboard_is_a_valid_model_on_contract_metrics() -> None:
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    assert structure_problems(dashboard) == []
    assert metric_problems(dashboard) == []


# --- broken copies: each check finds the break

K8S_BREAKS: list[tuple[str, Mutation, str]] = [
    (
        "misspelt field",
        lambda d: _payments(d).update(livenesProbe=_payments(d).pop("livenessProbe")),
        "livenesProbe",
    ),
    (
        "replicas as a string",
        lambda d: _get(d, "Deployment", "stackshift-api")["spec"].update(replicas="2"),
        "replicas",
    ),
    (
        "metrics port",
        lambda d: _set_option(_payments(d)["command"], "--metrics-port", "9000"),
        "--metrics-port is 9000",
    ),
    (
        "liveness path",
        lambda d: _payments(d)["livenessProbe"]["httpGet"].update(path="/live"),
        "path is /live",
    ),
    (
        "readiness port",
        lambda d: _payments(d)["readinessProbe"]["httpGet"].update(port=8080),
        "port 8080",
    ),
    (
        "no readiness probe",
        lambda d: _payments(d).pop("readinessProbe"),
        "no readinessProbe",
    ),
    (
        "short termination",
        lambda d: _payments_pod(d).update(terminationGracePeriodSeconds=25),
        "terminationGracePeriodSeconds 25",
    ),
    (
        "long grace period",
        lambda d: _set_option(_payments(d)["command"], "--grace-period", "60"),
        "--grace-period 60",
    ),
    (
        "root",
        lambda d: _payments_pod(d)["securityContext"].update(runAsNonRoot=False),
        "may run as root",
    ),
    ("no limits", lambda d: _payments(d)["resources"].pop("limits"), "memory limit"),
    (
        "unknown secret key",
        lambda d: _payments(d)["env"][0]["valueFrom"]["secretKeyRef"].update(key="uri"),
        "stackshift-redis/uri",
    ),
    (
        "service port",
        lambda d: _get(d, "Service", "stackshift-api")["spec"]["ports"][0].update(
            targetPort="web"
        ),
        "targetPort web",
    ),
    (
        "password drift",
        lambda d: _get(d, "Secret", "stackshift-redis")["stringData"].update(
            password="other"
        ),
        "`url` and `password` differ",
    ),
    (
        "address drift",
        lambda d: _get(d, "ConfigMap", "stackshift")["data"].update(
            REDIS_ADDRESS="redis:6380"
        ),
        "REDIS_ADDRESS is not redis:6379",
    ),
    (
        "keda field typo",
        lambda d: _scaled(d)["spec"].update(minReplicas=1),
        "minReplicas",
    ),
    (
        "keda metadata typo",
        lambda d: _trigger(d)["metadata"].update(pendingEntries="5"),
        "pendingEntries",
    ),
    (
        "keda count not a string",
        lambda d: _trigger(d)["metadata"].update(pendingEntriesCount=5),
        "pendingEntriesCount",
    ),
    (
        "wrong stream",
        lambda d: _trigger(d)["metadata"].update(stream="stackshift:{emails}:stream"),
        "is none of the worker's",
    ),
    (
        "stream without braces",
        lambda d: _trigger(d)["metadata"].update(stream="stackshift:payments:stream"),
        "is none of the worker's",
    ),
    (
        "wrong group",
        lambda d: _trigger(d)["metadata"].update(consumerGroup="workers"),
        "consumerGroup workers",
    ),
    (
        "unreachable pending target",
        lambda d: _trigger(d)["metadata"].update(pendingEntriesCount="10"),
        "never scale up",
    ),
    (
        "ignored threshold",
        lambda d: _trigger(d)["metadata"].update(streamLength="5"),
        "streamLength is ignored",
    ),
    (
        "scale to zero",
        lambda d: _scaled(d)["spec"].update(minReplicaCount=0),
        "minReplicaCount must be at least 1",
    ),
    (
        "missing target",
        lambda d: _scaled(d)["spec"]["scaleTargetRef"].update(name="nope"),
        "scale target nope",
    ),
    (
        "replicas beside KEDA",
        lambda d: _get(d, "Deployment", "stackshift-payments-worker")["spec"].update(
            replicas=2
        ),
        "KEDA owns",
    ),
    (
        "unknown env var",
        lambda d: _trigger(d)["metadata"].update(addressFromEnv="REDIS_HOST"),
        "REDIS_HOST",
    ),
    ("missing auth", lambda d: _trigger(d).pop("authenticationRef"), "Redis password"),
    (
        "auth secret key",
        lambda d: _get(d, "TriggerAuthentication", "stackshift-redis")["spec"][
            "secretTargetRef"
        ][0].update(key="pass"),
        "stackshift-redis/pass",
    ),
    (
        "hpa behavior",
        lambda d: _behavior(d)["scaleDown"].update(stabilizationWindow=1),
        "stabilizationWindow",
    ),
    ("podmonitor port", lambda d: _endpoint(d).update(port="http"), "port http"),
    ("podmonitor labels", lambda d: _endpoint(d).pop("honorLabels"), "honorLabels"),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [b[1:] for b in K8S_BREAKS], ids=[b[0] for b in K8S_BREAKS]
)
def test_a_broken_manifest_is_caught(mutate: Mutation, expected: str) -> None:
    original = k8s_documents()
    docs = copy.deepcopy(original)
    mutate(docs)
    changed = [doc for doc in docs if doc not in original]
    problems = all_k8s_problems(docs, changed)
    assert any(expected in problem for problem in problems), problems


def _service(compose: Doc, name: str) -> Doc:
    service: Doc = compose["services"][name]
    return service


def _redis_command(compose: Doc) -> list[str]:
    command: list[str] = _service(compose, "redis")["command"]
    return command


COMPOSE_BREAKS: list[tuple[str, Mutation, str]] = [
    (
        "no aof",
        lambda c: _set_option(_redis_command(c), "--appendonly", "no"),
        "--appendonly is no",
    ),
    (
        "fsync always",
        lambda c: _set_option(_redis_command(c), "--appendfsync", "always"),
        "--appendfsync is always",
    ),
    (
        "eviction",
        lambda c: _set_option(_redis_command(c), "--maxmemory-policy", "allkeys-lru"),
        "--maxmemory-policy",
    ),
    (
        "short stop",
        lambda c: _service(c, "payments-worker").update(stop_grace_period="20s"),
        "stop_grace_period 20",
    ),
    (
        "default stop",
        lambda c: _service(c, "payments-worker").pop("stop_grace_period"),
        "stop_grace_period 10",
    ),
    (
        "no metrics",
        lambda c: _service(c, "uploads-worker").update(
            command=_service(c, "uploads-worker")["command"][:-2]
        ),
        "--metrics-port is None",
    ),
    (
        "no healthcheck",
        lambda c: _service(c, "signup-worker").pop("healthcheck"),
        "healthcheck",
    ),
    ("queue unserved", lambda c: c["services"].pop("signup-worker"), "queue emails"),
    (
        "typo",
        lambda c: _service(c, "redis").update(stop_grace_perod="1s"),
        "stop_grace_perod",
    ),
    (
        "public port",
        lambda c: _service(c, "dashboard").update(ports=["8787:8787"]),
        "beyond 127.0.0.1",
    ),
    ("no api", lambda c: c["services"].pop("api"), "example API"),
]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [b[1:] for b in COMPOSE_BREAKS],
    ids=[b[0] for b in COMPOSE_BREAKS],
)
def test_a_broken_compose_file_is_caught(mutate: Mutation, expected: str) -> None:
    compose = copy.deepcopy(load_yaml(COMPOSE))
    mutate(compose)
    problems = compose_problems(compose, QUEUES)
    assert any(expected in problem for problem in problems), problems


def test_a_worker_prometheus_does_not_scrape_is_caught() -> None:
    config = copy.deepcopy(load_yaml(PROMETHEUS))
    config["scrape_configs"][0]["dns_sd_configs"][0]["names"].remove("uploads-worker")
    config["scrape_configs"][0]["honor_labels"] = False
    problems = prometheus_problems(config, load_yaml(COMPOSE))
    assert "worker uploads-worker is not scraped" in problems
    assert any("honor_labels" in p for p in problems), problems


def _first_expr(d: Doc, title: str) -> Doc:
    panel = next(p for p in d["panels"] if p.get("title") == title)
    target: Doc = panel["targets"][0]
    return target


def _replace_expr(d: Doc, title: str, old: str, new: str) -> None:
    target = _first_expr(d, title)
    assert old in target["expr"]
    target["expr"] = target["expr"].replace(old, new)


GRAFANA_BREAKS: list[tuple[str, Mutation, str]] = [
    (
        "renamed metric",
        lambda d: _replace_expr(
            d,
            "Queue latency",
            "stackshift_queue_latency_seconds",
            "stackshift_queue_age_seconds",
        ),
        "stackshift_queue_age_seconds is not",
    ),
    (
        "bare histogram",
        lambda d: _replace_expr(
            d, "Run duration (one attempt)", "_seconds_bucket", "_seconds"
        ),
        "is a histogram",
    ),
    (
        "label it lacks",
        lambda d: _replace_expr(
            d, "Queue latency", 'queue=~"$queue"', 'queue=~"$queue", job=~"$job"'
        ),
        "no label 'job'",
    ),
    (
        "unknown outcome",
        lambda d: _replace_expr(
            d, "Failure rate", 'outcome="failed"', 'outcome="errored"'
        ),
        "never 'errored'",
    ),
    (
        "unknown variable",
        lambda d: _replace_expr(d, "Queue latency", "$queue", "$queues"),
        "$queues is not defined",
    ),
    (
        "no job variable",
        lambda d: d["templating"]["list"].pop(),
        "no template variable 'job'",
    ),
    (
        "duplicate id",
        lambda d: d["panels"][2].update(id=d["panels"][1]["id"]),
        "used twice",
    ),
    (
        "overlap",
        lambda d: d["panels"][2].update(gridPos=dict(d["panels"][1]["gridPos"])),
        "overlaps",
    ),
    (
        "off grid",
        lambda d: d["panels"][1]["gridPos"].update(x=22),
        "off the 24-column grid",
    ),
    ("schema version", lambda d: d.pop("schemaVersion"), "schemaVersion"),
    (
        "fixed datasource",
        lambda d: d["panels"][1].update(
            datasource={"type": "prometheus", "uid": "abc"}
        ),
        "datasource",
    ),
    (
        "metric dropped",
        lambda d: d["panels"].remove(
            next(p for p in d["panels"] if p.get("title") == "Step duration p95 by job")
        ),
        "stackshift_step_duration_seconds is on no panel",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [b[1:] for b in GRAFANA_BREAKS],
    ids=[b[0] for b in GRAFANA_BREAKS],
)
def test_a_broken_dashboard_is_caught(mutate: Mutation, expected: str) -> None:
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    mutate(dashboard)
    problems = structure_problems(dashboard) + metric_problems(dashboard)
    assert any(expected in problem for problem in problems), problems

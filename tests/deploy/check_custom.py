"""Checks on the custom resources: KEDA (deploy/k8s/keda/) and the Prometheus
Operator's PodMonitor (deploy/k8s/monitoring/).

The schema (schemas/crds.yaml) catches unknown or misspelt fields; the rest
checks what a schema cannot: that each ScaledObject watches the stream and
consumer group its target worker actually reads, with thresholds that worker
can reach, and that every reference resolves.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import jsonschema
import yaml

from .check_kubernetes import schema_problems, workloads
from .manifests import (
    CONSUMER_GROUP,
    CRD_SCHEMAS,
    DEFAULT_PREFIX,
    METRICS_PORT,
    Doc,
    WorkerArgs,
    argv,
    containers,
    env_sources,
    find,
    of_kind,
    parse_worker,
    ref,
    resolve_port,
    secret_data,
)

CUSTOM_KINDS = ("ScaledObject", "TriggerAuthentication", "PodMonitor")


@cache
def _schema() -> dict[str, Any]:
    with CRD_SCHEMAS.open() as file:
        schema: dict[str, Any] = yaml.safe_load(file)
    return schema


def crd_schema_problems(doc: Doc) -> list[str]:
    """Validate a custom resource against its entry in schemas/crds.yaml."""
    kind = doc.get("kind")
    if kind not in CUSTOM_KINDS:
        return [f"{ref(doc)}: no schema for this kind"]
    schema = {**_schema(), "$ref": f"#/$defs/{kind}"}
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{ref(doc)}: {'/'.join(map(str, error.absolute_path)) or '.'}: {error.message}"
        for error in sorted(
            validator.iter_errors(doc), key=lambda e: list(e.absolute_path)
        )
    ]


def keda_problems(docs: Sequence[Doc], version: str) -> list[str]:
    problems: list[str] = []
    scaled = of_kind(docs, "ScaledObject")
    if not scaled:
        return ["no ScaledObject in the manifests"]
    for doc in [*scaled, *of_kind(docs, "TriggerAuthentication")]:
        problems += crd_schema_problems(doc)
    if problems:
        return problems
    for doc in of_kind(docs, "TriggerAuthentication"):
        problems += _secret_ref_problems(docs, doc)
    for doc in scaled:
        problems += _scaled_object_problems(docs, doc, version)
    return problems


def _secret_ref_problems(docs: Sequence[Doc], auth: Doc) -> list[str]:
    problems = []
    for target in auth["spec"].get("secretTargetRef", []):
        secret = find(docs, "Secret", target["name"])
        if secret is None or target["key"] not in secret_data(secret):
            problems.append(
                f"{ref(auth)}: Secret {target['name']}/{target['key']} is not defined"
            )
    return problems


def _scaled_object_problems(docs: Sequence[Doc], doc: Doc, version: str) -> list[str]:
    spec = doc["spec"]
    target_ref = spec["scaleTargetRef"]
    target = find(docs, target_ref.get("kind", "Deployment"), target_ref["name"])
    if target is None:
        return [f"{ref(doc)}: scale target {target_ref['name']} is not defined"]
    problems = []
    if spec.get("minReplicaCount", 0) < 1:
        problems.append(
            f"{ref(doc)}: minReplicaCount must be at least 1: only running workers move "
            "delayed runs, retries and cron ticks into the stream the scaler watches"
        )
    if spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
        problems.append(f"{ref(doc)}: minReplicaCount is above maxReplicaCount")
    if "replicas" in target["spec"]:
        problems.append(
            f"{ref(target)}: sets replicas, which KEDA owns (every apply resets it)"
        )
    problems += _behavior_problems(doc, version)
    workers = [
        (container, worker)
        for container in containers(target)
        if (worker := parse_worker(argv(container))) is not None
    ]
    if not workers:
        return [
            *problems,
            f"{ref(doc)}: target {ref(target)} runs no stackshift worker",
        ]
    for trigger in spec["triggers"]:
        problems += _trigger_problems(docs, doc, trigger, workers)
    return problems


def _behavior_problems(doc: Doc, version: str) -> list[str]:
    """The HPA behavior KEDA passes on, validated inside an autoscaling/v2 HPA."""
    config = doc["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {})
    if "behavior" not in config:
        return []
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": doc["metadata"]["name"]},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": "x",
            },
            "maxReplicas": 1,
            "behavior": config["behavior"],
        },
    }
    return [
        f"{ref(doc)}: advanced.horizontalPodAutoscalerConfig: {p}"
        for p in schema_problems(hpa, version)
    ]


def _trigger_problems(
    docs: Sequence[Doc], doc: Doc, trigger: Doc, workers: list[tuple[Doc, WorkerArgs]]
) -> list[str]:
    if trigger["type"] != "redis-streams":
        return [f"{ref(doc)}: trigger type {trigger['type']} is not redis-streams"]
    meta = trigger["metadata"]
    name = f"{ref(doc)} trigger {trigger.get('name', trigger['type'])}"
    problems = _scale_factor_problems(name, meta)
    container, worker = workers[0]
    env = env_sources(docs, container)
    prefix = str(env.get("STACKSHIFT_PREFIX", {}).get("value", DEFAULT_PREFIX))
    streams = {f"{prefix}{{{queue}}}:stream": queue for queue in worker.queues}
    if meta["stream"] not in streams:
        problems.append(
            f"{name}: stream {meta['stream']} is none of the worker's: {sorted(streams)}"
        )
    if "consumerGroup" in meta and meta["consumerGroup"] != CONSUMER_GROUP:
        problems.append(
            f"{name}: consumerGroup {meta['consumerGroup']} is not {CONSUMER_GROUP}"
        )
    pending = int(meta.get("pendingEntriesCount", 0))
    if pending >= worker.concurrency:
        problems.append(
            f"{name}: pendingEntriesCount {pending} is not below --concurrency "
            f"{worker.concurrency}; a replica never holds more, so it would never scale up"
        )
    for key in (
        "addressFromEnv",
        "hostFromEnv",
        "portFromEnv",
        "passwordFromEnv",
        "usernameFromEnv",
    ):
        if key in meta and meta[key] not in env:
            problems.append(
                f"{name}: {key} {meta[key]} is not set in the target's {container['name']} container"
            )
    problems += _auth_problems(docs, name, trigger)
    return problems


def _scale_factor_problems(name: str, meta: dict[str, str]) -> list[str]:
    """KEDA picks one measure per trigger and ignores the others' thresholds:
    with consumerGroup, lagCount or else pendingEntriesCount; without, streamLength."""
    if "consumerGroup" in meta:
        ignored = {"streamLength"} | (
            {"pendingEntriesCount"} if "lagCount" in meta else set()
        )
    else:
        ignored = {"pendingEntriesCount", "lagCount"}
    return [
        f"{name}: {key} is ignored by KEDA here"
        for key in sorted(ignored & meta.keys())
    ]


def _auth_problems(docs: Sequence[Doc], name: str, trigger: Doc) -> list[str]:
    auth_ref = trigger.get("authenticationRef")
    if auth_ref is None:
        if "passwordFromEnv" in trigger["metadata"]:
            return []
        return [
            f"{name}: no authenticationRef or passwordFromEnv for the Redis password"
        ]
    auth = find(docs, auth_ref.get("kind", "TriggerAuthentication"), auth_ref["name"])
    if auth is None:
        return [f"{name}: TriggerAuthentication {auth_ref['name']} is not defined"]
    parameters = {t["parameter"] for t in auth["spec"].get("secretTargetRef", [])}
    if "password" not in parameters:
        return [f"{name}: {ref(auth)} supplies no `password`"]
    return []


def podmonitor_problems(docs: Sequence[Doc]) -> list[str]:
    """PodMonitors select the worker pods and scrape their metrics port, keeping
    the metrics' own `job` label (honorLabels)."""
    monitors = of_kind(docs, "PodMonitor")
    problems = [p for doc in monitors for p in crd_schema_problems(doc)]
    if problems:
        return problems
    worker_pods = [
        doc
        for doc in workloads(docs)
        if any(parse_worker(argv(c)) for c in containers(doc))
    ]
    for monitor in monitors:
        selector = monitor["spec"]["selector"].get("matchLabels", {})
        pods = [
            doc
            for doc in worker_pods
            if all(
                doc["spec"]["template"]["metadata"]["labels"].get(k) == v
                for k, v in selector.items()
            )
        ]
        if len(pods) != len(worker_pods):
            problems.append(f"{ref(monitor)}: selector {selector} misses worker pods")
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            port = endpoint.get("port", endpoint.get("portNumber"))
            ports = {resolve_port(c, port) for doc in pods for c in containers(doc)}
            if ports != {METRICS_PORT}:
                problems.append(
                    f"{ref(monitor)}: port {port} is not {METRICS_PORT} on every worker"
                )
            if endpoint.get("path", "/metrics") != "/metrics":
                problems.append(
                    f"{ref(monitor)}: path {endpoint['path']} is not /metrics"
                )
            if endpoint.get("honorLabels") is not True:
                problems.append(
                    f"{ref(monitor)}: honorLabels must be true, or Prometheus renames "
                    "stackshift's `job` label to exported_job"
                )
    return problems

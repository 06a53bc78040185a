"""Checks on the Kubernetes manifests in deploy/k8s/ (core kinds).

Each function returns the problems it finds, one line each, empty when all is
well, so a test can run it on the real manifests and on broken copies.
"""

from __future__ import annotations

from collections.abc import Sequence

import kubernetes_validate

from .manifests import (
    HAND_BACK_MARGIN,
    LIVENESS_PATH,
    METRICS_PORT,
    READINESS_PATH,
    Doc,
    argv,
    containers,
    env_sources,
    find,
    is_core,
    of_kind,
    parse_worker,
    pod_template,
    redis_address,
    ref,
    resolve_port,
    secret_data,
)


def schema_problems(doc: Doc, version: str) -> list[str]:
    """kubernetes-validate, strict (unknown fields are errors), offline."""
    if not is_core(doc):
        return []
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:  # a jsonschema error
        where = "/".join(map(str, exc.absolute_path)) or "."
        return [f"{ref(doc)}: {where}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{ref(doc)}: no schema: {exc}"]
    return []


def workloads(docs: Sequence[Doc]) -> list[Doc]:
    return [doc for doc in docs if is_core(doc) and pod_template(doc) is not None]


def workload_problems(docs: Sequence[Doc]) -> list[str]:
    """Every workload: selector, non-root, resources, and the Secrets and
    ConfigMaps it reads exist in the manifests with those keys."""
    problems: list[str] = []
    for doc in workloads(docs):
        problems += _selector_problems(doc)
        problems += _security_problems(doc)
        for container in containers(doc):
            problems += _resource_problems(doc, container)
            problems += _reference_problems(docs, doc, container)
    return problems


def _selector_problems(doc: Doc) -> list[str]:
    selector = doc["spec"].get("selector", {}).get("matchLabels", {})
    labels = doc["spec"]["template"].get("metadata", {}).get("labels", {})
    if not selector or any(labels.get(k) != v for k, v in selector.items()):
        return [f"{ref(doc)}: selector {selector} does not match the pod labels"]
    return []


def _security_problems(doc: Doc) -> list[str]:
    pod = doc["spec"]["template"]["spec"]
    problems = []
    for container in pod.get("containers", []):
        context = {
            **pod.get("securityContext", {}),
            **container.get("securityContext", {}),
        }
        if context.get("runAsNonRoot") is not True or not context.get("runAsUser"):
            problems.append(f"{ref(doc)}: {container['name']} may run as root")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(
                f"{ref(doc)}: {container['name']} allows privilege escalation"
            )
    return problems


def _resource_problems(doc: Doc, container: Doc) -> list[str]:
    resources = container.get("resources", {})
    requests, limits = resources.get("requests", {}), resources.get("limits", {})
    if {"cpu", "memory"} <= requests.keys() and "memory" in limits:
        return []
    return [
        f"{ref(doc)}: {container['name']} needs cpu/memory requests and a memory limit"
    ]


def _reference_problems(docs: Sequence[Doc], doc: Doc, container: Doc) -> list[str]:
    problems = []
    for entry in container.get("env", []):
        source = entry.get("valueFrom", {})
        for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
            if key in source:
                target = find(docs, kind, source[key]["name"])
                if target is None or source[key]["key"] not in secret_data(target):
                    problems.append(
                        f"{ref(doc)}: {entry['name']} reads {kind} "
                        f"{source[key]['name']}/{source[key]['key']}, which is not defined"
                    )
    for source in container.get("envFrom", []):
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if key in source and find(docs, kind, source[key]["name"]) is None:
                problems.append(
                    f"{ref(doc)}: envFrom {kind} {source[key]['name']} is not defined"
                )
    if "STACKSHIFT_REDIS_URL" not in env_sources(docs, container):
        problems.append(f"{ref(doc)}: {container['name']} has no STACKSHIFT_REDIS_URL")
    return problems


def worker_problems(docs: Sequence[Doc]) -> list[str]:
    """Workers: metrics on 9464, liveness on /healthz and readiness on /readyz
    there, and time to drain before SIGKILL (terminationGracePeriodSeconds above
    the worker's --grace-period, with room for the hand-back)."""
    problems: list[str] = []
    found = 0
    for doc in workloads(docs):
        for container in containers(doc):
            worker = parse_worker(argv(container))
            if worker is None:
                continue
            found += 1
            name = f"{ref(doc)} {container['name']}"
            if worker.metrics_port != METRICS_PORT:
                problems.append(
                    f"{name}: --metrics-port is {worker.metrics_port}, not {METRICS_PORT}"
                )
            problems += _probe_problems(name, container, "livenessProbe", LIVENESS_PATH)
            problems += _probe_problems(
                name, container, "readinessProbe", READINESS_PATH
            )
            stop = doc["spec"]["template"]["spec"].get(
                "terminationGracePeriodSeconds", 30
            )
            if stop < worker.grace_period + HAND_BACK_MARGIN:
                problems.append(
                    f"{name}: terminationGracePeriodSeconds {stop} leaves no time past "
                    f"--grace-period {worker.grace_period:g} (need at least "
                    f"{worker.grace_period + HAND_BACK_MARGIN:g})"
                )
    return problems if found else ["no `stackshift worker` container in the manifests"]


def _probe_problems(name: str, container: Doc, probe: str, path: str) -> list[str]:
    http = container.get(probe, {}).get("httpGet")
    if http is None:
        return [f"{name}: no {probe} with httpGet {path}"]
    problems = []
    if http.get("path") != path:
        problems.append(f"{name}: {probe} path is {http.get('path')}, not {path}")
    port = resolve_port(container, http.get("port"))
    if port != METRICS_PORT:
        problems.append(
            f"{name}: {probe} port {http.get('port')} is {port}, not {METRICS_PORT}"
        )
    return problems


def service_problems(docs: Sequence[Doc]) -> list[str]:
    """Every Service selects pods of a workload here, on a port they declare."""
    problems = []
    for service in of_kind(docs, "Service"):
        selector = service["spec"].get("selector", {})
        pods = [
            doc
            for doc in workloads(docs)
            if selector
            and all(
                doc["spec"]["template"].get("metadata", {}).get("labels", {}).get(k)
                == v
                for k, v in selector.items()
            )
        ]
        if not pods:
            problems.append(f"{ref(service)}: selector {selector} matches no pods")
            continue
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port.get("port"))
            if not any(resolve_port(c, target) for p in pods for c in containers(p)):
                problems.append(
                    f"{ref(service)}: targetPort {target} is not a container port"
                )
    return problems


def connection_problems(docs: Sequence[Doc]) -> list[str]:
    """The Redis Secret's URL, its password and the ConfigMap's REDIS_ADDRESS
    (KEDA's view of the same Redis) agree."""
    secret = find(docs, "Secret", "stackshift-redis")
    config = find(docs, "ConfigMap", "stackshift")
    if secret is None or config is None:
        return ["Secret stackshift-redis and ConfigMap stackshift must be defined"]
    data = secret_data(secret)
    if "url" not in data:
        return [f"{ref(secret)}: no `url`"]
    address, password = redis_address(data["url"])
    problems = []
    if password != data.get("password"):
        problems.append(f"{ref(secret)}: the password in `url` and `password` differ")
    if config.get("data", {}).get("REDIS_ADDRESS") != address:
        problems.append(
            f"{ref(config)}: REDIS_ADDRESS is not {address}, the host of `url`"
        )
    return problems

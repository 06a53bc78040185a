"""Reading deploy/: YAML documents, pod specs, worker command lines, durations.

The constants are the worker's side of the contract (DESIGN.md §7 and the
defaults of ``stackshift worker``) that every file in deploy/ must agree with.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
GRAFANA_DASHBOARD = DEPLOY / "grafana" / "stackshift-dashboard.json"
CRD_SCHEMAS = Path(__file__).resolve().parent / "schemas" / "crds.yaml"

METRICS_PORT = 9464
LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"
DEFAULT_GRACE_PERIOD = 25.0  # stackshift worker --grace-period
DEFAULT_CONCURRENCY = 10  # stackshift worker --concurrency
DEFAULT_PREFIX = "stackshift:"
CONSUMER_GROUP = "stackshift"
# What a stop timeout must leave past --grace-period: after the grace period
# the worker still hands the unfinished runs back to Redis, then exits.
HAND_BACK_MARGIN = 5.0

Doc = dict[str, Any]

# `stackshift worker` options that take a value (the rest are flags).
_WORKER_VALUE_OPTIONS = {
    "--queue": "queue",
    "-q": "queue",
    "--concurrency": "concurrency",
    "-c": "concurrency",
    "--grace-period": "grace_period",
    "--metrics-port": "metrics_port",
    "--lease-timeout": "lease_timeout",
    "--name": "name",
    "--health-file": "health_file",
    "--log-format": "log_format",
    "--log-level": "log_level",
    "--loop": "loop",
}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}


def load_documents(path: Path) -> list[Doc]:
    """Every non-empty YAML document of ``path``."""
    with path.open() as file:
        return [doc for doc in yaml.safe_load_all(file) if doc is not None]


def load_yaml(path: Path) -> Doc:
    with path.open() as file:
        value = yaml.safe_load(file)
    assert isinstance(value, dict), f"{path}: not a mapping"
    return value


def core_manifest_files() -> list[Path]:
    """deploy/k8s/*.yaml: what `kubectl apply -f deploy/k8s/` applies."""
    return sorted(K8S.glob("*.yaml"))


def all_manifest_files() -> list[Path]:
    """Every manifest, the custom resources in deploy/k8s/*/ included."""
    return sorted(K8S.rglob("*.yaml"))


def k8s_documents() -> list[Doc]:
    return [doc for path in all_manifest_files() for doc in load_documents(path)]


def is_core(doc: Doc) -> bool:
    """A built-in Kubernetes kind (kubernetes-validate has its schema)."""
    group = str(doc.get("apiVersion", "")).rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def ref(doc: Doc) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def find(docs: Sequence[Doc], kind: str, name: str) -> Doc | None:
    for doc in docs:
        if doc.get("kind") == kind and doc.get("metadata", {}).get("name") == name:
            return doc
    return None


def of_kind(docs: Sequence[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc.get("kind") == kind]


def pod_template(doc: Doc) -> Doc | None:
    """The pod template of a workload (Deployment, StatefulSet, ...), else None."""
    template = doc.get("spec", {}).get("template")
    return template if isinstance(template, dict) else None


def containers(doc: Doc) -> list[Doc]:
    template = pod_template(doc)
    return list(template["spec"].get("containers", [])) if template else []


def argv(container: Doc) -> list[str]:
    return [
        str(arg) for arg in [*container.get("command", []), *container.get("args", [])]
    ]


def resolve_port(container: Doc, port: object) -> int | None:
    """A probe's or a Service's port (number or name) as a number of ``container``."""
    if isinstance(port, int):
        return port
    for declared in container.get("ports", []):
        if declared.get("name") == port:
            return int(declared["containerPort"])
    return None


def env_sources(docs: Sequence[Doc], container: Doc) -> dict[str, Doc]:
    """Variable name -> its ``env`` entry, with the keys of ``envFrom`` sources
    defined here added as entries too (with their ``value`` for a ConfigMap)."""
    found: dict[str, Doc] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            doc = find(docs, "ConfigMap", source["configMapRef"]["name"]) or {}
            data = doc.get("data", {})
            found.update({name: {"name": name, "value": data[name]} for name in data})
        if "secretRef" in source:
            doc = find(docs, "Secret", source["secretRef"]["name"]) or {}
            found.update({name: {"name": name} for name in secret_data(doc)})
    found.update({entry["name"]: entry for entry in container.get("env", [])})
    return found


def secret_data(doc: Doc) -> dict[str, str]:
    """A Secret's values (``stringData`` as written; ``data`` is base64, left as is)."""
    return {**doc.get("data", {}), **doc.get("stringData", {})}


def redis_address(url: str) -> tuple[str, str | None]:
    """``host:port`` and password of a redis:// URL."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}", parts.password


@dataclass(frozen=True)
class WorkerArgs:
    """The options of one ``stackshift worker`` command line."""

    app: str
    queues: tuple[str, ...]
    concurrency: int
    grace_period: float
    metrics_port: int | None


def command_words(command: object) -> list[str]:
    """A compose ``command`` (string or list) as a list of words."""
    if isinstance(command, str):
        return shlex.split(command)
    if isinstance(command, list):
        return [str(word) for word in command]
    return []


def _options(words: Sequence[str]) -> Iterator[tuple[str, str]]:
    """(option, value) pairs and ("", positional) of a command line's words."""
    index = 0
    while index < len(words):
        word = words[index]
        name, equals, value = word.partition("=")
        if word.startswith("-") and name in _WORKER_VALUE_OPTIONS:
            if not equals:
                index += 1
                if index == len(words):
                    raise ValueError(f"{name} without a value")
                value = words[index]
            yield _WORKER_VALUE_OPTIONS[name], value
        elif not word.startswith("-"):
            yield "", word
        index += 1


def parse_worker(words: Sequence[str]) -> WorkerArgs | None:
    """The options of a ``stackshift worker`` command line; None for any other."""
    if len(words) < 2 or Path(words[0]).name != "stackshift" or words[1] != "worker":
        return None
    values: dict[str, list[str]] = {}
    for option, value in _options(words[2:]):
        values.setdefault(option, []).append(value)
    port = values.get("metrics_port", [None])[-1]
    return WorkerArgs(
        app=values.get("", [""])[0],
        queues=tuple(values.get("queue", ["default"])),
        concurrency=int(values.get("concurrency", [DEFAULT_CONCURRENCY])[-1]),
        grace_period=float(values.get("grace_period", [DEFAULT_GRACE_PERIOD])[-1]),
        metrics_port=int(port) if port is not None else None,
    )


def option_value(words: Sequence[str], option: str) -> str | None:
    """The value of ``option`` (``--opt V`` or ``--opt=V``) in a command line."""
    for index, word in enumerate(words):
        if word == option and index + 1 < len(words):
            return words[index + 1]
        if word.startswith(option + "="):
            return word.partition("=")[2]
    return None


def parse_duration(text: object) -> float:
    """Seconds in a compose duration (``40s``, ``1m30s``, ``500ms``)."""
    if isinstance(text, int | float):
        return float(text)
    value = str(text)
    matches = list(_DURATION_RE.finditer(value))
    if not matches or "".join(m.group(0) for m in matches) != value:
        raise ValueError(f"not a duration: {value!r}")
    return sum(float(m.group(1)) * _DURATION_UNITS[m.group(2)] for m in matches)

"""Checks on deploy/compose.yaml and the Prometheus configuration beside it.

No Docker engine runs here, so `docker compose config` cannot be asked: the
file is parsed with PyYAML (which resolves the `<<: *anchor` merges the way
compose does) and checked for what the deployment needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema

from .manifests import (
    HAND_BACK_MARGIN,
    LIVENESS_PATH,
    METRICS_PORT,
    READINESS_PATH,
    Doc,
    WorkerArgs,
    command_words,
    option_value,
    parse_duration,
    parse_worker,
)

# The service keys this project's compose file may use: a misspelt key
# (`stop_grace_perod`) would be an error for compose, so it is one here too.
_SERVICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        key: {}
        for key in (
            "build image command entrypoint environment env_file depends_on restart "
            "stop_grace_period stop_signal healthcheck ports expose volumes profiles "
            "deploy labels user working_dir read_only tmpfs networks init logging"
        ).split()
    }
    | {
        "healthcheck": {
            "type": "object",
            "required": ["test"],
            "properties": {
                key: {}
                for key in "test interval timeout retries start_period start_interval disable".split()
            },
            "additionalProperties": False,
        }
    },
    "additionalProperties": False,
}


def services(compose: Doc) -> dict[str, Doc]:
    found = compose.get("services")
    return dict(found) if isinstance(found, Mapping) else {}


def workers(compose: Doc) -> dict[str, WorkerArgs]:
    """Service name -> its `stackshift worker` options."""
    found = {}
    for name, service in services(compose).items():
        worker = parse_worker(command_words(service.get("command")))
        if worker is not None:
            found[name] = worker
    return found


def compose_problems(compose: Doc, queues: tuple[str, ...]) -> list[str]:
    """Redis durable, every documented queue served, workers observable and
    given time to drain, the API and dashboard present, ports kept local."""
    problems = [
        f"service {name}: {error.message}"
        for name, service in services(compose).items()
        for error in jsonschema.Draft202012Validator(_SERVICE_SCHEMA).iter_errors(
            service
        )
    ]
    problems += redis_problems(compose)
    found = workers(compose)
    served = {queue for worker in found.values() for queue in worker.queues}
    problems += [
        f"no worker serves queue {queue}" for queue in queues if queue not in served
    ]
    for name, worker in found.items():
        problems += _worker_problems(name, services(compose)[name], worker)
    problems += _app_problems(compose)
    problems += _port_problems(compose)
    return problems


def redis_settings(service: Doc) -> dict[str, str]:
    """`--name value` pairs of a redis-server command line."""
    words = command_words(service.get("command"))
    return {
        word[2:]: words[index + 1]
        for index, word in enumerate(words[:-1])
        if word.startswith("--")
    }


def redis_problems(compose: Doc) -> list[str]:
    redis = services(compose).get("redis")
    if redis is None:
        return ["no `redis` service"]
    problems = []
    if not str(redis.get("image", "")).startswith("redis:7"):
        problems.append(f"redis image {redis.get('image')} is not Redis 7")
    settings = redis_settings(redis)
    for key, value in (
        ("appendonly", "yes"),
        ("appendfsync", "everysec"),
        ("maxmemory-policy", "noeviction"),
    ):
        if settings.get(key) != value:
            problems.append(f"redis: --{key} is {settings.get(key)}, not {value}")
    if not any(str(volume).endswith(":/data") for volume in redis.get("volumes", [])):
        problems.append(
            "redis: no volume on /data, so the AOF does not outlive the container"
        )
    return problems


def _worker_problems(name: str, service: Doc, worker: WorkerArgs) -> list[str]:
    problems = []
    if worker.metrics_port != METRICS_PORT:
        problems.append(
            f"{name}: --metrics-port is {worker.metrics_port}, not {METRICS_PORT}"
        )
    probe = " ".join(command_words(service.get("healthcheck", {}).get("test")))
    if not any(
        f":{METRICS_PORT}{path}" in probe for path in (READINESS_PATH, LIVENESS_PATH)
    ):
        problems.append(
            f"{name}: the healthcheck does not ask :{METRICS_PORT}{READINESS_PATH}"
        )
    try:
        stop = parse_duration(service.get("stop_grace_period", "10s"))
    except ValueError as exc:
        return [*problems, f"{name}: stop_grace_period: {exc}"]
    if stop < worker.grace_period + HAND_BACK_MARGIN:
        problems.append(
            f"{name}: stop_grace_period {stop:g} s leaves no time past "
            f"--grace-period {worker.grace_period:g} s"
        )
    return problems


def _app_problems(compose: Doc) -> list[str]:
    commands = [command_words(s.get("command")) for s in services(compose).values()]
    problems = []
    if not any(words[:2] == ["uvicorn", "workers.api:api"] for words in commands):
        problems.append("no service runs the example API (uvicorn workers.api:api)")
    dashboards = [w for w in commands if w[:2] == ["stackshift", "dashboard"]]
    if not dashboards:
        problems.append("no service runs `stackshift dashboard`")
    if any(option_value(words, "--host") != "0.0.0.0" for words in dashboards):
        problems.append(
            "the dashboard binds 127.0.0.1 inside its container: pass --host 0.0.0.0"
        )
    return problems


def _port_problems(compose: Doc) -> list[str]:
    """Published ports listen on the host's loopback only: the compose Redis has
    no password and the dashboard no login."""
    problems = []
    for name, service in services(compose).items():
        for port in service.get("ports", []):
            host_ip = (
                port.get("host_ip")
                if isinstance(port, dict)
                else str(port).split(":")[0]
            )
            if host_ip != "127.0.0.1":
                problems.append(f"{name}: port {port} is published beyond 127.0.0.1")
    return problems


def prometheus_problems(config: Doc, compose: Doc) -> list[str]:
    """The scrape configuration reaches every compose worker on its metrics port
    and keeps stackshift's own `job` label (honor_labels)."""
    problems = []
    scraped: set[str] = set()
    for job in config.get("scrape_configs", []):
        targets = [
            (name, sd.get("port"))
            for sd in job.get("dns_sd_configs", [])
            for name in sd.get("names", [])
        ] + [
            tuple(target.rsplit(":", 1))
            for static in job.get("static_configs", [])
            for target in static.get("targets", [])
        ]
        for name, port in targets:
            scraped.add(str(name))
            if int(port or 0) != METRICS_PORT:
                problems.append(
                    f"scrape job {job.get('job_name')}: {name} on port {port}"
                )
        if targets and job.get("honor_labels") is not True:
            problems.append(
                f"scrape job {job.get('job_name')}: honor_labels must be true, or "
                "Prometheus renames stackshift's `job` label to exported_job"
            )
    problems += [
        f"worker {name} is not scraped"
        for name in workers(compose)
        if name not in scraped
    ]
    return problems

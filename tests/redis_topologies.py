"""Real Redis topologies for the tests, started from Debian's redis-server and redis-sentinel: a 3-master Cluster,
a master + replica watched by 3 sentinels, and a TLS server that wants a client certificate and an ACL user.

Every process listens on a free loopback port, lives in the test's temporary directory and is killed when the
test ends. A missing binary skips the test on a workstation and fails it under CI=true, as in conftest.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import free_port


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (make test installs it: scripts/ensure-redis.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(f"NOT CHECKED: {message}")
    return path


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


@dataclass
class Node:
    """One redis-server (or redis-sentinel) process, configured by a file in its own directory."""

    directory: Path
    config: list[str]
    program: str = "redis-server"
    port: int = field(default_factory=free_port)
    client_kwargs: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "redis.conf"
        if not conf.exists():  # a sentinel rewrites its file; a restart keeps what it learned
            lines = ["bind 127.0.0.1", "save ''", "appendonly no", f"dir {self.directory}", *self.config]
            if not any(line.startswith("port ") for line in self.config):
                lines.append(f"port {self.port}")
            conf.write_text("\n".join(lines) + "\n")
        log = open(self.directory / "log.txt", "ab")  # noqa: SIM115 - the process keeps it
        self.process = subprocess.Popen([binary(self.program), str(conf)], stdout=log, stderr=log)
        log.close()
        wait_for(lambda: bool(self.client().ping()), f"{self.program} on port {self.port}")

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, **self.client_kwargs)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


class Topology:
    def __init__(self, directory: Path):
        self.directory = directory
        self.nodes: list[Node] = []

    def node(self, name: str, config: list[str], **kwargs: Any) -> Node:
        node = Node(self.directory / name, config, **kwargs)
        self.nodes.append(node)
        return node

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class Cluster(Topology):
    """Three masters, no replicas; the fixture assigns the 16384 slots in three ranges."""

    def start(self) -> None:
        config = ["cluster-enabled yes", "cluster-config-file nodes.conf", "cluster-node-timeout 5000"]
        masters = [self.node(f"node-{i}", config, port=cluster_port()) for i in range(3)]
        for node in masters:
            node.start()
        for node, (low, high) in zip(masters, ((0, 5460), (5461, 10922), (10923, 16383)), strict=True):
            node.client().execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)
        for node in masters[1:]:
            masters[0].client().execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        wait_for(self._ready, "the cluster to agree on its slots")

    def _ready(self) -> bool:
        for node in self.nodes:
            client = node.client()
            info = client.execute_command("CLUSTER", "INFO").decode()
            if "cluster_state:ok" not in info or "cluster_known_nodes:3" not in info:
                return False
            if len(client.execute_command("CLUSTER", "SLOTS")) != 3:
                return False
        return True

    @property
    def seed_url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def node_id(self, node: Node) -> str:
        return str(node.client().execute_command("CLUSTER", "MYID").decode())

    def owner(self, slot: int) -> Node:
        for low, high, master, *_ in self.nodes[0].client().execute_command("CLUSTER", "SLOTS"):
            if low <= slot <= high:
                return next(n for n in self.nodes if n.port == int(master[1]))
        raise LookupError(slot)

    def migrate(self, slot: int, target: Node, between_steps: Callable[[], None] = lambda: None) -> None:
        """Move one slot with its keys the way a resharding tool does: IMPORTING/MIGRATING (clients get ASK),
        MIGRATE the keys, then SETSLOT NODE everywhere (clients get MOVED)."""
        source = self.owner(slot)
        source_id, target_id = self.node_id(source), self.node_id(target)
        target.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        between_steps()
        keys = source.client().execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
        if keys:
            source.client().execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
        between_steps()
        for node in self.nodes:
            node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)


class SentinelGroup(Topology):
    """A master and a replica watched by three sentinels under the name `mymaster`."""

    master_name = "mymaster"

    def start(self) -> None:
        # The master refuses writes while no replica is connected: a failover that promotes the replica (which
        # drops its link at once) cannot let the old master accept writes that would be lost when it rejoins.
        # Only the first master has the guard: with one replica, a promoted master has none until the old one
        # is reconfigured, and would refuse writes until then.
        self.master = self.node("master", ["min-replicas-to-write 1", "min-replicas-max-lag 10"])
        self.master.start()
        self.replica = self.node("replica", [f"replicaof 127.0.0.1 {self.master.port}"])
        self.replica.start()
        wait_for(lambda: self.replica.client().info("replication")["master_link_status"] == "up", "replication")
        self.sentinels = []
        for i in range(3):
            sentinel = self.node(
                f"sentinel-{i}",
                [
                    f"sentinel monitor {self.master_name} 127.0.0.1 {self.master.port} 2",
                    f"sentinel down-after-milliseconds {self.master_name} 1000",
                    f"sentinel failover-timeout {self.master_name} 10000",
                    f"sentinel parallel-syncs {self.master_name} 1",
                ],
                program="redis-sentinel",
            )
            sentinel.start()
            self.sentinels.append(sentinel)
        wait_for(self._discovered, "the sentinels to find the replica and each other")

    def _discovered(self) -> bool:
        for sentinel in self.sentinels:
            client = sentinel.client()
            if len(client.execute_command("SENTINEL", "REPLICAS", self.master_name)) != 1:
                return False
            if len(client.execute_command("SENTINEL", "SENTINELS", self.master_name)) != 2:
                return False
        return True

    @property
    def sentinel_arg(self) -> str:
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def master_port(self) -> int:
        _, port = self.sentinels[0].client().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        return int(port)

    def failover(self) -> None:
        """A forced failover: the replica becomes the master, the old master its replica."""
        old = self.master_port()
        self.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", self.master_name)
        wait_for(lambda: self.master_port() != old, "the sentinels to announce the new master")
        demoted = next(n for n in (self.master, self.replica) if n.port == old)
        promoted = next(n for n in (self.master, self.replica) if n.port != old)

        def settled() -> bool:
            info = demoted.client().info("replication")
            return info["role"] == "slave" and info["master_link_status"] == "up" and bool(promoted.client().ping())

        wait_for(settled, "the old master to follow the new one")


@dataclass
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(directory: Path) -> Certificates:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return path

    def write_cert(cert: x509.Certificate, path: Path) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("Tollway test CA"))
        .issuer_name(name("Tollway test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(common: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName]) -> tuple[x509.Certificate, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    server, server_key = leaf(
        "127.0.0.1",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    client, client_key = leaf("tollway-gateway", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return Certificates(
        ca=write_cert(ca, directory / "ca.pem"),
        server_cert=write_cert(server, directory / "server.pem"),
        server_key=write_key(server_key, directory / "server.key"),
        client_cert=write_cert(client, directory / "client.pem"),
        client_key=write_key(client_key, directory / "client.key"),
    )


class TLSServer(Topology):
    """redis-server on TLS only, wanting a client certificate, with an ACL user and the default user off."""

    username = "tollway"
    password = "s3cret-for-tests"

    def start(self) -> None:
        self.certs = make_certificates(self.directory / "pki")
        self.port = free_port()
        self.server = self.node(
            "tls",
            [
                "port 0",
                f"tls-port {self.port}",
                f"tls-cert-file {self.certs.server_cert}",
                f"tls-key-file {self.certs.server_key}",
                f"tls-ca-cert-file {self.certs.ca}",
                "tls-auth-clients yes",
                "user default off",
                f"user {self.username} on >{self.password} ~tollway:* &* +@all",
            ],
            port=self.port,
            client_kwargs={
                "ssl": True,
                "ssl_ca_certs": str(self.certs.ca),
                "ssl_certfile": str(self.certs.client_cert),
                "ssl_keyfile": str(self.certs.client_key),
                "username": self.username,
                "password": self.password,
            },
        )
        self.server.start()

    @property
    def url(self) -> str:
        return f"rediss://{self.username}@127.0.0.1:{self.port}/0"

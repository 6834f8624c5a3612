"""The operator's high-availability parts without a cluster: peering decisions and the readiness endpoint."""

from __future__ import annotations

import datetime

import aiohttp
from tollway_operator import peering
from tollway_operator.options import OperatorOptions
from tollway_operator.readiness import ReadinessServer

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)


def seen(seconds_ago: float, priority: int, lifetime: int = 60) -> dict[str, object]:
    return {
        "priority": priority,
        "lifetime": lifetime,
        "lastseen": (NOW - datetime.timedelta(seconds=seconds_ago)).isoformat(),
    }


def test_a_replica_stands_by_only_for_a_live_peer_with_a_higher_priority() -> None:
    status = {
        "me": seen(1, 5),
        "higher-live": seen(10, 9),
        "higher-dead": seen(120, 50),
        "lower-live": seen(1, 1),
        "same-live": seen(1, 5),
        "broken": {"priority": "x"},
    }
    assert peering.live_peers_above(status, "me", 5, NOW) == ["higher-live"]
    assert peering.live_peers_above(status, "me", 10, NOW) == []
    assert peering.live_peers_above({"naive": {"priority": 9, "lastseen": "2026-01-01T11:59:59"}}, "me", 5, NOW)


def test_replicas_without_an_explicit_priority_do_not_tie() -> None:
    options = OperatorOptions(namespaces=("a",), peering="tollway")
    assert len({peering.effective_priority(options) for _ in range(20)}) > 1
    assert peering.effective_priority(OperatorOptions(namespaces=("a",), peering="tollway", priority=7)) == 7
    assert peering.effective_priority(OperatorOptions(namespaces=("a",))) == 0


def test_peering_objects_live_in_every_watched_namespace_or_cluster_wide() -> None:
    namespaced = peering._paths(OperatorOptions(namespaces=("a", "b"), peering="p"), "p")
    assert [path for path, _ in namespaced] == [
        "/apis/kopf.dev/v1/namespaces/a/kopfpeerings",
        "/apis/kopf.dev/v1/namespaces/b/kopfpeerings",
    ]
    assert namespaced[1][1]["metadata"] == {"name": "p", "namespace": "b"}
    cluster = peering._paths(OperatorOptions(all_namespaces=True, target_namespace="t", peering="p"), "p")
    assert cluster == [
        (
            "/apis/kopf.dev/v1/clusterkopfpeerings",
            {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "p"}},
        )
    ]


async def test_the_readiness_endpoint_answers_what_the_check_says() -> None:
    from conftest import free_port

    answers = [(False, "listing"), (True, "config published")]

    async def check() -> tuple[bool, str]:
        return answers.pop(0)

    port = free_port()
    server = ReadinessServer(f"http://127.0.0.1:{port}/readyz", check)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            for status, reason in ((503, "listing"), (200, "config published")):
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    assert response.status == status
                    assert (await response.json())["reason"] == reason
    finally:
        await server.stop()

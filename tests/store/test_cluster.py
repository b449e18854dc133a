"""Cluster mode's own rules: ``redis+cluster://`` URLs, every run's keys in one hash slot, the
control keys REGISTER and PROMOTE touch in one slot, and a script whose keys span slots refused.

(That every script Outlast runs keeps its keys in one slot is shown by the cluster-marked modules
of tests/core, tests/store, tests/worker and tests/api: they run on a 3-master cluster, whose nodes
refuse CROSSSLOT, and redis-py's cluster client refuses such a call before sending it.)
"""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from outlast.cli.discover import check_redis_url
from outlast.errors import ConfigError, StoreError, StoreUnavailable
from outlast.store import keys
from outlast.store.client import is_cluster, redis_from_url, register_script
from outlast.store.cluster import cluster_url_of, parse_cluster_url
from outlast.store.connect import connect
from outlast.store.embedded import free_port
from outlast.store.embedded_cluster import EmbeddedCluster
from outlast.store.errors import guard


def slot(key: str) -> int:
    return int(key_slot(key.encode()))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://", "names no seed node"),
        ("redis+cluster://u:secret@", "names no seed node"),
        ("redis+cluster://h1:7000,h2", "seed 'h2' is not host:port"),
        ("redis+cluster://h1:port", "seed 'h1:port' is not host:port"),
        ("redis+cluster://h1:7000,,h2:7001", "seed '' is not host:port"),
        ("redis+cluster://h1:70000", "seed 'h1:70000' is not host:port"),
        ("redis+cluster://h1:7000/3", "a cluster has only database 0"),
        ("redis+cluster://h1:7000/?socket_timeout=soon", "Invalid value for 'socket_timeout'"),
        ("redis+cluster://h1:7000/?bogus_option=1", "bogus_option"),
    ],
)
def test_bad_cluster_urls_are_one_line_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        redis_from_url(url)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)
    if "bogus" not in url:  # (the CLI checks the URL's form; the options are checked when connecting)
        with pytest.raises(ConfigError, match=r"^--redis: "):
            check_redis_url(url)


def test_a_password_in_a_cluster_url_is_never_shown() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_cluster_url("rediss+cluster://alice:s3cret@h1:7000/9")
    assert "s3cret" not in str(refused.value)
    assert "alice:***@" in str(refused.value)


def test_cluster_urls_give_seeds_credentials_and_tls() -> None:
    parsed = parse_cluster_url("rediss+cluster://alice:p%40ss@10.0.0.1:7000,[::1]:7001/?socket_timeout=2")
    assert parsed.seeds == [("10.0.0.1", 7000), ("::1", 7001)]
    assert parsed.tls
    assert parsed.options == {"username": "alice", "password": "p@ss", "socket_timeout": 2.0}
    assert check_redis_url("redis+cluster://h1:7000,h2:7000") == "redis+cluster://h1:7000,h2:7000"
    assert not parse_cluster_url("redis+cluster://h1:7000").tls


async def test_an_unreachable_cluster_is_store_unavailable() -> None:
    url = f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    with pytest.raises(StoreUnavailable, match="cannot reach Redis at redis\\+cluster://"):
        async with connect(url):
            pass


async def test_connect_reaches_a_cluster_and_hands_on_its_url(valkey_cluster: EmbeddedCluster) -> None:
    async with connect(valkey_cluster.url) as client:
        assert is_cluster(client)
        await client.set("k", "v")
        again = redis_from_url(cluster_url_of(client))  # (what the heartbeat thread and launched runs use)
        try:
            assert await again.get("k") == b"v"
        finally:
            await again.aclose()
            await client.delete("k")


def test_every_key_of_a_run_is_in_its_slot() -> None:
    for run_id in ("r1", "01JD0000000000000000000000", "a.b:c-d_e"):
        run = keys.run_keys(run_id)
        assert {slot(k) for k in [*run.all(), keys.exported_spans(run_id)]} == {slot(run.meta)}


def test_the_control_keys_scripts_touch_together_share_a_slot() -> None:
    register = [keys.workflows_key("v1"), keys.WORKERS, keys.VERSIONS, keys.DEPLOY]  # REGISTER
    promote = [keys.DEPLOY, keys.VERSIONS]  # PROMOTE
    assert {slot(k) for k in register + promote} == {slot(keys.DEPLOY)}
    assert keys.DEPLOY == "outlast:deploy"  # (unchanged: it holds the active/previous versions)
    llm = [keys.llm_window_key("p", "m"), keys.llm_cost_key("p", "m"), keys.llm_concurrency_key("p", "m")]
    assert len({slot(k) for k in llm}) == 1


@pytest.mark.cluster
async def test_a_script_whose_keys_span_slots_is_refused(redis_url: str) -> None:
    client = redis_from_url(redis_url)
    try:
        script = register_script(client, "return #KEYS")
        assert await guard(script(keys=["a{x}", "b{x}"])) == 2
        spanning = [keys.run_keys("one").meta, keys.run_keys("two").meta]
        if is_cluster(client):
            assert slot(spanning[0]) != slot(spanning[1])
            with pytest.raises(StoreError, match="same key slot"):
                await guard(script(keys=spanning))
        else:
            assert await guard(script(keys=spanning)) == 2  # one server: any keys
    finally:
        await client.aclose()

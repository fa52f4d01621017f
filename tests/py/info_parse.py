"""INFO of rustproxy through redis-py's own INFO parser, over RESP2 and RESP3.
Usage: python3 info_parse.py PORT. Exits non-zero (with a traceback) on any failure.
"""
import sys

import redis


def check(r, tag):
    # Traffic so that commandstats / latencystats have rows.
    r.set("py:info:" + tag, "1")
    assert r.get("py:info:" + tag) == b"1"

    info = r.info()
    for key in ("redis_version", "process_id", "tcp_port", "connected_clients",
                "total_commands_processed", "role"):
        assert key in info, (tag, key, sorted(info))
    assert isinstance(info["connected_clients"], int), info["connected_clients"]
    assert info["connected_clients"] >= 1
    assert isinstance(info["total_commands_processed"], int)
    assert info["role"] == "master", info["role"]
    # The proxy's own sections are not in the default INFO (it reads like one Redis's).
    assert "backend0" not in info and "rustproxy_version" not in info, sorted(info)
    # The Backends section: backendN:k=v,... is parsed into a dict by redis-py.
    b0 = r.info("backends").get("backend0")
    assert isinstance(b0, dict), (tag, b0)
    for key in ("pool", "name", "addr", "state", "requests", "replies", "latency_p50_usec"):
        assert key in b0, (tag, key, b0)
    assert isinstance(b0["requests"], int), b0

    full = r.info("all")
    assert "redis_version" in full
    cs = full.get("cmdstat_get")
    assert isinstance(cs, dict), (tag, cs)
    assert cs["calls"] >= 1 and "failed_calls" in cs and "rejected_calls" in cs, cs
    lat = full.get("latency_percentiles_usec_get")
    assert isinstance(lat, dict), (tag, lat)
    for key in ("p50", "p99", "p99.9"):
        assert key in lat, (tag, lat)
    assert lat["p50"] <= lat["p99"] <= lat["p99.9"], lat

    ev = r.info("everything")
    assert "cmdstat_set" in ev, sorted(ev)
    assert "backend0" in full and "rustproxy_version" in full, sorted(full)
    assert "rustproxy_version" in r.info("proxy")

    # Named sections, one and several.
    stats = r.info("stats")
    assert "total_connections_received" in stats and "redis_version" not in stats, stats
    many = r.info("server", "clients")
    assert "redis_version" in many and "connected_clients" in many, many
    assert "total_connections_received" not in many
    cmd = r.info("commandstats")
    assert "cmdstat_get" in cmd, cmd


def main():
    port = int(sys.argv[1])
    check(redis.Redis(port=port, socket_timeout=20), "default")
    check(redis.Redis(port=port, socket_timeout=20, protocol=2), "resp2")
    check(redis.Redis(port=port, socket_timeout=20, protocol=3), "resp3")
    print("ok")


if __name__ == "__main__":
    main()

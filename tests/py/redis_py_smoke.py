"""redis-py against rustproxy with the client's default settings, then with RESP2 and RESP3
forced. Usage: python3 redis_py_smoke.py PORT. Exits non-zero (with a traceback) on any failure.
"""
import sys

import redis


def exercise(r, tag):
    p = f"py:{tag}:"
    assert r.ping() is True
    assert r.set(p + "a", "1") is True
    assert r.get(p + "a") == b"1", r.get(p + "a")
    assert r.get(p + "missing") is None
    keys = [f"{p}k{i}" for i in range(50)]
    assert r.mset({k: f"v{i}" for i, k in enumerate(keys)}) is True
    got = r.mget(keys + [p + "missing"])
    assert got == [f"v{i}".encode() for i in range(50)] + [None], got

    pipe = r.pipeline(transaction=False)
    for i in range(200):
        pipe.set(f"{p}pipe{i}", i)
        pipe.get(f"{p}pipe{i}")
        pipe.incr(f"{p}ctr")
    res = pipe.execute()
    for i in range(200):
        assert res[3 * i] is True
        assert res[3 * i + 1] == str(i).encode()
        assert res[3 * i + 2] == i + 1

    assert r.hset(p + "h", mapping={"f1": "x", "f2": "y"}) == 2
    assert r.hgetall(p + "h") == {b"f1": b"x", b"f2": b"y"}, r.hgetall(p + "h")
    assert r.hget(p + "h", "f1") == b"x"
    assert r.incr(p + "n") == 1
    assert r.incrby(p + "n", 5) == 6
    assert r.exists(p + "a", p + "n", p + "missing") == 2
    assert r.delete(p + "a", p + "n", p + "missing") == 2
    assert r.get(p + "a") is None
    assert r.rpush(p + "l", "a", "b", "c") == 3
    assert r.lrange(p + "l", 0, -1) == [b"a", b"b", b"c"]
    assert r.sadd(p + "s", "a", "b") == 2
    assert r.smembers(p + "s") == {b"a", b"b"}
    assert r.expire(p + "s", 100) is True
    assert 0 < r.ttl(p + "s") <= 100
    assert r.zadd(p + "z", {"a": 1.5, "b": 2}) == 2
    # (RESP3 gives lists, RESP2 tuples: a redis-py difference, same against redis-server.)
    zs = [tuple(x) for x in r.zrange(p + "z", 0, -1, withscores=True)]
    assert zs == [(b"a", 1.5), (b"b", 2.0)], zs

    found = set(r.scan_iter(match=p + "k*", count=100))
    assert found == {k.encode() for k in keys}, (len(found), sorted(found)[:5])

    info = r.info()
    assert isinstance(info, dict) and info, info
    assert r.echo("hello") == b"hello"
    assert r.client_setname("py-" + tag) is True
    assert r.client_getname() in ("py-" + tag, b"py-" + tag.encode())
    assert r.dbsize() > 0
    r.close()


def main():
    port = int(sys.argv[1])
    exercise(redis.Redis(host="127.0.0.1", port=port), "default")
    exercise(redis.Redis(host="127.0.0.1", port=port, protocol=2), "resp2")
    exercise(redis.Redis(host="127.0.0.1", port=port, protocol=3), "resp3")
    # A pool of connections used from one thread, decode_responses as many apps do.
    r = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
    assert r.set("py:dec", "é") is True
    assert r.get("py:dec") == "é"
    r.close()
    print("ok", redis.__version__)


if __name__ == "__main__":
    main()

"""redis-py against rustproxy's stateful commands: pub/sub (default protocol, RESP2 and RESP3),
transactions through pipeline(transaction=True), WATCH. The proxy runs with --hash-tag {}.
Usage: python3 stateful.py PORT. Exits non-zero (with a traceback) on any failure.
"""
import sys
import time

import redis


def next_message(p, want_type=None, deadline_s=10.0):
    """The next message (of type want_type if given), bounded by a deadline."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        m = p.get_message(timeout=0.5)
        if m is None:
            continue
        if want_type is None or m["type"] == want_type:
            return m
        raise AssertionError(f"expected a {want_type} message, got {m!r}")
    raise AssertionError(f"no {want_type or 'any'} message within {deadline_s} s")


def pubsub_checks(port, tag, **kw):
    r = redis.Redis(port=port, **kw)
    pub = redis.Redis(port=port)
    ch = [f"py:{tag}:ch{i}" for i in range(6)]
    p = r.pubsub()
    p.subscribe(*ch)
    counts = []
    for _ in ch:
        m = next_message(p, "subscribe")
        counts.append(m["data"])
    assert counts == list(range(1, len(ch) + 1)), counts
    p.psubscribe(f"py:{tag}:pat*")
    m = next_message(p, "psubscribe")
    assert m["data"] == len(ch) + 1, m

    for i, c in enumerate(ch):
        assert pub.publish(c, f"hi{i}") == 1, c
        m = next_message(p, "message")
        assert m["channel"] == c.encode() and m["data"] == f"hi{i}".encode(), m
    pats = [f"py:{tag}:pat{i}" for i in range(8)]
    for i, c in enumerate(pats):
        assert pub.publish(c, f"p{i}") == 1, c
    got = set()
    for _ in pats:
        m = next_message(p, "pmessage")
        assert m["pattern"] == f"py:{tag}:pat*".encode(), m
        got.add((m["channel"], m["data"]))
    assert got == {(c.encode(), f"p{i}".encode()) for i, c in enumerate(pats)}, got

    # Introspection while subscribed.
    num = dict(pub.pubsub_numsub(*ch))
    assert all(num[c.encode()] == 1 for c in ch), num
    assert pub.pubsub_numpat() >= 1

    p.punsubscribe()
    m = next_message(p, "punsubscribe")
    assert m["data"] == len(ch), m
    p.unsubscribe()
    left = []
    for _ in ch:
        left.append(next_message(p, "unsubscribe")["data"])
    assert sorted(left) == list(range(len(ch))), left
    assert not p.subscribed
    assert pub.publish(ch[0], "nobody") == 0
    p.close()

    # RESP3: pushes and a normal command on the same subscribed connection, via a raw
    # connection of the client so the same socket is used.
    if kw.get("protocol") == 3:
        conn = r.connection_pool.get_connection()
        try:
            conn.send_command("SUBSCRIBE", ch[0])
            m = conn.read_response(push_request=True)
            assert m[0] == b"subscribe" and m[2] == 1, m
            conn.send_command("SET", f"py:{tag}:k", "v")
            assert conn.read_response() in (b"OK", True, "OK"), "SET"
            assert pub.publish(ch[0], "pushed") == 1
            m = conn.read_response(push_request=True)
            assert m == [b"message", ch[0].encode(), b"pushed"], m
            conn.send_command("GET", f"py:{tag}:k")
            assert conn.read_response() == b"v"
            conn.send_command("UNSUBSCRIBE")
            m = conn.read_response(push_request=True)
            assert m[0] == b"unsubscribe" and m[2] == 0, m
        finally:
            r.connection_pool.release(conn)
    r.close()
    pub.close()


def transaction_checks(port, tag, **kw):
    r = redis.Redis(port=port, **kw)
    k = f"{{py{tag}}}k"
    r.delete(k)
    pipe = r.pipeline(transaction=True)
    pipe.set(k, "1").incr(k).incrby(k, 10).get(k)
    res = pipe.execute()
    assert res == [True, 2, 12, b"12"], res

    # Keys on different backends inside a transaction: redis-py raises.
    a, b = None, None
    for i in range(1000):
        name = f"py{tag}x{i}"
        n = r.execute_command("BACKENDNUM", name)
        if a is None:
            a, na = name, n
        elif n != na:
            b = name
            break
    assert b is not None
    pipe = r.pipeline(transaction=True)
    pipe.set(a, "1").set(b, "1")
    try:
        pipe.execute()
        raise AssertionError("cross-backend transaction was not refused")
    except redis.exceptions.ResponseError as e:
        assert "different backends" in str(e) or "EXECABORT" in str(e), str(e)
    assert r.get(a) is None and r.get(b) is None

    # WATCH without conflict.
    w = f"{{py{tag}}}w"
    r.set(w, "0")
    with r.pipeline() as pipe:
        pipe.watch(w)
        cur = int(pipe.get(w))
        pipe.multi()
        pipe.set(w, cur + 1)
        assert pipe.execute() == [True]
    assert r.get(w) == b"1"
    # WATCH with a conflicting write from another client.
    other = redis.Redis(port=port)
    with r.pipeline() as pipe:
        pipe.watch(w)
        cur = int(pipe.get(w))
        other.set(w, "100")
        pipe.multi()
        pipe.set(w, cur + 1)
        try:
            pipe.execute()
            raise AssertionError("WATCH conflict not detected")
        except redis.exceptions.WatchError:
            pass
    assert r.get(w) == b"100"

    # The transaction() helper retries on conflict and succeeds.
    def incr_it(pipe):
        v = int(pipe.get(w))
        pipe.multi()
        pipe.set(w, v + 1)

    r.transaction(incr_it, w)
    assert r.get(w) == b"101"
    other.close()
    r.close()


def main():
    port = int(sys.argv[1])
    pubsub_checks(port, "def")
    pubsub_checks(port, "r2", protocol=2)
    pubsub_checks(port, "r3", protocol=3)
    transaction_checks(port, "def")
    transaction_checks(port, "r2", protocol=2)
    transaction_checks(port, "r3", protocol=3)
    print("ok")


if __name__ == "__main__":
    main()

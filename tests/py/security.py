"""redis-py against rustproxy's security features.

Usage:
  python3 security.py auth PORT         # requirepass "pw", users ro/rw/adm (see tests/security.rs)
  python3 security.py tls PORT CA       # TLS listener, no client certificate
  python3 security.py mtls PORT CA CERT KEY
Exits non-zero (with a traceback) on any failure.
"""
import sys

import redis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError


def expect_error(fn, needle):
    try:
        fn()
    except (ResponseError, AuthenticationError, redis.exceptions.ConnectionError) as e:
        assert needle in str(e), f"expected {needle!r} in {e!r}"
        return
    raise AssertionError(f"expected an error containing {needle!r}")


def auth(port):
    for proto in (2, 3):
        # No credentials: NOAUTH on a command.
        # (RESP3 sends HELLO 3 first, refused like Redis does: "NOAUTH HELLO must be called...")
        r = redis.Redis(port=port, protocol=proto)
        expect_error(lambda: r.get("py:x"),
                     "Authentication required" if proto == 2 else "HELLO must be called")
        r.close()
        # Password only (the default user).
        r = redis.Redis(port=port, password="pw", protocol=proto)
        assert r.ping() is True
        assert r.set(f"py:{proto}:k", "v") is True
        assert r.get(f"py:{proto}:k") == b"v"
        r.close()
        # Wrong password.
        r = redis.Redis(port=port, password="nope", protocol=proto)
        expect_error(lambda: r.ping(), "invalid username-password pair")
        r.close()
        # Named users.
        ro = redis.Redis(port=port, username="ro", password="ropw", protocol=proto)
        assert ro.get(f"py:{proto}:k") == b"v"
        try:
            ro.set(f"py:{proto}:k", "w")
            raise AssertionError("readonly SET succeeded")
        except NoPermissionError as e:
            assert "no permissions to run the 'set' command" in str(e), str(e)
        ro.close()
        rw = redis.Redis(port=port, username="rw", password="rwpw", protocol=proto)
        assert rw.set(f"py:{proto}:k2", "v2") is True
        try:
            rw.flushall()
            raise AssertionError("readwrite FLUSHALL succeeded under admin_commands admin")
        except NoPermissionError as e:
            assert "flushall" in str(e), str(e)
        rw.close()
        adm = redis.Redis(port=port, username="adm", password="admpw", protocol=proto)
        assert adm.set(f"py:{proto}:k3", "v3") is True
        assert adm.flushall() is True
        assert adm.get(f"py:{proto}:k3") is None
        adm.close()
        # Wrong password for an existing named user.
        bad = redis.Redis(port=port, username="ro", password="rwpw", protocol=proto)
        expect_error(lambda: bad.ping(), "invalid username-password pair")
        bad.close()
    print("ok")


def tls(port, ca, cert=None, key=None):
    kw = dict(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=ca, socket_timeout=10)
    if cert:
        kw.update(ssl_certfile=cert, ssl_keyfile=key)
    r = redis.Redis(**kw)
    assert r.ping() is True
    assert r.set("py:tls:k", "v") is True
    assert r.get("py:tls:k") == b"v"
    assert r.mset({f"py:tls:{i}": str(i) for i in range(50)}) is True
    assert r.mget([f"py:tls:{i}" for i in range(50)]) == [str(i).encode() for i in range(50)]
    p = r.pipeline(transaction=False)
    for i in range(300):
        p.incr("py:tls:ctr")
    assert p.execute() == list(range(1, 301))
    big = "x" * 300000
    assert r.set("py:tls:big", big) is True
    assert r.get("py:tls:big") == big.encode()
    r.close()
    print("ok")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "auth":
        auth(int(sys.argv[2]))
    elif mode == "tls":
        tls(int(sys.argv[2]), sys.argv[3])
    elif mode == "mtls":
        tls(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        raise SystemExit(f"unknown mode {mode}")

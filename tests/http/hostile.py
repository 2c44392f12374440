#!/usr/bin/env python3
"""hostile.py - misbehaving HTTP clients for tests/http/test_hostile_conn.sh
and for measuring by hand (stdlib only, loopback).

  hostile.py slowloris PORT N INTERVAL SECONDS [SRC]
      holds N connections from address SRC (default 127.0.0.2), each sending
      one byte of a request head every INTERVAL s, reopening the ones the
      server closes; prints "opened O closed C" at the end.
  hostile.py health PORT N [PAUSE]
      N fresh GET /health, one at a time (from 127.0.0.1); prints
      "ok K failed F p50_ms X max_ms Y" (a failure counts as its time).
  hostile.py trickle PORT INTERVAL LIMIT [SRC]
      one connection sending a request head one byte every INTERVAL s;
      prints the seconds until the server closed it, or "open" after LIMIT s.
  hostile.py send PORT FILE LIMIT
      sends FILE's bytes, reads until the server closes (LIMIT s at most);
      prints "closed|open SECONDS" then the first line of the reply.
  hostile.py halfpost PORT
      sends a POST head with Content-Length 100000 and 10 bytes of body,
      prints "sent", then holds the connection until killed or closed.
"""
import socket
import sys
import time

HEAD = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 4000 + b"\r\n\r\n"


def connect(port, src=None, timeout=2.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if src:
        s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def closed_by_peer(s):
    """True when the server has closed s (without blocking)."""
    try:
        s.setblocking(False)
        b = s.recv(4096)
        return b == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.setblocking(True)


def slowloris(port, n, interval, seconds, src="127.0.0.2"):
    conns = {}  # index -> (socket, bytes sent)
    opened = closed = 0
    end = time.time() + seconds
    while time.time() < end:
        t0 = time.time()
        for i in range(n):
            c = conns.get(i)
            if c and closed_by_peer(c[0]):
                c[0].close()
                closed += 1
                c = None
            if not c:
                try:
                    c = (connect(port, src, 0.5), 0)
                    opened += 1
                except OSError:
                    conns.pop(i, None)
                    continue
            s, k = c
            try:
                s.send(HEAD[k % len(HEAD):k % len(HEAD) + 1])
                conns[i] = (s, k + 1)
            except OSError:
                s.close()
                closed += 1
                conns.pop(i, None)
        time.sleep(max(0.0, interval - (time.time() - t0)))
    print("opened %d closed %d" % (opened, closed))


def health(port, n, pause=0.2):
    lat, ok = [], 0
    for _ in range(n):
        t0 = time.time()
        good = False
        try:
            s = connect(port, None, 2.0)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            r = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                r += b
            s.close()
            good = r.startswith(b"HTTP/1.1 200")
        except OSError:
            pass
        lat.append((time.time() - t0) * 1000)
        ok += good
        time.sleep(pause)
    lat.sort()
    print("ok %d failed %d p50_ms %.1f max_ms %.1f" % (ok, n - ok, lat[len(lat) // 2], lat[-1]))


def trickle(port, interval, limit, src=None):
    s = connect(port, src)
    t0 = time.time()
    k = 0
    while time.time() - t0 < limit:
        try:
            s.send(HEAD[k:k + 1])
        except OSError:
            break
        k += 1
        d = time.time() + interval
        gone = False
        while time.time() < d:
            if closed_by_peer(s):
                gone = True
                break
            time.sleep(0.02)
        if gone:
            break
    if time.time() - t0 >= limit:
        print("open")
    else:
        print("%.2f" % (time.time() - t0))


def send(port, path, limit):
    data = open(path, "rb").read()
    s = connect(port, None, limit)
    t0 = time.time()
    try:
        s.sendall(data)
    except OSError:
        pass
    r = b""
    state = "closed"
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            r += b
    except socket.timeout:
        state = "open"
    except OSError:
        pass
    print("%s %.2f" % (state, time.time() - t0))
    sys.stdout.write(r.decode("latin-1") + "\n")


def halfpost(port):
    s = connect(port, None, None)
    s.sendall(b"POST /extract-features HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
              b"Content-Length: 100000\r\n\r\n" + b"\xff" * 10)
    print("sent", flush=True)
    try:
        while s.recv(4096):
            pass
    except OSError:
        pass


def main(a):
    cmd, port = a[0], int(a[1])
    if cmd == "slowloris":
        slowloris(port, int(a[2]), float(a[3]), float(a[4]), *(a[5:6]))
    elif cmd == "health":
        health(port, int(a[2]), *(float(x) for x in a[3:4]))
    elif cmd == "trickle":
        trickle(port, float(a[2]), float(a[3]), *(a[4:5]))
    elif cmd == "send":
        send(port, a[2], float(a[3]))
    elif cmd == "halfpost":
        halfpost(port)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

#!/usr/bin/env python3
"""A Hugging Face style hub on loopback for tests/cli/test_model.sh.

usage: hub_server.py FIXTURES PORTFILE LOGFILE

Serves, like huggingface.co:
  GET /api/models/OWNER/NAME           {"sha": ..., "siblings": [{"rfilename": ...}]}
  GET /OWNER/NAME/resolve/REV/FILE     small files 200; weights 302 to /cdn/...
                                       with X-Linked-Etag (SHA-256) and X-Linked-Size
  GET /cdn/REPO/FILE                   the bytes, honouring Range (206)
Repos (all from FIXTURES/tiny-clip and FIXTURES/pytorch):
  test/tiny     model.safetensors, 302 to the same host
  test/cut      the first /cdn answer sends half the weights and closes
  test/bad      X-Linked-Etag is the hash of other bytes
  test/bin      only pytorch_model.bin
  test/xhost    302 to http://localhost:PORT (another host than 127.0.0.1)
  private/tiny  401 without "Authorization: Bearer s3cret"
  anything else 404
Each request is logged as one line: METHOD PATH host=HOST auth=AUTH range=RANGE
"""
import hashlib
import http.server
import json
import os
import sys
import threading

FIX, PORTFILE, LOG = sys.argv[1], sys.argv[2], sys.argv[3]
TINY = os.path.join(FIX, "tiny-clip")
SIDE = ["config.json", "preprocessor_config.json", "vocab.json", "merges.txt"]
SHA = "0123456789abcdef0123456789abcdef01234567"


def files_of(repo):
    if repo == "test/bin":
        f = {n: os.path.join(TINY, n) for n in SIDE}
        f["pytorch_model.bin"] = os.path.join(FIX, "pytorch", "tiny-clip", "pytorch_model.bin")
        return f
    if repo in ("test/tiny", "test/cut", "test/bad", "test/xhost", "private/tiny"):
        f = {n: os.path.join(TINY, n) for n in SIDE}
        f["model.safetensors"] = os.path.join(TINY, "model.safetensors")
        return f
    return None


cut_done = set()
lock = threading.Lock()


class Hub(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with lock, open(LOG, "a") as lg:
            lg.write("GET %s host=%s auth=%s range=%s\n" % (
                self.path, self.headers.get("Host", ""),
                self.headers.get("Authorization", "-"), self.headers.get("Range", "-")))
        p = self.path.split("?")[0]
        parts = p.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) == 4:
            return self.listing("/".join(parts[2:]))
        if len(parts) >= 5 and parts[2] == "resolve":
            return self.resolve("/".join(parts[:2]), "/".join(parts[4:]))
        if parts[0] == "cdn" and len(parts) >= 4:
            return self.cdn("/".join(parts[1:3]), "/".join(parts[3:]))
        self.send(404, b'{"error":"not found"}')

    def authorized(self, repo):
        if not repo.startswith("private/"):
            return True
        if self.headers.get("Authorization") == "Bearer s3cret":
            return True
        self.send(401, b'{"error":"Invalid credentials"}')
        return False

    def listing(self, repo):
        f = files_of(repo)
        if f is None:
            return self.send(404, b'{"error":"Repository not found"}')
        if not self.authorized(repo):
            return
        body = json.dumps({"id": repo, "sha": SHA,
                           "siblings": [{"rfilename": n} for n in sorted(f)] +
                                       [{"rfilename": "README.md"}]}).encode()
        self.send(200, body, [("Content-Type", "application/json")])

    def resolve(self, repo, name):
        f = files_of(repo)
        if f is None or name not in f:
            return self.send(404, b"Entry not found")
        if not self.authorized(repo):
            return
        data = open(f[name], "rb").read()
        if not name.endswith((".safetensors", ".bin")):
            return self.send(200, data, [("ETag", '"small"')])
        sha = hashlib.sha256(b"other bytes" if repo == "test/bad" else data).hexdigest()
        host = "localhost:%d" % self.server.server_port if repo == "test/xhost" else \
            self.headers.get("Host")
        loc = ("http://%s/cdn/%s/%s" % (host, repo, name)) if repo == "test/xhost" else \
            ("/cdn/%s/%s" % (repo, name))
        self.send(302, b"", [("Location", loc), ("X-Linked-Etag", '"%s"' % sha),
                             ("X-Linked-Size", str(len(data))), ("X-Repo-Commit", SHA)])

    def cdn(self, repo, name):
        f = files_of(repo)
        if f is None or name not in f:
            return self.send(404, b"")
        data = open(f[name], "rb").read()
        rng = self.headers.get("Range")
        start = 0
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            if start >= len(data):
                return self.send(416, b"")
        if repo == "test/cut":
            with lock:
                first = name not in cut_done
                cut_done.add(name)
            if first:
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
        if start:
            body = data[start:]
            return self.send(206, body, [("Content-Range", "bytes %d-%d/%d" % (
                start, len(data) - 1, len(data)))])
        self.send(200, data)


srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
with open(PORTFILE + ".tmp", "w") as pf:
    pf.write(str(srv.server_port))
os.rename(PORTFILE + ".tmp", PORTFILE)
srv.serve_forever()

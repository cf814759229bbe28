"""A local stand-in for the Hugging Face Hub: enough of its HTTP API (on 127.0.0.1) for huggingface_hub's
``create_repo`` + ``create_commit`` to succeed, so uploads are tested without the network.

Point huggingface_hub at it with ``HF_ENDPOINT=hub.url``.  It answers only requests carrying
``Authorization: Bearer <token>`` (the token must reach it), stores each commit's files in memory,
can fail every request with a status (``fail_status``) and can hold requests until the test lets them
through (``hold()`` / ``release()``: "an upload is in flight").
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Repo:
    private: bool | None
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)


class FakeHub:
    def __init__(self, token: str = "hf_fake_test_token") -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, bool]] = []  # (method, path, authorised)
        self.fail_status: int | None = None
        self._open = threading.Event()
        self._open.set()
        self.waiting = threading.Event()  # set once a request is held at the gate
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_a: Any) -> None:  # quiet
                return

            def do_GET(self) -> None:  # noqa: N802
                hub._handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                hub._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def hold(self) -> None:
        self.waiting.clear()
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def count(self, path_part: str) -> int:
        with self._lock:
            return sum(1 for _m, p, _a in self.requests if path_part in p)

    # ---- the API
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        authorised = h.headers.get("Authorization") == f"Bearer {self.token}"
        with self._lock:
            self.requests.append((method, h.path, authorised))
        if not self._open.is_set():
            self.waiting.set()
            self._open.wait(600)  # a test releases it long before; never forever
        if self.fail_status:
            return self._reply(h, self.fail_status, {"error": f"fake hub: failing with {self.fail_status}"})
        if not authorised:
            return self._reply(h, 401, {"error": "Invalid credentials in Authorization header"})
        path = h.path.split("?", 1)[0]
        if method == "POST" and path == "/api/repos/create":
            d = json.loads(body)
            repo_id = f"{d['organization']}/{d['name']}" if d.get("organization") else d["name"]
            with self._lock:
                if repo_id in self.repos:
                    return self._reply(h, 409, {"error": "You already created this model repo", "url": self._repo_url(repo_id)})
                self.repos[repo_id] = Repo(private={"private": True, "public": False}.get(d.get("visibility")))
            return self._reply(h, 200, {"url": self._repo_url(repo_id), "name": repo_id})
        if method == "POST" and path == "/api/validate-yaml":
            return self._reply(h, 200, {"errors": [], "warnings": []})
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/]+)", path)
        if method == "POST" and m:
            repo_id, what = m.group(1), m.group(2)
            if repo_id not in self.repos:
                return self._reply(h, 404, {"error": f"Repository {repo_id} not found"})
            if what == "preupload":
                files = json.loads(body)["files"]
                return self._reply(h, 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                                       "oid": None} for f in files]})
            added: dict[str, bytes] = {}
            for line in body.splitlines():
                item = json.loads(line)
                if item.get("key") == "file":
                    v = item["value"]
                    added[v["path"]] = base64.b64decode(v["content"]) if v.get("encoding") == "base64" else v["content"].encode()
            oid = hashlib.sha1(body).hexdigest()
            with self._lock:
                self.repos[repo_id].files.update(added)
                self.repos[repo_id].commits.append(oid)
            return self._reply(h, 200, {"commitUrl": f"{self._repo_url(repo_id)}/commit/{oid}", "commitOid": oid,
                                        "pullRequestUrl": None})
        return self._reply(h, 404, {"error": f"fake hub: no {method} {path}"})

    def _repo_url(self, repo_id: str) -> str:
        return f"{self.url}/{repo_id}"

    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, status: int, data: dict[str, Any]) -> None:
        raw = json.dumps(data).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(raw)))
            if status >= 400:
                h.send_header("X-Error-Message", str(data.get("error", "")))
            h.end_headers()
            h.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):  # the uploader was killed while its request was held
            pass


def hub_env(hub: FakeHub, tmp: Any, token: str | None = None) -> dict[str, str]:
    """The environment that points huggingface_hub at ``hub`` and nowhere else (no real token file, online)."""
    env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp / "hf-home"), "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "5",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    env["HF_TOKEN"] = hub.token if token is None else token
    return env

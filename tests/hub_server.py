"""A Hugging Face Hub look-alike HTTP server for tests (not a product feature).

A real ``ThreadingHTTPServer`` on 127.0.0.1 serving, from a LocalHub folder, the
endpoints ``huggingface_hub.HfApi`` 2.x calls for what t2v-hub does (as read from
its client code: ``hf_api.py``, ``_commit_api.py``, ``file_download.py``):

    GET  /api/whoami-v2                          who the token belongs to
    POST /api/repos/create                       create a model repo (409 if it exists)
    GET  /api/models                             listing: filter/author/search/full/cardData, Link pagination
    GET  /api/models/{repo}[/revision/{rev}]     model info: sha, siblings, tags, cardData
    POST /api/validate-yaml                      README metadata check before a commit
    POST /api/models/{repo}/preupload/{rev}      uploadMode "regular" for every file
    POST /api/models/{repo}/commit/{rev}         NDJSON header/file/deletedFile; 412 on a stale parentCommit
    HEAD/GET /{repo}/resolve/{rev}/{path}        X-Repo-Commit, ETag, Content-Length, Range

and, read-only, the DATASET repo endpoints ``datasets.load_dataset("user/name")``
(``datasets`` 5.x over ``HfApi``/``HfFileSystem``) calls, served from plain folders
``<datasets_root>/<namespace>/<name>/...`` (default ``<root>/.datasets``, which
LocalHub ignores; ``server.dataset_dir(repo)`` creates one). A dataset repo's commit
sha is a hash of its files' paths and contents, so it changes when a file does:

    GET  /api/datasets/{repo}[/revision/{rev}]   dataset info: sha, siblings, cardData
    GET  /api/datasets/{repo}/tree/{rev}[/{path}]  recursive, expand, Link pagination
    POST /api/datasets/{repo}/paths-info/{rev}   form or JSON ``paths``, ``expand``
    HEAD/GET /datasets/{repo}/resolve/{rev}/{path}  as for models, Range ``bytes=a-[b]``

Writes need ``Authorization: Bearer <token>`` (401 otherwise), reads are public.
Fault injection: ``server.fail(kind, path=regex, method=..., times=N)`` with kind
``"500"`` (answer 500), ``"sleep"`` (wait ``seconds`` first: past the client's
timeout), ``"close"`` (read half the body, then drop the connection without
applying anything) or ``"close_after"`` (apply the request, then drop the
connection before answering). Every request is recorded in ``server.requests``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from t2v_hub.errors import CardError, ConcurrentUpdateError, HubError, RepoNotFoundError
from t2v_hub.hub.base import HubFileNotFoundError, RevisionChangedError, card_tags, validate_repo_id
from t2v_hub.hub.card import parse_card
from t2v_hub.hub.local import LocalHub

TOKEN = "hf_t2v_test_token_0123456789"
_MAX_FILE = 64 * 1024 * 1024


@dataclass
class Fault:
    kind: str
    path: re.Pattern[str]
    method: str | None
    times: int
    seconds: float


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    auth: str | None


class _Reply(Exception):
    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubServer:
    def __init__(
        self,
        root: str | Path,
        *,
        token: str = TOKEN,
        page_size: int = 50,
        datasets_root: str | Path | None = None,
    ) -> None:
        self.hub = LocalHub(root)
        self.datasets_root = Path(datasets_root) if datasets_root is not None else Path(root) / ".datasets"
        self.token = token
        self.page_size = page_size
        self.endless_listing = False
        self.requests: list[Request] = []
        self.errors: list[str] = []
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.hub_server = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail(self, kind: str, *, path: str = ".*", method: str | None = None, times: int = 1, seconds: float = 0.0) -> None:
        assert kind in ("500", "sleep", "close", "close_after", "429"), kind
        with self._lock:
            self.faults.append(Fault(kind, re.compile(path), method, times, seconds))

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.times > 0 and (f.method in (None, method)) and f.path.search(path):
                    f.times -= 1
                    return f
        return None

    # -- dataset repos (plain folders) ------------------------------------------------
    def dataset_dir(self, repo: str) -> Path:
        """The folder of dataset repo ``repo`` (created): put its files there."""
        d = self.datasets_root / validate_repo_id(repo)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def dataset_files(self, repo: str) -> tuple[str, dict[str, Path]] | None:
        """(commit sha, {path: file}) of a dataset repo, or None if there is none."""
        try:
            d = self.datasets_root / validate_repo_id(repo)
        except HubError:
            return None
        if not d.is_dir():
            return None
        files = {
            p.relative_to(d).as_posix(): p
            for p in sorted(d.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(d).parts)
        }
        h = hashlib.sha1(repo.encode())
        for name, p in files.items():
            h.update(name.encode() + b"\0" + git_oid(p.read_bytes()).encode() + b"\n")
        return h.hexdigest(), files

    def calls(self, method: str, pattern: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.fullmatch(pattern, r.path)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "t2v-test-hub/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean

    @property
    def srv(self) -> HubServer:
        return self.server.hub_server  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    # -- plumbing ---------------------------------------------------------------------
    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        self.srv.requests.append(Request(method, path, query, self.headers.get("Authorization")))
        self._drop = False
        fault = self.srv.take_fault(method, path)
        length = int(self.headers.get("Content-Length") or 0)
        if fault is not None:
            if fault.kind == "close":
                self.rfile.read(length // 2)
                self._hang_up()
                return
            if fault.kind == "sleep":
                time.sleep(fault.seconds)
            elif fault.kind == "500":
                self.rfile.read(length)
                self._send(500, {"error": "injected server error"})
                return
            elif fault.kind == "close_after":
                self._drop = True
            elif fault.kind == "429":  # rate limited, asking for a wait of `seconds`
                self.rfile.read(length)
                self._send(429, {"error": "rate limited"}, {"Retry-After": str(int(fault.seconds))})
                return
        body = self.rfile.read(length) if length else b""
        try:
            self._route(method, path, query, body)
        except _Reply as r:
            self._send(r.status, r.body, r.headers, head=method == "HEAD")
        except Exception as exc:  # a harness bug: report it to the test, answer 500
            self.srv.errors.append(f"{method} {path}: {type(exc).__name__}: {exc}")
            self._send(500, {"error": f"test server error: {exc}"})

    def _hang_up(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None, *, head: bool = False) -> None:
        if self._drop:
            self._hang_up()
            return
        try:
            self._write(status, body, headers or {}, head)
        except OSError:  # the client gave up (timeout fault): nothing to answer
            self.close_connection = True

    def _write(self, status: int, body: Any, headers: dict[str, str], head: bool) -> None:
        if isinstance(body, bytes):
            data, ctype = body, "application/octet-stream"
        else:
            data, ctype = json.dumps(body, default=str).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _auth(self, *, required: bool) -> None:
        header = self.headers.get("Authorization")
        if header is None and not required:
            return
        if header != f"Bearer {self.srv.token}":
            raise _Reply(401, {"error": "Invalid credentials"}, {"X-Error-Message": "Invalid credentials in Authorization header"})

    # -- routes -----------------------------------------------------------------------
    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> None:
        if path == "/api/whoami-v2" and method == "GET":
            self._auth(required=True)
            raise _Reply(200, {"type": "user", "name": "t2v-tester", "orgs": [], "auth": {"type": "access_token"}})
        if path == "/api/repos/create" and method == "POST":
            self._auth(required=True)
            self._create(json.loads(body))
        if path == "/api/validate-yaml" and method == "POST":
            self._validate(json.loads(body))
        if path == "/api/models" and method == "GET":
            self._auth(required=False)
            self._list(query)
        if path.startswith("/api/models/"):
            segs = [unquote(s) for s in path[len("/api/models/") :].split("/")]
            for i in (1, 2):
                if len(segs) > i + 1 and (
                    (method == "GET" and segs[i] == "revision") or (method == "POST" and segs[i] in ("preupload", "commit"))
                ):
                    repo, action, rev = "/".join(segs[:i]), segs[i], "/".join(segs[i + 1 :])
                    break
            else:
                repo, action, rev = "/".join(segs), "info", None
            self._auth(required=method == "POST")
            if action in ("info", "revision"):
                self._info(repo, rev)
            if action == "preupload":
                self._preupload(repo, rev, json.loads(body))
            if action == "commit":
                self._commit(repo, rev, query, body)
        if path.startswith("/api/datasets/"):
            self._auth(required=False)
            self._dataset_api(method, path[len("/api/datasets/") :], query, body)
        if path.startswith("/datasets/") and "/resolve/" in path and method in ("GET", "HEAD"):
            self._auth(required=False)
            self._dataset_resolve(method, path)
        if "/resolve/" in path and method in ("GET", "HEAD"):
            self._auth(required=False)
            self._resolve(method, path)
        raise _Reply(404, {"error": "Not found"})

    # -- dataset repos --------------------------------------------------------------------
    def _dataset_api(self, method: str, rest: str, query: dict[str, list[str]], body: bytes) -> None:
        segs = [unquote(s) for s in rest.split("/")]
        # {repo}, {repo}/revision/{rev}, {repo}/tree/{rev}[/{path}], {repo}/paths-info/{rev}
        for i in (1, 2):
            if len(segs) > i + 1 and segs[i] in ("revision", "tree", "paths-info"):
                repo, action, rev, sub = "/".join(segs[:i]), segs[i], segs[i + 1], "/".join(segs[i + 2 :])
                break
        else:
            repo, action, rev, sub = "/".join(segs), "info", None, ""
        expected = "POST" if action == "paths-info" else "GET"
        if method != expected:
            raise _Reply(405, {"error": f"{method} not allowed here"})
        sha, files = self._dataset(repo, rev)
        if action in ("info", "revision"):
            card = self._dataset_card(files)
            out: dict[str, Any] = {
                "_id": hashlib.sha1(b"dataset:" + repo.encode()).hexdigest()[:24],
                "id": repo,
                "author": repo.split("/")[0] if "/" in repo else None,
                "sha": sha,
                "lastModified": _now(),
                "private": False,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": card_tags(card),
                "siblings": [{"rfilename": f} for f in files],
            }
            if card is not None:
                out["cardData"] = card
            raise _Reply(200, out)
        if action == "tree":
            self._dataset_tree(sha, files, sub.strip("/"), query)
        # paths-info
        if (self.headers.get("Content-Type") or "").startswith("application/json"):
            payload = json.loads(body or b"{}")
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:
            form = parse_qs(body.decode())
            paths, expand = form.get("paths", []), form.get("expand", ["false"])[-1].lower() in ("1", "true")
        folders = _folders(files)
        out_list = []
        for p in paths if isinstance(paths, list) else [paths]:
            p = p.strip("/")
            if p in files:
                out_list.append(self._dataset_entry(sha, p, files[p], expand))
            elif p in folders:
                out_list.append(self._dataset_entry(sha, p, None, expand))
        raise _Reply(200, out_list)

    def _dataset(self, repo: str, rev: str | None) -> tuple[str, dict[str, Path]]:
        found = self.srv.dataset_files(repo)
        if found is None:
            raise _Reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        sha, files = found
        if rev not in (None, "main") and not (len(rev) >= 7 and sha.startswith(rev)):
            raise _Reply(404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound"})
        return sha, files

    @staticmethod
    def _dataset_card(files: dict[str, Path]) -> dict[str, Any] | None:
        readme = files.get("README.md")
        if readme is None:
            return None
        m = re.match(r"---\s*\n(.*?)\n---\s*(\n|$)", readme.read_text(encoding="utf-8"), re.S)
        if not m:
            return None
        import yaml

        try:
            meta = yaml.safe_load(m.group(1))
        except yaml.YAMLError:
            return None
        return meta if isinstance(meta, dict) else None

    @staticmethod
    def _dataset_entry(sha: str, path: str, file: Path | None, expand: bool) -> dict[str, Any]:
        if file is None:
            entry: dict[str, Any] = {"type": "directory", "oid": hashlib.sha1(f"{sha}:{path}".encode()).hexdigest(), "size": 0, "path": path}
        else:
            data = file.read_bytes()
            entry = {"type": "file", "oid": git_oid(data), "size": len(data), "path": path}
            if not path.endswith((".md", ".json", ".txt", ".yaml", ".yml", ".gitattributes", ".py")):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        if expand:
            entry["lastCommit"] = {"id": sha, "title": "test dataset", "date": _now()}
            if file is not None:
                entry["securityFileStatus"] = {"status": "safe", "avScan": {"status": "safe"}, "pickleImportScan": {"status": "unscanned"}}
        return entry

    def _dataset_tree(self, sha: str, files: dict[str, Path], sub: str, query: dict[str, list[str]]) -> None:
        def flag(name: str) -> bool:
            return query.get(name, ["false"])[-1].lower() in ("1", "true")

        folders = _folders(files)
        if sub and sub not in folders:
            if sub in files:  # the Hub lists a file path as that one file
                raise _Reply(200, [self._dataset_entry(sha, sub, files[sub], flag("expand"))])
            raise _Reply(404, {"error": f"{sub} does not exist on main"}, {"X-Error-Code": "EntryNotFound"})
        prefix = f"{sub}/" if sub else ""
        names = sorted(
            [(p, None) for p in folders if p.startswith(prefix) and p != sub]
            + [(p, f) for p, f in files.items() if p.startswith(prefix)]
        )
        if not flag("recursive"):
            names = [(p, f) for p, f in names if "/" not in p[len(prefix) :]]
        start = int(query.get("cursor", ["0"])[-1])
        size = min(int(query.get("limit", [str(self.srv.page_size)])[-1]), self.srv.page_size)
        page = [self._dataset_entry(sha, p, f, flag("expand")) for p, f in names[start : start + size]]
        headers = {}
        if start + size < len(names):
            q = {k: v for k, v in query.items() if k != "cursor"}
            q["cursor"] = [str(start + size)]
            headers["Link"] = f'<{self.srv.url}{urlsplit(self.path).path}?{urlencode(q, doseq=True)}>; rel="next"'
        raise _Reply(200, page, headers)

    def _dataset_resolve(self, method: str, path: str) -> None:
        segs = path.lstrip("/").split("/")[1:]
        i = segs.index("resolve")
        if i not in (1, 2) or len(segs) < i + 3:
            raise _Reply(404, {"error": "Not found"})
        repo = "/".join(unquote(s) for s in segs[:i])
        if self.srv.dataset_files(repo) is None and self.srv.hub.repo_exists(f"datasets/{repo}" if i == 1 else repo):
            return  # a model repo under a "datasets" namespace: the model route answers
        sha, files = self._dataset(repo, unquote(segs[i + 1]))
        file_path = "/".join(unquote(s) for s in segs[i + 2 :])
        if file_path not in files:
            raise _Reply(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha})
        data = files[file_path].read_bytes()
        self._send_file(method, data, file_path, sha)

    def _send_file(self, method: str, data: bytes, file_path: str, head: str) -> None:
        headers = {
            "X-Repo-Commit": head,
            "ETag": f'"{git_oid(data)}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'inline; filename="{quote(file_path.rsplit("/", 1)[-1])}"',
        }
        status = 200
        rng = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if rng and method == "GET":
            start = int(rng.group(1))
            end = min(int(rng.group(2)), len(data) - 1) if rng.group(2) else len(data) - 1
            if start >= len(data):
                raise _Reply(416, {"error": "Range Not Satisfiable"}, {"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        raise _Reply(status, data, headers)

    def _repo(self, repo: str) -> str:
        try:
            validate_repo_id(repo)
            if self.srv.hub.repo_exists(repo):
                return repo
        except HubError:
            pass
        raise _Reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})

    def _head(self, repo: str, rev: str | None) -> tuple[str, list[str]]:
        head, files = self.srv.hub.repo_files(repo)
        if rev not in (None, "main") and not (len(rev) >= 7 and head.startswith(rev)):
            raise _Reply(404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound"})
        return head, files

    def _card(self, repo: str) -> dict[str, Any] | None:
        try:
            text = self.srv.hub.read_card(repo).text
            return parse_card(text).metadata if text else None
        except CardError:
            return None  # like the Hub: an unparsable card has no cardData

    def _model(self, repo: str, head: str, files: list[str] | None, card: dict[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "_id": hashlib.sha1(repo.encode()).hexdigest()[:24],
            "id": repo,
            "modelId": repo,
            "author": repo.split("/")[0] if "/" in repo else None,
            "sha": head,
            "lastModified": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "private": False,
            "disabled": False,
            "gated": False,
            "tags": card_tags(card),
        }
        if card is not None:
            out["cardData"] = card
        if files is not None:
            out["siblings"] = [{"rfilename": f} for f in files]
        return out

    def _info(self, repo: str, rev: str | None) -> None:
        repo = self._repo(repo)
        head, files = self._head(repo, rev)
        raise _Reply(200, self._model(repo, head, files, self._card(repo)))

    def _list(self, query: dict[str, list[str]]) -> None:
        def flag(name: str) -> bool:
            return query.get(name, ["false"])[-1].lower() in ("1", "true")

        tags = query.get("filter", [])
        author, search = query.get("author", [None])[-1], query.get("search", [None])[-1]
        rows = self.srv.hub.list_models(filter=tags, author=author, search=search)
        rows.sort(key=lambda r: r.repo_id)
        start = int(query.get("cursor", ["0"])[-1])
        limit = int(query.get("limit", [str(self.srv.page_size)])[-1])
        size = min(limit, self.srv.page_size)
        full = flag("full") or bool(tags)  # the Hub turns `full` on when filtering
        page = []
        for r in rows[start : start + size]:
            files = self.srv.hub.repo_files(r.repo_id)[1] if full else None
            page.append(self._model(r.repo_id, r.revision or "", files, r.card_data if flag("cardData") or full else None))
        headers = {}
        if self.srv.endless_listing:  # a broken or hostile server: the next page is this one, forever
            headers["Link"] = f'<{self.srv.url}/api/models?{urlencode(query, doseq=True)}>; rel="next"'
        elif start + size < len(rows):
            q = {k: v for k, v in query.items() if k != "cursor"}
            q["cursor"] = [str(start + size)]
            headers["Link"] = f'<{self.srv.url}/api/models?{urlencode(q, doseq=True)}>; rel="next"'
        raise _Reply(200, page, headers)

    def _create(self, payload: dict[str, Any]) -> None:
        name, org = payload.get("name"), payload.get("organization")
        repo = f"{org}/{name}" if org else str(name)
        try:
            validate_repo_id(repo)
        except HubError as exc:
            raise _Reply(400, {"error": str(exc)}) from exc
        if self.srv.hub.repo_exists(repo):
            raise _Reply(409, {"error": "You already created this model repo", "url": f"{self.srv.url}/{repo}"})
        self.srv.hub.create_repo(repo)
        raise _Reply(200, {"url": f"{self.srv.url}/{repo}", "name": repo, "id": repo})

    def _validate(self, payload: dict[str, Any]) -> None:
        try:
            parse_card(str(payload.get("content", "")))
        except CardError as exc:
            raise _Reply(400, {"errors": [{"message": str(exc)}], "warnings": []}) from exc
        raise _Reply(200, {"errors": [], "warnings": []})

    def _preupload(self, repo: str, rev: str, payload: dict[str, Any]) -> None:
        repo = self._repo(repo)
        head, files = self._head(repo, rev)
        out = []
        for f in payload.get("files", []):
            oid = None
            if f["path"] in files:
                try:
                    oid = git_oid(self.srv.hub.download(repo, f["path"], head, max_bytes=_MAX_FILE))
                except HubError:
                    oid = None
            out.append({"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
        raise _Reply(200, {"files": out, "commitOid": head})

    def _commit(self, repo: str, rev: str, query: dict[str, list[str]], body: bytes) -> None:
        repo = self._repo(repo)
        if rev != "main":
            raise _Reply(404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound"})
        header: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        deleted: list[str] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                header = value
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                deleted.append(value["path"])
            else:
                raise _Reply(400, {"error": f"unsupported operation {key!r} (the test server takes regular files only)"})
        if not header.get("summary"):
            raise _Reply(400, {"error": "missing commit summary"})
        create_pr = query.get("create_pr", ["0"])[-1] in ("1", "true", "True")
        try:
            res = self.srv.hub.commit(
                repo, files, header["summary"], parent_commit=header.get("parentCommit"), create_pr=create_pr, delete=deleted
            )
        except ConcurrentUpdateError as exc:
            raise _Reply(412, {"error": "A commit has happened since. Please refresh and try again."}) from exc
        except RepoNotFoundError as exc:
            raise _Reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}) from exc
        except HubError as exc:
            raise _Reply(400, {"error": str(exc)}) from exc
        pr_url = None
        if res.pr_url:
            pr_url = f"{self.srv.url}/{repo}/discussions/{res.pr_url.rstrip('/').rsplit('/', 1)[-1]}"
        raise _Reply(
            200,
            {
                "success": True,
                "commitOid": res.commit_id,
                "commitUrl": f"{self.srv.url}/{repo}/commit/{res.commit_id}",
                "commitMessage": header["summary"],
                "hookOutput": "",
                "pullRequestUrl": pr_url,
            },
        )

    def _resolve(self, method: str, path: str) -> None:
        segs = path.lstrip("/").split("/")
        i = segs.index("resolve")
        if i not in (1, 2) or len(segs) < i + 3:
            raise _Reply(404, {"error": "Not found"})
        repo = self._repo("/".join(unquote(s) for s in segs[:i]))
        rev, file_path = unquote(segs[i + 1]), "/".join(unquote(s) for s in segs[i + 2 :])
        head, files = self._head(repo, rev)
        try:
            data = self.srv.hub.download(repo, file_path, head, max_bytes=_MAX_FILE)
        except (HubFileNotFoundError, HubError) as exc:
            code = "RevisionNotFound" if isinstance(exc, RevisionChangedError) else "EntryNotFound"
            raise _Reply(404, {"error": "Entry not found"}, {"X-Error-Code": code, "X-Repo-Commit": head}) from exc
        self._send_file(method, data, file_path, head)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _folders(files: dict[str, Path]) -> set[str]:
    return {"/".join(p.split("/")[:k]) for p in files for k in range(1, p.count("/") + 1)}

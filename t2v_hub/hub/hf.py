"""The Hugging Face Hub (or any server speaking its API) through ``huggingface_hub.HfApi``.

- Endpoint: the ``endpoint`` argument, else ``HF_ENDPOINT``, else huggingface.co.
- Token: the ``token`` argument, else wherever ``huggingface_hub`` finds one
  (``HF_TOKEN``, ``hf auth login``). It is handed to ``HfApi`` and never printed,
  logged or put in an error message; ``repr(hub)`` omits it.
- Writes: one ``create_commit`` with ``CommitOperationAdd`` per file and
  ``parent_commit``; a 412 answer (the head moved) becomes ConcurrentUpdateError.
  A commit is never retried here: when the connection drops the outcome is unknown
  and CommitUncertainError lets the caller check what landed.
- Reads are idempotent and retried with exponential backoff on 5xx, 408, 429,
  timeouts and connection errors, then reported as one clear HubError. The
  listing is already retried inside ``huggingface_hub`` (5 times), so it is not
  retried again on top; downloads are (the client retries a failed HEAD but not
  a 5xx on the GET).
- Timeouts: ``huggingface_hub`` 2.x sends requests without a timeout unless a call
  passes one (``list_models`` and ``create_commit`` cannot), so a stalled server
  would hang us forever. We add a request hook to its shared HTTP client that caps
  every timeout at ``timeout`` seconds. This is process-wide, by necessity.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ..errors import CardError, ConcurrentUpdateError, HubError, RepoNotFoundError
from .base import (
    MAX_CARD_BYTES,
    MAX_EMBEDDING_BYTES,
    CardState,
    CommitResult,
    CommitUncertainError,
    Hub,
    HubFileNotFoundError,
    ModelListing,
    RevisionChangedError,
    validate_repo_id,
    validate_repo_path,
)

T = TypeVar("T")
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
# The longest a server may make one wait last (Retry-After, rate-limit reset), and one whole call.
MAX_WAIT_S = 10
CALL_BUDGET_S = 120.0
# A listing longer than this is cut (and said so): a server that paginates forever must not hang us.
MAX_LISTED_MODELS = 100_000
_state = threading.local()


class _BudgetExceeded(Exception):
    """Raised from the response hook: the call's time budget is spent (not retried by huggingface_hub)."""


def _cap_waits(response: Any) -> None:
    """httpx response hook: cap the waits a server asks for, say so, and enforce the call budget."""
    deadline = getattr(_state, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise _BudgetExceeded(f"gave up after {CALL_BUDGET_S:.0f}s (t2v-hub's budget for one hub call)")
    if response.status_code not in _RETRY_STATUS:
        return
    value = (response.headers.get("retry-after") or "").strip()
    if value.isdigit() and int(value) > MAX_WAIT_S:
        response.headers["retry-after"] = str(MAX_WAIT_S)
        print(f"hub asked to wait {value}s before retrying {response.request.url.path}; waiting {MAX_WAIT_S}s "
              "(t2v-hub caps every wait)", file=sys.stderr, flush=True)
    rl = response.headers.get("ratelimit")
    if rl:
        response.headers["ratelimit"] = re.sub(r"t=(\d+)", lambda m: f"t={min(int(m.group(1)), MAX_WAIT_S)}", rl)
_timeout_cap: float | None = None
_hook_installed = False


class _Transient(HubError):
    """A failure worth retrying (server error, timeout, dropped connection)."""


def _cap_timeouts(request: Any) -> None:
    """httpx request hook: no timeout may exceed the cap, and none may be infinite."""
    cap = _timeout_cap
    if cap is None:
        return
    current = dict(request.extensions.get("timeout") or {})
    request.extensions["timeout"] = {
        k: cap if current.get(k) is None else min(float(current[k]), cap) for k in ("connect", "read", "write", "pool")
    }


def _install_timeout(seconds: float | None) -> None:
    global _timeout_cap, _hook_installed
    _timeout_cap = seconds
    if seconds is None or _hook_installed:
        return
    try:
        from huggingface_hub.utils import set_client_factory
        from huggingface_hub.utils._http import default_client_factory
    except ImportError:  # a huggingface_hub without these: keep its defaults
        return

    def factory() -> Any:
        client = default_client_factory()
        hooks = client.event_hooks
        hooks["request"] = [*hooks.get("request", []), _cap_timeouts]
        hooks["response"] = [*hooks.get("response", []), _cap_waits]
        client.event_hooks = hooks
        return client

    set_client_factory(factory)
    _hook_installed = True


class HfHub(Hub):
    """A Hugging Face Hub endpoint."""

    def __init__(
        self,
        endpoint: str | None = None,
        token: str | None = None,
        *,
        timeout: float | None = 30.0,
        retries: int = 3,
        backoff: float = 1.0,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        from huggingface_hub import HfApi, constants

        from ..version import __version__

        given = endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
        self.endpoint = given.rstrip("/")
        if not given.startswith(("http://", "https://")):
            raise HubError(f"hub endpoint {given!r} must start with http:// or https://")
        host = urlsplit(given).netloc
        if not host or any(c.isspace() for c in host):
            raise HubError(f"hub endpoint {given!r} has no valid host; pass a URL like https://huggingface.co")
        self.retries = max(0, retries)
        self.backoff = backoff
        self.cache_dir = str(cache_dir) if cache_dir is not None else None
        self.description = f"hub {self.endpoint}"
        self._etag_timeout = timeout if timeout is not None else 10.0
        # token=None lets huggingface_hub look in its usual places; the value stays inside HfApi.
        self._api = HfApi(endpoint=self.endpoint, token=token, library_name="t2v-hub", library_version=__version__)
        _install_timeout(timeout)

    def __repr__(self) -> str:
        return f"HfHub(endpoint={self.endpoint!r})"  # never the token

    # -- error handling ---------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], T], *, retry: bool, precheck: bool = True) -> T:
        if precheck:
            self._check_reachable(what)
        outer = getattr(_state, "deadline", None)
        _state.deadline = outer if outer is not None else time.monotonic() + CALL_BUDGET_S
        try:
            return self._attempts(what, fn, retry)
        finally:
            _state.deadline = outer

    def _check_reachable(self, what: str) -> None:
        """Once per hub: fail in seconds where nothing listens at the endpoint (a wrong port, no network).

        Otherwise huggingface_hub's retries and ours spend 25-35 s on a refused connection before
        saying so. Timeouts and 5xx answers are still retried: those can pass.
        """
        if getattr(self, "_reachable", False) or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
            return
        from ..network import unreachable

        why = unreachable(self.endpoint)
        if why is not None:
            raise HubError(f"{what}: cannot reach {self.endpoint} ({why}); check the hub URL (--hub, HF_ENDPOINT) "
                           "and the network, or pass a local hub folder")
        self._reachable = True

    def _attempts(self, what: str, fn: Callable[[], T], retry: bool) -> T:
        attempts = self.retries + 1 if retry else 1
        for i in range(attempts):
            try:
                return fn()
            except HubError:
                raise
            except _BudgetExceeded as exc:
                raise HubError(f"{what}: {exc}; {self.endpoint} is slow or rate-limiting, try again later") from exc
            except Exception as exc:
                err = self._translate(exc, what)
                if not isinstance(err, _Transient):
                    raise err from exc
                if i == 0 and str(err).startswith("connection failed"):
                    self._check_reachable(what)  # nothing listening: no point in the retries
                if i + 1 >= attempts:
                    tries = f"after {attempts} attempts" if attempts > 1 else "after the client's retries"
                    raise HubError(
                        f"{what} failed {tries}: {err}; {self.endpoint} may be down or slow, try again later"
                    ) from exc
                if time.monotonic() + self.backoff * 2**i > _state.deadline:
                    raise HubError(f"{what} failed: {err}; gave up after {CALL_BUDGET_S:.0f}s, try again later") from exc
                time.sleep(self.backoff * 2**i)
        raise AssertionError("unreachable")

    def _translate(self, exc: Exception, what: str) -> HubError:
        import httpx2
        from huggingface_hub import errors as hf

        if isinstance(exc, hf.RepositoryNotFoundError):
            return RepoNotFoundError(
                f"{what}: repository not found on {self.endpoint} (or it is private/gated and the token "
                "cannot see it); check the name, or pass token= / set HF_TOKEN"
            )
        if isinstance(exc, hf.RevisionNotFoundError):
            return RevisionChangedError(f"{what}: revision not found (the repository changed while being read); retry")
        if isinstance(exc, hf.RemoteEntryNotFoundError):
            return HubFileNotFoundError(f"{what}: file not found in the repository")
        if isinstance(exc, hf.HfHubHTTPError) and exc.response is not None:
            status = exc.response.status_code
            detail = _first_line(exc.server_message or "") or f"HTTP {status}"
            if status == 412:
                return ConcurrentUpdateError(
                    f"{what}: the repository changed since it was read ({detail}); nothing was overwritten, "
                    "run the command again to apply the change on top"
                )
            if status in (401, 403):
                return HubError(
                    f"{what}: not allowed ({detail}); pass a write token (token= or HF_TOKEN), "
                    "or create_pr=True for a repository you do not own"
                )
            if status in _RETRY_STATUS:
                return _Transient(f"HTTP {status} ({detail})")
            return HubError(f"{what}: the hub answered HTTP {status}: {detail}")
        if isinstance(exc, hf.LocalEntryNotFoundError):
            cause = exc.__cause__
            if isinstance(cause, Exception) and not isinstance(cause, hf.LocalEntryNotFoundError):
                return self._translate(cause, what)
            return _Transient("cannot reach the hub and the file is not in the local cache")
        if isinstance(exc, hf.LocalTokenNotFoundError):
            return HubError(f"{what}: no token found; pass token=, set HF_TOKEN or run `hf auth login`")
        if isinstance(exc, hf.OfflineModeIsEnabled):
            return HubError(f"{what}: HF_HUB_OFFLINE is set; unset it to reach {self.endpoint}")
        if isinstance(exc, hf.FileMetadataError):
            return HubError(f"{what}: {self.endpoint} does not answer like a Hugging Face hub ({_first_line(str(exc))})")
        if isinstance(exc, httpx2.TimeoutException):
            return _Transient(f"timed out ({type(exc).__name__})")
        if isinstance(exc, httpx2.TransportError):  # connection refused/reset/closed, protocol errors
            return _Transient(f"connection failed ({type(exc).__name__}: {_first_line(str(exc))})")
        if isinstance(exc, json.JSONDecodeError):
            return _Transient("the hub sent a malformed answer")
        if isinstance(exc, ValueError) and "Invalid metadata in README.md" in str(exc):
            return CardError(f"{what}: the hub rejected the card metadata: {_first_line(str(exc))}")
        if isinstance(exc, OSError):
            return HubError(f"{what}: {type(exc).__name__}: {_first_line(str(exc))}")
        raise exc  # a bug, not a hub problem: keep the traceback

    # -- Hub interface ----------------------------------------------------------------
    def repo_url(self, repo_id: str) -> str:
        return f"{self.endpoint}/{validate_repo_id(repo_id)}"

    def repo_exists(self, repo_id: str) -> bool:
        validate_repo_id(repo_id)
        try:
            self._call(f"reading {repo_id}", lambda: self._api.model_info(repo_id, timeout=_timeout_cap), retry=True)
        except RepoNotFoundError:
            return False
        return True

    def create_repo(self, repo_id: str, *, exist_ok: bool = True) -> str:
        validate_repo_id(repo_id)
        url = self._call(
            f"creating {repo_id}", lambda: self._api.create_repo(repo_id, repo_type="model", exist_ok=exist_ok), retry=True
        )
        return str(url)

    def whoami(self) -> str:
        """The user name the token belongs to (checks that the token works)."""
        info = self._call("checking the token", lambda: self._api.whoami(), retry=True)
        return str(info.get("name", ""))

    def read_card(self, repo_id: str) -> CardState:
        validate_repo_id(repo_id)
        what = f"reading {repo_id}"
        info = self._call(what, lambda: self._api.model_info(repo_id, timeout=_timeout_cap), retry=True)
        if not info.sha:
            raise HubError(f"{what}: the hub did not report the head commit; cannot update the card safely")
        names = {s.rfilename for s in info.siblings or []}
        if "README.md" not in names:
            return CardState(None, info.sha)
        data = self.download(repo_id, "README.md", info.sha, max_bytes=MAX_CARD_BYTES)
        try:
            return CardState(data.decode("utf-8"), info.sha)
        except UnicodeDecodeError as exc:
            raise CardError(f"{repo_id}: README.md is not UTF-8 text; fix the card") from exc

    def commit(
        self,
        repo_id: str,
        files: Mapping[str, bytes],
        message: str,
        *,
        parent_commit: str | None,
        create_pr: bool = False,
    ) -> CommitResult:
        from huggingface_hub import CommitOperationAdd

        validate_repo_id(repo_id)
        ops = [CommitOperationAdd(path_in_repo=validate_repo_path(p), path_or_fileobj=bytes(b)) for p, b in files.items()]
        what = f"committing to {repo_id}"
        try:
            info = self._api.create_commit(
                repo_id,
                ops,
                commit_message=message,
                repo_type="model",
                parent_commit=parent_commit,
                create_pr=create_pr,
            )
        except Exception as exc:
            err = exc if isinstance(exc, HubError) else self._translate(exc, what)
            if isinstance(err, _Transient):
                raise CommitUncertainError(f"{what}: {err}; the commit may or may not have been applied") from exc
            raise err from exc
        return CommitResult(str(info.oid), str(info.commit_url), str(info.pr_url) if info.pr_url else None)

    def download(
        self, repo_id: str, path: str, revision: str | None = None, *, max_bytes: int = MAX_EMBEDDING_BYTES
    ) -> bytes:
        validate_repo_id(repo_id)
        validate_repo_path(path)

        def fetch(dry_run: bool) -> Any:
            return self._api.hf_hub_download(
                repo_id,
                path,
                repo_type="model",
                revision=revision,
                cache_dir=self.cache_dir,
                etag_timeout=self._etag_timeout,
                dry_run=dry_run,
            )

        what = f"downloading {repo_id}/{path}"
        # A file cached at a pinned commit needs no network: only then is the reachability check skipped.
        pinned = bool(revision and re.fullmatch(r"[0-9a-f]{40}", revision))
        # Ask the size first (free when cached): a hostile repo must not make us fetch gigabytes.
        plan = self._call(what, lambda: fetch(True), retry=True, precheck=not pinned)
        if plan.file_size is not None and plan.file_size > max_bytes:
            raise HubError(f"{repo_id}/{path} is {plan.file_size:,} bytes, over the {max_bytes:,} limit")
        local = Path(self._call(what, lambda: fetch(False), retry=True, precheck=not pinned))
        if local.stat().st_size > max_bytes:
            raise HubError(f"{repo_id}/{path} is over the {max_bytes:,} byte limit")
        return local.read_bytes()

    def list_models(
        self, *, filter: Iterable[str] = (), author: str | None = None, search: str | None = None
    ) -> list[ModelListing]:
        tags = list(filter)

        def listing() -> list[ModelListing]:
            out = []
            # One paginated listing with every card's metadata: no request per repo.
            for i, m in enumerate(self._api.list_models(filter=tags or None, author=author, search=search, full=True,
                                                        cardData=True)):
                if i >= MAX_LISTED_MODELS:
                    warnings.warn(f"the listing of {self.endpoint} was cut after {MAX_LISTED_MODELS:,} models "
                                  "(t2v-hub's bound); narrow it with tags (filter)", RuntimeWarning, stacklevel=2)
                    break
                data = m.card_data.to_dict() if m.card_data is not None else None
                files = tuple(f.rfilename for f in m.siblings) if m.siblings is not None else None
                out.append(ModelListing(m.id, data, m.sha, files))
            return out

        return self._call("listing models", listing, retry=False)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""

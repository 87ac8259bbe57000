"""An HTTP client of a CMMS's REST API (httpx): push a work order, read completed work back.

`push` renders the work order through the mapping and sends it: revision 0 to the `create` endpoint,
later revisions to the `update` endpoint. With `create_on_missing`, an update answered 404 is sent as a
create (the create failed, or the order is older than the hand-off) and a create answered 409 as an update.
Every request carries `Idempotency-Key: <work_order_id>:<revision>`, so a CMMS (or a proxy) that honours
it applies a state pushed twice (a retry, a replay after a crash) once; the create or update sent after a
404 or 409 is another request, keyed `<work_order_id>:<revision>:create` (`:update`).

Retries (tenacity): a timeout, a connection error, 429 and 5xx are tried again with exponential backoff,
waiting at least what `Retry-After` asks (capped at `retry.max_retry_after_s`), for at most
`retry.attempts` tries and `retry.max_total_s` seconds. Any other 4xx is the request's own fault: it is
not retried, `CmmsRejected` carries the status and the start of the answer. Secrets (token, password)
never appear in an error or a log line.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential
from tenacity.stop import stop_base

from smart_maintenance.config.cmms_settings import WORK_ORDER_FIELDS, CmmsSettings
from smart_maintenance.operators.cmms import (
    FieldMap,
    MappingError,
    compile_mapping,
    idempotency_key,
    render_body,
    render_path,
    retry_after_s,
)

__all__ = ["CmmsClient", "CmmsError", "CmmsRejected", "CmmsUnavailable", "Pushed"]

BODY_CHARS = 500  # of an error answer kept in a dead letter's reason


class CmmsError(RuntimeError):
    """A request to the CMMS failed; `status` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500


class CmmsRejected(CmmsError):
    """The CMMS refused the request (a 4xx other than 429), or it cannot be made: sending it again cannot help."""

    @property
    def retryable(self) -> bool:
        return False


class CmmsUnavailable(CmmsError):
    """No usable answer after every retry (timeouts, connection errors, 429, 5xx)."""


@dataclass(frozen=True)
class Pushed:
    """What one push did: the endpoint's method and path, the HTTP status, the tries it took."""

    method: str
    path: str
    status: int
    attempts: int
    body: bytes


@dataclass(frozen=True)
class _Answer:
    status_code: int
    content: bytes


class _stop_on(stop_base):
    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, retry_state: Any) -> bool:
        return self.event.is_set()


def _auth(cfg: CmmsSettings) -> tuple[httpx.Auth | None, dict[str, str]]:
    a = cfg.auth
    if a.kind == "basic":
        assert a.username is not None and a.password is not None  # noqa: S101 - checked by the settings
        return httpx.BasicAuth(a.username, a.password.get_secret_value()), {}
    if a.kind == "bearer":
        assert a.token is not None  # noqa: S101
        return None, {"Authorization": f"Bearer {a.token.get_secret_value()}"}
    if a.kind == "api_key":
        assert a.token is not None  # noqa: S101
        return None, {a.header: a.token.get_secret_value()}
    return None, {}


class CmmsClient:
    """One connection pool to the CMMS. `stopping` (an Event) cuts retry waits short at shutdown."""

    def __init__(self, cfg: CmmsSettings, *, stopping: threading.Event | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        if cfg.base_url is None:
            raise ValueError("cmms.base_url is not set")
        self.cfg = cfg
        self.mapping: FieldMap = compile_mapping(cfg.mapping, WORK_ORDER_FIELDS)
        self.stopping = stopping or threading.Event()
        auth, headers = _auth(cfg)
        self._http = httpx.Client(
            base_url=cfg.base_url, auth=auth, transport=transport, follow_redirects=False,
            headers={**cfg.headers, **headers, "Accept": "application/json", "User-Agent": "smart-maintenance"},
            timeout=httpx.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s),
            verify=str(cfg.ca_file) if cfg.ca_file is not None else True,
        )

    def __repr__(self) -> str:  # no secret in a repr
        return f"CmmsClient({self.cfg.base_url!r}, auth={self.cfg.auth.kind})"

    def close(self) -> None:
        self._http.close()

    def body(self, work_order: Mapping[str, Any]) -> bytes:
        """The JSON body pushed for a work order (MappingError if the mapping cannot render it)."""
        body = render_body(self.mapping, work_order)
        try:
            return orjson.dumps(body)
        except TypeError as e:  # a template's value that JSON cannot hold
            raise MappingError(f"the body is not JSON: {e}") from None

    def push(self, work_order: Mapping[str, Any], body: bytes | None = None) -> Pushed:
        """Create (revision 0) or update the work order in the CMMS; raises CmmsRejected / CmmsUnavailable."""
        body = self.body(work_order) if body is None else body
        headers = {"Idempotency-Key": idempotency_key(work_order), "Content-Type": "application/json"}
        create = int(work_order.get("revision") or 0) == 0
        endpoint = self.cfg.create if create else self.cfg.update
        path = render_path(endpoint.path, work_order)
        try:
            status, tries = self._send(endpoint.method, path, body, endpoint.headers | headers)
        except CmmsRejected as e:
            if not self.cfg.create_on_missing or e.status != (409 if create else 404):
                raise
            endpoint = self.cfg.update if create else self.cfg.create  # it exists already / not yet
            path = render_path(endpoint.path, work_order)
            # another request than the refused one: a server that replays answers by key must not replay that
            headers["Idempotency-Key"] += ":update" if create else ":create"
            status, tries = self._send(endpoint.method, path, body, endpoint.headers | headers)
        return Pushed(endpoint.method, path, status, tries, body)

    def get_json(self, path: str) -> Any:
        """GET a path (with retries) and decode its JSON answer; CmmsError if it is not JSON."""
        response = self._request("GET", path, None, {})
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as e:
            raise CmmsError(f"GET {path}: the answer is not JSON ({e})", response.status_code) from None

    def _send(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, int]:
        tries = 0

        def count() -> None:
            nonlocal tries
            tries += 1

        response = self._request(method, path, body, headers, on_try=count)
        return response.status_code, tries

    def _read(self, response: httpx.Response, what: str) -> bytes:
        """The answer's body, refused beyond `max_answer_bytes` (nothing from outside is trusted)."""
        limit = self.cfg.max_answer_bytes
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise CmmsRejected(f"{what}: HTTP {response.status_code}: the answer is larger than "
                                   f"max_answer_bytes={limit}", response.status_code)
            chunks.append(chunk)
        return b"".join(chunks)

    def _request(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
                 on_try: Any = None) -> _Answer:
        r = self.cfg.retry
        backoff = wait_exponential(multiplier=r.initial_backoff_s, max=r.max_backoff_s)

        def wait(state: Any) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            after = getattr(exc, "retry_after", None)
            base = backoff(state)
            return base if after is None else max(base, min(after, r.max_retry_after_s))

        def once() -> _Answer:
            if on_try is not None:
                on_try()
            try:
                response = self._http.send(self._http.build_request(method, path, content=body, headers=headers),
                                           stream=True)
                try:
                    content = self._read(response, f"{method} {path}")
                finally:
                    response.close()
            except httpx.TimeoutException as e:
                raise CmmsError(f"{method} {path}: timed out ({type(e).__name__})") from None
            except httpx.TransportError as e:
                raise CmmsError(f"{method} {path}: {type(e).__name__}: {e}") from None
            except (httpx.HTTPError, httpx.InvalidURL) as e:  # a bad encoding of the answer, a URL httpx refuses
                raise CmmsRejected(f"{method} {path}: {type(e).__name__}: {e}") from None
            if response.status_code < 300:
                return _Answer(response.status_code, content)
            text = content[:BODY_CHARS * 4].decode("utf-8", "replace")[:BODY_CHARS]
            message = f"{method} {path}: HTTP {response.status_code}: {text}"
            if response.status_code == 429 or response.status_code >= 500:
                raise CmmsError(message, response.status_code, retry_after_s(response.headers.get("Retry-After")))
            raise CmmsRejected(message, response.status_code)  # 3xx (no redirects followed) and 4xx

        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, CmmsError) and e.retryable),
            stop=stop_after_attempt(r.attempts) | stop_after_delay(r.max_total_s) | _stop_on(self.stopping),
            wait=wait,
            sleep=self.stopping.wait,  # type: ignore[arg-type]  # woken at shutdown; its bool is ignored
            reraise=True,
        )
        try:
            return retrying(once)
        except CmmsRejected:
            raise
        except CmmsError as e:
            raise CmmsUnavailable(str(e), e.status) from None

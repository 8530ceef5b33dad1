"""The controller's only link to the router: its ``/workers`` API over HTTP.

Works with the HFX router (``python -m hyperflexis_sglang.router``) and with
``sglang-router`` 0.3.2, which share the API: ``POST /workers {"url",
"worker_type", "bootstrap_port"}``, ``GET /workers``, ``DELETE /workers/{id}``.
Differences handled here: sglang-router registers a worker in the background
(202, listed only after its own health check) and forgets a deleted worker at
once; the HFX router checks it before answering and drains on DELETE (202
``draining`` with an ``inflight`` count, then the worker disappears).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx


class RouterError(RuntimeError):
    pass


@dataclass(frozen=True)
class RouterWorker:
    id: str  # the router's worker id
    url: str  # worker URL, no trailing slash
    worker_type: str  # regular | prefill | decode
    bootstrap_port: int | None  # P/D bootstrap port (prefill)
    inflight: int | None  # router requests in flight on it (None: the router does not say)
    draining: bool  # the router stopped routing to it


def _worker(d: dict) -> RouterWorker:
    return RouterWorker(str(d.get("id") or d.get("worker_id") or d.get("url")), str(d.get("url", "")).rstrip("/"),
                        str(d.get("worker_type") or "regular"), d.get("bootstrap_port"), d.get("inflight"),
                        bool(d.get("draining", False)))


class RouterClient:
    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 10.0):
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(timeout=timeout_s, headers=headers)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kw) -> httpx.Response:
        try:
            return self.http.request(method, self.url + path, **kw)
        except httpx.HTTPError as e:
            raise RouterError(f"router {self.url}: {method} {path} failed: {e}") from e

    def workers(self) -> list[RouterWorker]:
        r = self._call("GET", "/workers")
        if r.status_code != 200:
            raise RouterError(f"router {self.url}: GET /workers answered {r.status_code}: {r.text[:300]}")
        return [_worker(d) for d in r.json().get("workers", [])]

    def find(self, url: str) -> RouterWorker | None:
        url = url.rstrip("/")
        return next((w for w in self.workers() if w.url == url), None)

    def add(self, url: str, worker_type: str, bootstrap_port: int | None = None, timeout_s: float = 60.0
            ) -> RouterWorker:
        """Register a worker and return once the router lists it (not draining)."""
        body = {"url": url, "worker_type": worker_type}
        if bootstrap_port is not None:
            body["bootstrap_port"] = bootstrap_port
        r = self._call("POST", "/workers", json=body)
        if r.status_code not in (200, 201, 202, 409):
            raise RouterError(f"router {self.url}: POST /workers {body} answered {r.status_code}: {r.text[:300]}")
        deadline = time.monotonic() + timeout_s
        while True:
            w = self.find(url)
            if w is not None and not w.draining:
                if w.worker_type != worker_type:
                    raise RouterError(f"router lists {url} as {w.worker_type}, not {worker_type}")
                return w
            if time.monotonic() > deadline:
                raise RouterError(f"router {self.url} did not list {url} within {timeout_s:.0f} s")
            time.sleep(0.2)

    def remove(self, url: str) -> bool:
        """Ask the router to stop routing to ``url`` (the HFX router drains it). False if it was not registered."""
        w = self.find(url)
        if w is None:
            return False
        r = self._call("DELETE", f"/workers/{w.id}")
        if r.status_code == 404:
            return False
        if r.status_code not in (200, 202, 204):
            raise RouterError(f"router {self.url}: DELETE /workers/{w.id} answered {r.status_code}: {r.text[:300]}")
        return True

    def metrics_text(self, metrics_url: str | None = None) -> str:
        """Prometheus text of the router (``metrics_url``: a separate metrics port, as sglang-router uses)."""
        url = metrics_url or self.url + "/metrics"
        try:
            r = self.http.get(url)
        except httpx.HTTPError as e:
            raise RouterError(f"metrics {url}: {e}") from e
        if r.status_code != 200:
            raise RouterError(f"metrics {url} answered {r.status_code}")
        return r.text

"""The SLO-aware router in front of real SGLang CPU servers (tiny model): collocated and P/D.

Workers: the module's stock + HFX servers (``servers`` fixture), later a
Mooncake-TCP prefill/decode pair (started after the collocated pair is
stopped: at most three SGLang servers at a time). Routers run as
``python -m hyperflexis_sglang.router`` processes (the CLI test, the drain
on SIGTERM) or in-process under uvicorn in a thread. Nothing is faked.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import uvicorn

from hyperflexis_sglang.controller.local import SGLangServer, free_port
from hyperflexis_sglang.router.app import create_app
from hyperflexis_sglang.router.cli import parse_args
from hyperflexis_sglang.testing.client import sse_data

pytestmark = pytest.mark.integration
PROMPTS = ["Hello world", "The quick brown fox jumps over the lazy dog"]


# ---- small clients -----------------------------------------------------------------
def call(method: str, url: str, body=None, headers=None, timeout=120.0):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else {}), dict(r.headers)
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, (json.loads(raw) if raw else {}), dict(e.headers)


def sse(base: str, path: str, body: dict, headers=None, timeout=120.0, on_first=None):
    """(status, data events as parsed JSON (or the error body), saw [DONE])."""
    u = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    conn.request("POST", path, body=json.dumps({**body, "stream": True}),
                 headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    if resp.status != 200:
        return resp.status, [json.loads(resp.read() or b"{}")], False
    events, done = [], False
    for data in sse_data(resp):
        if data == b"[DONE]":
            done = True
            break
        events.append(json.loads(data))
        if on_first is not None and len(events) == 1:
            on_first()
    conn.close()
    return resp.status, events, done


def greedy(text: str, n: int = 8, **extra) -> dict:
    return {"text": text, "sampling_params": {"max_new_tokens": n, "temperature": 0, **extra}}


class RouterProc:
    """``python -m hyperflexis_sglang.router ARGS``, stopped by its own PID."""

    def __init__(self, args: list[str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"hfx-router-{self.port}.log"), "w+b")
        self.proc = subprocess.Popen([sys.executable, "-m", "hyperflexis_sglang.router", "--host", "127.0.0.1",
                                      "--port", str(self.port), *args], stdout=self.log, stderr=subprocess.STDOUT)

    def wait(self, path="/health", timeout=60.0) -> "RouterProc":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if call("GET", self.url + path, timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"router not ready: {self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


class RouterThread:
    """An in-process router (uvicorn in a thread) on a free port."""

    def __init__(self, argv: list[str]):
        cfg, _ = parse_args(argv)
        self.app = create_app(cfg)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    loop="asyncio", timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if call("GET", self.url + "/health", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("in-process router not ready")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)


def run_parallel(fns):
    out = [None] * len(fns)

    def one(i, f):
        try:
            out[i] = f()
        except Exception as e:  # noqa: BLE001 - a client-side exception is a lost request; the test reports it
            out[i] = e
    threads = [threading.Thread(target=one, args=(i, f)) for i, f in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return out


# ---- collocated ------------------------------------------------------------------
# sglang_router.launch_router's own command line, verbatim (parsed by sglang_router too, below).
def sglang_router_argv(port: int, stock: str, hfx: str, prom: int) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(port), "--worker-urls", stock, hfx, "--policy", "round_robin",
            "--cache-threshold", "0.3", "--balance-abs-threshold", "64", "--balance-rel-threshold", "1.5",
            "--retry-max-retries", "3", "--retry-initial-backoff-ms", "50", "--cb-failure-threshold", "5",
            "--health-check-interval-secs", "10", "--health-failure-threshold", "3", "--max-payload-size", "1000000",
            "--request-timeout-secs", "120", "--log-level", "info", "--prometheus-port", str(prom),
            "--shutdown-grace-period-secs", "60", "--dp-aware", "--eviction-interval-secs", "60"]


@pytest.fixture(scope="module")
def cli_router(servers):
    stock, hfx = servers
    prom = free_port()
    argv = sglang_router_argv(0, stock.url, hfx.url, prom)
    r = RouterProc(argv[4:])  # host/port chosen by RouterProc
    r.prom = prom
    r.argv = argv
    try:
        yield r.wait()
    finally:
        r.stop()


def test_cli_accepts_sglang_router_command_line_verbatim(cli_router):
    from sglang_router.launch_router import parse_router_args
    theirs = parse_router_args(cli_router.argv)  # sglang_router itself accepts this command line
    assert theirs.policy == "round_robin" and len(theirs.worker_urls) == 2
    out = cli_router.output()
    assert "--dp-aware is accepted for sglang_router compatibility but has no effect" in out
    status, workers, _ = call("GET", cli_router.url + "/workers")
    assert status == 200 and workers["total"] == 2 and all(w["is_healthy"] for w in workers["workers"])
    with urllib.request.urlopen(f"http://127.0.0.1:{cli_router.prom}/metrics", timeout=10) as r:
        assert b"hfx_router_requests" in r.read()  # the separate Prometheus port


def test_endpoints_and_request_id(cli_router, servers):
    stock, _ = servers
    base = cli_router.url
    ref = stock.post("/generate", greedy(PROMPTS[0]))[1]["output_ids"]
    seen = set()
    for i in range(2):
        status, out, hdrs = call("POST", base + "/generate", greedy(PROMPTS[0]), {"x-request-id": f"req-{i}"})
        assert status == 200 and out["output_ids"] == ref
        assert hdrs["x-request-id"] == f"req-{i}"
        seen.add(hdrs["x-hfx-worker"])
    assert len(seen) == 2  # round robin over both workers
    status, out, _ = call("POST", base + "/v1/chat/completions", {
        "model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0},
        {"x-slo-class": "batch"})
    assert status == 200 and out["choices"][0]["message"]["content"] is not None
    status, out, _ = call("POST", base + "/v1/completions", {"prompt": "Hi", "max_tokens": 4, "temperature": 0,
                                                             "custom_params": {"slo": {"class": "standard"}}})
    assert status == 200 and out["choices"][0]["text"] is not None
    for path in ("/v1/models", "/model_info", "/server_info", "/health", "/readiness", "/liveness"):
        assert call("GET", base + path)[0] == 200, path
    assert call("POST", base + "/flush_cache")[0] == 200
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        text = r.read().decode()
    assert 'hfx_router_requests_total{endpoint="/generate",status="200"}' in text


def test_streaming_equals_direct(cli_router, servers):
    stock, hfx = servers
    for text in PROMPTS:
        _, direct, done_d = sse(stock.url, "/generate", greedy(text, 12))
        status, routed, done_r = sse(cli_router.url, "/generate", greedy(text, 12))
        assert status == 200 and done_d and done_r
        assert routed[-1]["output_ids"] == direct[-1]["output_ids"] and len(routed) > 1
        assert [e["text"] for e in routed][-1] == direct[-1]["text"]
    chat = {"model": "m", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8, "temperature": 0}
    _, direct, _ = sse(hfx.url, "/v1/chat/completions", chat)
    _, routed, done = sse(cli_router.url, "/v1/chat/completions", chat)
    content = lambda evs: "".join(e["choices"][0]["delta"].get("content") or "" for e in evs)  # noqa: E731
    assert done and content(routed) == content(direct)


def test_workers_show_the_tightest_running_tpot(cli_router):
    """Once an interactive stream (TPOT 40 ms, the router's default classes) has its first chunk, GET /workers
    names its TPOT on the worker that serves it (hfx routing packs tight requests there); once it ends, no
    worker has one."""
    seen = {}

    def look():
        seen["workers"] = call("GET", cli_router.url + "/workers")[1]["workers"]

    status, events, done = sse(cli_router.url, "/generate", greedy(PROMPTS[1], 24, ignore_eos=True),
                               {"x-slo-class": "interactive"}, on_first=look)
    assert status == 200 and done
    tight = {w["url"]: w["min_running_tpot_ms"] for w in seen["workers"]}
    assert sorted(tight.values(), key=lambda v: v is None) == [40.0, None]
    deadline = time.monotonic() + 10  # the router releases the stream's slot as its last byte goes out
    while True:
        after = [w["min_running_tpot_ms"] for w in call("GET", cli_router.url + "/workers")[1]["workers"]]
        if after == [None, None] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert after == [None, None]


def test_bad_input_is_4xx_and_router_keeps_serving(cli_router):
    base = cli_router.url
    cases = [("/v1/completions", {"prompt": "x", "max_tokens": -1}, 400),
             ("/v1/completions", {"prompt": "x", "custom_params": {"slo": {"class": "gold"}}}, 400),
             ("/generate", {"text": "x", "sampling_params": {"max_new_tokens": "ten"}}, 400),
             ("/generate", {"text": "x" * 1_100_000}, 413)]
    for path, body, code in cases:
        status, out, _ = call("POST", base + path, body)
        assert status == code and set(out["error"]) == {"message", "type", "param", "code"}, out
    req = urllib.request.Request(base + "/generate", data=b"{oops", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400
    assert call("POST", base + "/generate", greedy("still serving", 2))[0] == 200


def test_workers_remove_drains_then_add_back(cli_router, servers):
    stock, hfx = servers
    base = cli_router.url
    enc = urllib.parse.quote(stock.url, safe="")
    remove = [lambda: (time.sleep(0.4), call("DELETE", base + f"/workers/{enc}"))[1]]
    results = run_parallel([lambda i=i: call("POST", base + "/generate", greedy(f"drain {i}", 24, ignore_eos=True))
                            for i in range(4)] + remove)
    *served, (status, removed, _) = results
    assert status in (200, 202) and removed["status"] in ("removed", "draining"), removed
    assert all(r[0] == 200 and r[1]["meta_info"]["completion_tokens"] == 24 for r in served), served
    deadline = time.monotonic() + 10
    while call("GET", base + "/workers")[1]["total"] != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    listing = call("GET", base + "/workers")[1]
    assert [w["url"] for w in listing["workers"]] == [hfx.url]
    for _ in range(3):
        assert call("POST", base + "/generate", greedy("after removal", 2))[2]["x-hfx-worker"] == hfx.url
    status, added, _ = call("POST", base + "/workers", {"url": stock.url, "worker_type": "regular"})
    assert status == 200 and added["worker"]["is_healthy"] and added["worker_id"] == removed["worker_id"]
    assert {call("POST", base + "/generate", greedy("added", 2))[2]["x-hfx-worker"] for _ in range(2)} == \
        {stock.url, hfx.url}


def router_rejected(result) -> bool:
    status, body, _ = result
    return status == 429 and (body.get("error") or {}).get("code") == "slo_unattainable"  # not the plugin's 429


def test_admission_429_under_overload_and_queue_timeout(servers):
    """Predictions use the worker's reported model (fitted or the generic pre-fit one), so the target
    is set from the router's own idle prediction: idle, an interactive request is dispatched (the
    worker may still reject it itself); under a burst of batch requests it is answered 429 by the
    router. A tiny model on a CPU clears a burst in moments, so the router counts one token per
    character and polls every 5 s: the burst's work stays in its view while the probes arrive."""
    _, hfx = servers
    with RouterThread(["--worker-urls", hfx.url, "--policy", "hfx", "--hfx-chars-per-token", "1",
                       "--hfx-load-poll-interval-ms", "5000"]) as r:
        status, out, hdrs = call("POST", r.url + "/generate", greedy("Hi", 2), {"x-slo-class": "interactive",
                                                                               "x-slo-ttft-ms": "60000"})
        assert status == 200, out
        tight = {"x-slo-class": "interactive",
                 "x-slo-ttft-ms": f"{1.8 * float(hdrs['x-hfx-predicted-ttft-ms']) + 1:.0f}"}
        idle = call("POST", r.url + "/generate", greedy("Hi", 2), tight)
        assert not router_rejected(idle), idle
        burst = [lambda i=i: call("POST", r.url + "/generate", greedy(" ".join(f"w{(i * 7 + k) % 97}"
                                                                               for k in range(300)), 2),
                                  {"x-slo-class": "batch"}, timeout=300) for i in range(12)]
        # Probes right behind the burst (an idle 2-core machine prefills the whole burst in well under a
        # second), while the router still counts the burst's prompts as work ahead.
        probes = [lambda d=d: (time.sleep(0.02 + 0.05 * d), call("POST", r.url + "/generate", greedy("Hi", 2),
                                                                 tight))[1] for d in range(6)]
        out = run_parallel(burst + probes)
        loaded, probed = out[:12], out[12:]
        assert all(not isinstance(x, Exception) and x[0] == 200 for x in loaded), loaded  # best effort: served
        rejected = [p for p in probed if router_rejected(p)]
        assert rejected, (tight, [(p[0], p[2].get("x-hfx-predicted-ttft-ms")) if not isinstance(p, Exception) else p
                                  for p in probed])
        err = rejected[0][1]["error"]
        assert "'interactive'" in err["message"] and "predicted TTFT" in err["message"], err
    with RouterThread(["--worker-urls", hfx.url, "--policy", "round_robin", "--max-concurrent-requests", "1",
                       "--queue-size", "1", "--queue-timeout-secs", "0.5"]) as r:
        t0 = time.monotonic()
        out = run_parallel([lambda i=i: (time.sleep(0.2 * i), call("POST", r.url + "/generate",
                                                                    greedy(f"q{i}", 1024, ignore_eos=True)))[1]
                            for i in range(3)])
        codes = sorted(x[0] for x in out)
        errs = {x[1]["error"]["code"] for x in out if x[0] != 200}
        assert codes == [200, 429, 503] and errs == {"queue_full", "queue_timeout"}, out
        assert time.monotonic() - t0 < 60  # nobody waits forever


def test_worker_killed_mid_load_loses_no_request(cli_router, servers):
    stock, hfx = servers
    base = cli_router.url
    plain = [lambda i=i: call("POST", base + "/generate", greedy(f"kill {i}", 48, ignore_eos=True))
             for i in range(8)]
    streams = [lambda i=i: sse(base, "/generate", greedy(f"kill stream {i}", 48, ignore_eos=True)) for i in range(4)]
    killer = [lambda: (time.sleep(1.0), stock.stop())]
    out = run_parallel(plain + streams + killer)
    lost = [o for o in out[:12] if isinstance(o, Exception)]
    assert not lost, lost
    for status, body, _ in out[:8]:  # non-streaming: retried before any byte, so all succeed
        assert status == 200 and body["meta_info"]["completion_tokens"] == 48, body
    for status, events, done in out[8:12]:  # streams: complete, or ended by an error event
        assert status == 200 and done, events[-1:]
        assert events[-1].get("error") or events[-1]["meta_info"]["completion_tokens"] == 48
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        w = {x["url"]: x for x in call("GET", base + "/workers")[1]["workers"]}
        if not w[stock.url]["is_healthy"]:
            break
        time.sleep(0.2)
    assert not w[stock.url]["is_healthy"] and w[hfx.url]["is_healthy"]
    assert call("POST", base + "/generate", greedy("after the kill", 2))[0] == 200


def test_sigterm_drains_in_flight_streams(servers):
    _, hfx = servers
    r = RouterProc(["--worker-urls", hfx.url, "--policy", "random"]).wait()
    try:
        box = {}
        status, events, done = sse(r.url, "/generate", greedy("drain me", 40, ignore_eos=True),
                                   on_first=lambda: (box.setdefault("t", time.monotonic()),
                                                     r.proc.send_signal(signal.SIGTERM)))
        assert status == 200 and done and events[-1]["meta_info"]["completion_tokens"] == 40
        assert r.proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
        assert "timeout graceful shutdown exceeded" not in r.output()
    finally:
        r.stop()


# ---- P/D ----------------------------------------------------------------------------
PD_ENV = {"MOONCAKE_PROTOCOL": "tcp", "MC_FORCE_TCP": "1"}


@pytest.fixture(scope="module")
def pd_pair(servers, tiny_model, cpu_classes):
    """Reference outputs from the collocated HFX server, which is then stopped with the stock one
    (three SGLang servers at most at a time), and an HFX prefill + decode pair over Mooncake TCP."""
    _, hfx = servers
    reference = {p: hfx.post("/generate", greedy(p, 12))[1]["output_ids"] for p in PROMPTS}
    for s in servers:
        s.stop()
    boot = free_port()
    env = {**PD_ENV, "HFX_SLO_CLASSES": str(cpu_classes)}
    common = ["--disaggregation-transfer-backend", "mooncake"]
    prefill = SGLangServer(tiny_model, hfx=True, name="r-prefill", env=env, extra_args=[
        *common, "--disaggregation-mode", "prefill", "--disaggregation-bootstrap-port", str(boot)])
    decode = SGLangServer(tiny_model, hfx=True, name="r-decode", env=env, extra_args=[
        *common, "--disaggregation-mode", "decode", "--disaggregation-decode-retraction-backup", "cpu_tensor"])
    try:
        for s in (prefill, decode):
            s.start_async()
        for s in (prefill, decode):
            s.wait_healthy(300)
        yield prefill, decode, boot, reference
    finally:
        for s in (prefill, decode):
            s.stop()


def test_pd_through_the_router(pd_pair):
    prefill, decode, boot, reference = pd_pair
    r = RouterProc(["--pd-disaggregation", "--prefill", prefill.url, str(boot), "--decode", decode.url,
                    "--policy", "hfx"]).wait()
    try:
        for p in PROMPTS:
            status, out, hdrs = call("POST", r.url + "/generate", greedy(p, 12), {"x-slo-class": "interactive"})
            assert status == 200 and out["output_ids"] == reference[p], out  # the KV really moved
            assert hdrs["x-hfx-prefill-worker"] == prefill.url and hdrs["x-hfx-worker"] == decode.url
            status, events, done = sse(r.url, "/generate", greedy(p, 12))
            assert status == 200 and done and events[-1]["output_ids"] == reference[p]
        status, out, _ = call("POST", r.url + "/v1/chat/completions", {
            "model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
        assert status == 200 and out["choices"][0]["finish_reason"] == "length"
        workers = call("GET", r.url + "/workers")[1]
        assert workers["stats"] == {"regular_count": 0, "prefill_count": 1, "decode_count": 1}
        assert [w["bootstrap_port"] for w in workers["workers"] if w["worker_type"] == "prefill"] == [boot]
    finally:
        r.stop()

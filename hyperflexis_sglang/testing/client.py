"""A small streaming client that measures TTFT and TPOT of one request (SSE from /generate),
directly or through a P/D pair (what a P/D router does, without the router)."""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from urllib.parse import urlparse


@dataclass
class Timing:
    sent: float  # perf_counter when the request was sent
    first: float | None  # first output chunk
    done: float | None  # last chunk
    tokens: int  # completion tokens reported by the server
    status: int  # HTTP status
    error: str = ""  # error message, if any
    output_ids: tuple = ()

    @property
    def ttft(self) -> float | None:
        return None if self.first is None else self.first - self.sent

    @property
    def tpot(self) -> float | None:
        if self.first is None or self.done is None or self.tokens <= 1:
            return None
        return (self.done - self.first) / (self.tokens - 1)


def sse_data(resp):
    """The ``data:`` payloads (bytes) of an SSE response, in order, ``b"[DONE]"`` last when the server sent it."""
    while True:
        line = resp.readline()
        if not line:
            return
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        yield data
        if data == b"[DONE]":
            return


def stream_generate(url: str, body: dict, timeout: float = 300.0) -> Timing:
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    payload = json.dumps({**body, "stream": True}).encode()
    sent = time.perf_counter()
    conn.request("POST", "/generate", body=payload, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    t = Timing(sent, None, None, 0, resp.status)
    if resp.status != 200:
        t.error = resp.read().decode(errors="replace")
        conn.close()
        return t
    for data in sse_data(resp):
        if data == b"[DONE]":
            break
        chunk = json.loads(data)
        now = time.perf_counter()
        meta = chunk.get("meta_info", {})
        if t.first is None and (chunk.get("text") or chunk.get("output_ids")):
            t.first = now
        t.done = now
        t.tokens = meta.get("completion_tokens", t.tokens)
        if chunk.get("output_ids"):
            t.output_ids = tuple(chunk["output_ids"])
        reason = meta.get("finish_reason") or {}
        if isinstance(reason, dict) and reason.get("type") == "abort":
            t.error = reason.get("message", "aborted")
    conn.close()
    return t


def _post_json(url: str, body: dict, timeout: float) -> tuple[int, str]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


def pd_generate(prefill_url: str, decode_url: str, bootstrap_port: int, body: dict,
                bootstrap_host: str = "127.0.0.1", timeout: float = 300.0) -> Timing:
    """One request through a prefill/decode pair, as a P/D router sends it.

    The same body, with ``bootstrap_host``/``bootstrap_port`` of the prefill
    server and a random 63-bit ``bootstrap_room``, is POSTed to both servers
    at once; only the decode request streams, and its timing is returned (the
    answer is the decode server's). If the prefill server answers with an
    error (e.g. an SLO rejection), the decode request is aborted and the
    returned ``Timing`` carries the prefill status and message.
    """
    body = {**body, "bootstrap_host": bootstrap_host, "bootstrap_port": bootstrap_port,
            "bootstrap_room": random.getrandbits(63), "rid": body.get("rid") or uuid.uuid4().hex}
    prefill: dict = {}

    def send_prefill():
        status, text = _post_json(prefill_url + "/generate", {**body, "stream": False}, timeout)
        prefill.update(status=status, text=text)
        if status != 200:  # the decode side would wait for KV that never comes
            _post_json(decode_url + "/abort_request", {"rid": body["rid"]}, 30.0)

    th = threading.Thread(target=send_prefill, daemon=True)
    th.start()
    t = stream_generate(decode_url, body, timeout=timeout)
    th.join(timeout)
    if prefill.get("status", 200) != 200:
        t.status, t.error = prefill["status"], prefill["text"]
    return t


def burst(server, loose: int, tight: int, gap_s: float, prompt_words: int, out_tokens: int):
    """Send ``loose`` batch-class requests at once, then ``tight`` interactive ones ``gap_s`` later; their
    ``Timing``s by class (the plugin live test and ``bench/live/burst.py``)."""
    results: dict[str, list] = {"batch": [], "interactive": []}
    lock = threading.Lock()

    def one(cls, i):
        text = " ".join(f"w{(i * 7 + k) % 97}" for k in range(prompt_words))
        t = stream_generate(server.url, {"text": text, "sampling_params": {
            "max_new_tokens": out_tokens, "temperature": 0, "ignore_eos": True,
            "custom_params": {"slo": {"class": cls}}}})
        with lock:
            results[cls].append(t)

    threads = [threading.Thread(target=one, args=("batch", i)) for i in range(loose)]
    for th in threads:
        th.start()
    time.sleep(gap_s)
    late = [threading.Thread(target=one, args=("interactive", i)) for i in range(tight)]
    for th in late:
        th.start()
    for th in threads + late:
        th.join(300)
    return results


def hold_pool_then_cut_in(server, holders: int, hold_tokens: int, cut_tokens: int, prompt_words: int = 50,
                          top_logprobs: dict | None = None):
    """``holders`` long batch requests fill the KV pool; once they run, one interactive request arrives
    that does not fit beside them. Returns the holders' greedy outputs and finish times (by holder) and
    the interactive request's timing (the plugin's preemption test and ``bench/live/preempt.py``). With
    ``top_logprobs`` (a dict), the holders also ask for the two most likely tokens at every output position
    and it receives them by holder: ``[[(logprob, token id), (logprob, token id)], ...]``."""
    outs: dict[str, list] = {}
    done: dict[str, float] = {}

    def hold(i):
        text = " ".join(f"h{(i * 13 + k) % 89}" for k in range(prompt_words))
        body = {"text": text, "rid": f"holder-{i}-{uuid.uuid4().hex[:8]}", "sampling_params": {
            "max_new_tokens": hold_tokens, "temperature": 0, "ignore_eos": True,
            "custom_params": {"slo": {"class": "batch"}}}}
        if top_logprobs is not None:
            body.update(return_logprob=True, top_logprobs_num=2)
        status, out = server.post("/generate", body, timeout=300)
        done[f"holder-{i}"] = time.perf_counter()
        outs[f"holder-{i}"] = out["output_ids"] if status == 200 else (status, out)
        if top_logprobs is not None and status == 200:
            top_logprobs[f"holder-{i}"] = [[(float(e[0]), int(e[1])) for e in pos[:2]]
                                           for pos in out["meta_info"]["output_top_logprobs"]]

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(holders)]
    for th in threads:
        th.start()
    time.sleep(1.0)  # the holders are admitted in the first iterations and decode from then on
    cut = stream_generate(server.url, {"text": " ".join(f"c{k % 31}" for k in range(prompt_words)),
                                       "sampling_params": {"max_new_tokens": cut_tokens, "temperature": 0,
                                                           "ignore_eos": True,
                                                           "custom_params": {"slo": {"class": "interactive"}}}})
    for th in threads:
        th.join(300)
    return outs, done, cut

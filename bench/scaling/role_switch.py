"""P/D role transition time on real CPU SGLang: in place (``/pd_role_switch``) vs restart with peer weights.

One fleet behind the HFX router (P/D mode): two prefill servers and one
decode server, tiny generated model, KV over Mooncake TCP, every instance
started with ``--enable-pd-role-switch`` by the controller's ``local``
provisioner. The controller switches the second prefill server to decode
and back, ``--switches`` times in place (``role_switch: "api"``), then the
same number of times by restart (stop, start in the new role with
``--load-format dummy``, weights pulled from the running peers by the D2D
loader, verified, linked). After every switch, ``--requests`` greedy
requests go through the router; each answer must equal the one the fleet
gave before any switch (a wrong or failed answer is counted, not hidden).

Times are the controller's own records: drain (router stops sending; the
instance reports nothing in flight for two polls), switch (after the drain
until the instance serves in its new role), total. Medians per method.
Writes ``bench/results/scaling_role_switch.{md,json}``.

    python bench/scaling/role_switch.py [--switches 4] [--restart-switches 2] [--requests 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hyperflexis_sglang.controller.controller import Controller, ControllerConfig  # noqa: E402
from hyperflexis_sglang.controller.local import free_port  # noqa: E402
from hyperflexis_sglang.controller.provisioners.local import LocalConfig, LocalProvisioner  # noqa: E402
from hyperflexis_sglang.controller.router_client import RouterClient  # noqa: E402
from hyperflexis_sglang.controller.router_process import RouterProcess  # noqa: E402
from hyperflexis_sglang.controller.weights import default_loader  # noqa: E402
from hyperflexis_sglang.core.scaling.types import ScaleAction, ScaleDecision  # noqa: E402
from hyperflexis_sglang.core.slo import SLOCatalog  # noqa: E402
from hyperflexis_sglang.sglang_ext.tiny_model import ensure_tiny_model  # noqa: E402
from hyperflexis_sglang.sim.cli import write_atomic  # noqa: E402

OUT = ROOT / "bench" / "results" / "scaling_role_switch"
PROMPT = "Hello world"


class Idle:
    """Scaling policy that never acts: the benchmark issues the switches itself."""
    name = "none"

    def tick(self, snapshot, now):
        return ScaleDecision((), "benchmark drives the actions")


def generate(url: str, n: int = 8) -> tuple[int, list | str]:
    body = {"text": PROMPT, "sampling_params": {"max_new_tokens": n, "temperature": 0, "ignore_eos": True}}
    req = urllib.request.Request(url + "/generate", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())["output_ids"]
    except Exception as e:  # counted as a failed answer
        return 0, str(e)[:200]


def run(args) -> dict:
    model = ensure_tiny_model(args.cache)
    router = RouterProcess("127.0.0.1", free_port(), policy="round_robin", pd=True).start()
    prov = LocalProvisioner(LocalConfig(model=str(model), role_switch_api=True))
    ctl = Controller(prov, RouterClient(router.url), Idle(), SLOCatalog(),
                     ControllerConfig(tick_s=1.0, drain_poll_s=0.3, ready_timeout_s=600, role_switch="api"),
                     weight_loader=default_loader())
    records: list[dict] = []
    try:
        fleet = [ctl.execute(ScaleAction("add", role, weight_source="disk", reason="benchmark fleet"))
                 for role in ("prefill", "prefill", "decode")]
        status, reference = generate(router.url)
        if status != 200:
            raise RuntimeError(f"the fleet does not answer before any switch: {reference}")
        url = fleet[1]["url"]
        for method, count in (("api", args.switches), ("restart", args.restart_switches)):
            ctl.cfg = dataclasses.replace(ctl.cfg, role_switch=method)
            for k in range(count):
                role = "decode" if k % 2 == 0 else "prefill"
                t = ctl.execute(ScaleAction("switch_role", role, iid=url, reason=f"benchmark {method} {k + 1}"))
                url = t.get("new_url", url)
                answers = [generate(router.url) for _ in range(args.requests)]
                bad = [(s, ids) for s, ids in answers if s != 200 or ids != reference]
                wrong = len(bad)
                rec = {"method": t["method"], "asked": method, "to": role, "drain_s": t["drain_s"],
                       "switch_s": t["switch_s"], "total_s": t["total_s"], "healthy_s": t.get("healthy_s"),
                       "wrong_answers": wrong, "first_wrong": bad[0] if bad else None, "reason": t["method_reason"]}
                records.append(rec)
                print(f"{method:<8} -> {role:<8} switch {t['switch_s']:7.2f} s  total {t['total_s']:7.2f} s  "
                      f"wrong answers {wrong}/{args.requests}", flush=True)
    finally:
        ctl.stop()
        prov.stop_all()
        router.stop()
    return {"records": records, "requests_per_switch": args.requests, "cpu_cores": os.cpu_count()}


def summarise(res: dict) -> dict:
    out = {}
    for method in ("api", "restart"):
        rows = [r for r in res["records"] if r["asked"] == method]
        out[method] = {"switches": len(rows), "used": sorted({r["method"] for r in rows}),
                       "switch_s_median": statistics.median(r["switch_s"] for r in rows),
                       "total_s_median": statistics.median(r["total_s"] for r in rows),
                       "wrong_answers": sum(r["wrong_answers"] for r in rows)}
    out["restart_over_api_switch"] = out["restart"]["switch_s_median"] / max(out["api"]["switch_s_median"], 1e-9)
    return out


def _opt(x) -> str:
    return "" if x is None else f"{x:.2f}"


def table(res: dict, cmd: str) -> str:
    s = res["summary"]
    lines = ["# P/D role transition time (issue 5)", "", f"`{cmd}`", "",
             f"Real SGLang on the CPU ({res['cpu_cores']} cores), tiny generated model, two prefill servers and one "
             "decode server behind the HFX router, KV over Mooncake TCP, every instance started with "
             "`--enable-pd-role-switch`. The second prefill server is switched to decode and back; after every "
             f"switch {res['requests_per_switch']} greedy requests go through the router and must equal the answer "
             "from before any switch. Times from the controller's transition records: *switch* = after the drain "
             "until the instance serves in its new role; *total* includes the drain; *healthy* (restart only) = from the "
             "start of the new process until its /health answers, before weights from peers and linking.", "",
             "| method | switches | switch s (median) | total s (median) | wrong answers |", "|---|---|---|---|---|"]
    for m, label in (("api", "in place (`/pd_role_switch`)"), ("restart", "restart, weights from peers (D2D)")):
        r = s[m]
        lines.append(f"| {label} | {r['switches']} | {r['switch_s_median']:.2f} | {r['total_s_median']:.2f} | "
                     f"{r['wrong_answers']} |")
    lines += ["", f"Restart / in place (switch time, medians): {s['restart_over_api_switch']:.0f}x.", "",
              "| # | asked | used | to | drain s | switch s | total s | healthy s | wrong answers |",
              "|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(res["records"], 1):
        lines.append(f"| {i} | {r['asked']} | {r['method']} | {r['to']} | {r['drain_s']:.2f} | {r['switch_s']:.2f} | "
                     f"{r['total_s']:.2f} | {_opt(r.get('healthy_s'))} | "
                     f"{r['wrong_answers']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--switches", type=int, default=4, help="in-place switches (alternating P->D, D->P)")
    p.add_argument("--restart-switches", type=int, default=2, help="switches by restart (minutes each on a CPU)")
    p.add_argument("--requests", type=int, default=4, help="requests through the router after every switch")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "hfx-bench-tiny-llama")
    p.add_argument("--out", type=Path, default=OUT, help="output path without extension")
    args = p.parse_args(argv)
    if args.switches < 1 or args.restart_switches < 1 or args.requests < 1:
        p.error("--switches, --restart-switches and --requests must be >= 1")
    t0 = time.perf_counter()
    res = run(args)
    res["summary"] = summarise(res)
    res["wall_s"] = time.perf_counter() - t0
    cmd = "python bench/scaling/role_switch.py" + (f" --switches {args.switches}" if args.switches != 4 else "") \
        + (f" --restart-switches {args.restart_switches}" if args.restart_switches != 2 else "") \
        + (f" --requests {args.requests}" if args.requests != 4 else "")
    text = table(res, cmd)
    print(text)
    write_atomic(str(args.out) + ".md", text.encode())
    write_atomic(str(args.out) + ".json", (json.dumps({"command": cmd, **res}, indent=1) + "\n").encode())
    return 1 if any(res["summary"][m]["wrong_answers"] for m in ("api", "restart")) else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""SLO classes scaled to a CPU running the tiny test model (GPU-scale targets are all infeasible there)."""

CPU_CLASSES = {"default": "standard", "classes": {
    "interactive": {"ttft_ms": 3000, "tpot_ms": 1000, "priority": 2, "on_miss": "reject"},
    "standard": {"ttft_ms": 15000, "tpot_ms": 2000, "priority": 1},
    "batch": {"ttft_ms": 120000, "tpot_ms": 4000, "priority": 0}}}

"""SLO classes scaled to a CPU running the tiny test model (GPU-scale targets are all infeasible there).

The interactive TTFT (10 s) is above the time a prioritised request waits for
the 4096-token KV pool to free during the overload tests (with preemption off,
``HFX_PREEMPTION=0``, too) and below what it waits in FCFS order.
"""

CPU_CLASSES = {"default": "standard", "classes": {
    "interactive": {"ttft_ms": 10000, "tpot_ms": 1000, "priority": 2, "on_miss": "reject"},
    "standard": {"ttft_ms": 30000, "tpot_ms": 2000, "priority": 1},
    "batch": {"ttft_ms": 120000, "tpot_ms": 4000, "priority": 0}}}

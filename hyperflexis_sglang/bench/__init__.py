"""Load generation against live servers and routers (``python -m hyperflexis_sglang.bench.load``)."""

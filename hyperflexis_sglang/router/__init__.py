"""SLO-aware HTTP router: a drop-in replacement for ``python -m sglang_router.launch_router``.

``create_app(cfg)`` (``router/app.py``) builds the FastAPI app; ``python -m
hyperflexis_sglang.router`` parses sglang_router's command line (``router/cli.py``).
"""

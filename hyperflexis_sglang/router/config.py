"""The router's configuration: one pydantic model, validated once (the CLI is mapped from it).

Field names, defaults and meanings follow sglang-router 0.3.2's ``RouterArgs``
where the flag exists there; ``hfx_*`` fields are this router's additions.
Where a default differs from sglang-router's, the description says so.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

BASELINE_POLICIES = ("random", "round_robin", "cache_aware", "power_of_two", "manual")
POLICIES = (*BASELINE_POLICIES, "hfx")
# sglang-router policies this router does not have, and what runs instead (the CLI warns).
POLICY_ALIASES = {"bucket": "cache_aware"}
DEFAULT_REQUEST_ID_HEADERS = ("x-request-id", "x-correlation-id", "x-trace-id", "request-id")


class RouterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("0.0.0.0", description="address to bind")
    port: int = Field(30000, ge=0, le=65535, description="port to bind (0: any free port)")
    worker_urls: list[str] = Field(default_factory=list, description="regular (collocated) workers")
    policy: str = Field("cache_aware", description=f"routing policy: {', '.join(POLICIES)}")
    prefill_policy: Optional[str] = Field(None, description="P/D: policy for prefill workers (default: --policy)")
    decode_policy: Optional[str] = Field(None, description="P/D: policy for decode workers (default: --policy)")
    pd_disaggregation: bool = Field(False, description="prefill/decode disaggregated mode")
    prefill_urls: list[tuple[str, Optional[int]]] = Field(default_factory=list,
                                                          description="P/D: (prefill URL, bootstrap port or None)")
    decode_urls: list[str] = Field(default_factory=list, description="P/D: decode worker URLs")
    cache_threshold: float = Field(0.3, ge=0, le=1, description="cache_aware: prefix match rate to follow")
    balance_abs_threshold: int = Field(64, ge=0, description="cache_aware: absolute load gap that forces balancing")
    balance_rel_threshold: float = Field(1.5, ge=1, description="cache_aware: relative load gap that forces balancing")
    max_tree_size: int = Field(2 ** 26, gt=0, description="cache_aware/hfx: prefix blocks remembered per worker")
    assignment_mode: Literal["random", "min_load", "min_group"] = Field(
        "random", description="manual: how a new routing key is assigned")
    max_payload_size: int = Field(512 * 1024 * 1024, gt=0, description="largest request body in bytes (413 above)")
    api_key: Optional[str] = Field(None, description="clients must send 'Authorization: Bearer KEY'")
    log_level: Literal["debug", "info", "warn", "error"] = Field("info", description="log level")
    log_dir: Optional[str] = Field(None, description="also write logs to DIR/router.log")
    request_id_headers: list[str] = Field(default_factory=lambda: list(DEFAULT_REQUEST_ID_HEADERS),
                                          description="headers read (in order) for the request id")
    request_timeout_secs: float = Field(1800, gt=0, description="timeout of one upstream request")
    shutdown_grace_period_secs: float = Field(180, ge=0, description="drain time for in-flight requests")
    cors_allowed_origins: list[str] = Field(default_factory=list, description="CORS allowed origins")
    max_concurrent_requests: int = Field(-1, description="requests in flight at most (-1: no limit)")
    queue_size: int = Field(100, ge=0, description="requests waiting at the router at most (0: no queue)")
    queue_timeout_secs: float = Field(60, gt=0, description="longest wait in the router's queue")
    retry_max_retries: int = Field(5, ge=1, description="attempts per request (1: no retry)")
    retry_initial_backoff_ms: float = Field(50, gt=0, description="first retry backoff")
    retry_max_backoff_ms: float = Field(30000, gt=0, description="largest retry backoff")
    retry_backoff_multiplier: float = Field(1.5, ge=1, description="backoff growth per retry")
    retry_jitter_factor: float = Field(0.2, ge=0, le=1, description="random share added/removed from a backoff")
    disable_retries: bool = Field(False, description="one attempt per request")
    cb_failure_threshold: int = Field(10, ge=1, description="consecutive failures that open a worker's circuit")
    cb_success_threshold: int = Field(3, ge=1, description="half-open successes that close it")
    cb_timeout_duration_secs: float = Field(60, gt=0, description="open time before a half-open trial")
    cb_window_duration_secs: float = Field(120, gt=0, description="failures older than this are forgotten")
    disable_circuit_breaker: bool = Field(False, description="never open circuits")
    health_failure_threshold: int = Field(3, ge=1, description="consecutive failed checks: unhealthy")
    health_success_threshold: int = Field(2, ge=1, description="consecutive good checks: healthy again")
    health_check_timeout_secs: float = Field(5, gt=0, description="timeout of one health/load check")
    health_check_interval_secs: float = Field(60, gt=0, description="health endpoint check interval, for workers "
                                              "without /v1/loads (the load poll checks the others)")
    health_check_endpoint: str = Field("/health", description="health endpoint of a worker")
    disable_health_check: bool = Field(False, description="route to workers whatever their checks say")
    prometheus_host: str = Field("0.0.0.0", description="host of the separate metrics server")
    prometheus_port: Optional[int] = Field(None, description="also serve /metrics on this port (sglang-router "
                                           "always starts one on 29000; here /metrics is on the router's port)")
    prometheus_duration_buckets: Optional[list[float]] = Field(None, description="latency histogram buckets (s)")
    hfx_slo_classes: Optional[str] = Field(None, description="JSON/TOML SLO class file (as HFX_SLO_CLASSES)")
    hfx_load_poll_interval_ms: float = Field(200, gt=0, description="worker load poll interval")
    hfx_perf_refresh_secs: float = Field(5, gt=0, description="how often workers' performance models are read")
    hfx_chars_per_token: float = Field(4.0, gt=0, description="prompt characters per token (length estimate)")
    hfx_prefix_block_tokens: int = Field(64, gt=0, description="tokens per hashed prefix block")
    hfx_bin_pack_ttft_ms: float = Field(10000, description="hfx: requests with a TTFT target >= this bin-pack "
                                        "(<= 0: never)")
    hfx_tight_tpot_ms: float = Field(100, ge=0, description="hfx: requests with a TPOT target below this are "
                                     "tight and packed onto few workers (0: no packing)")
    hfx_max_hold_fraction: float = Field(0.5, ge=0, le=1, description="hfx: a best-effort request no worker can "
                                         "serve in time is held at most this share of its TTFT target")
    hfx_pd_fallback_collocated: bool = Field(False, description="P/D: use regular workers when no prefill worker "
                                             "is healthy or predicted in time")

    @model_validator(mode="after")
    def _check(self) -> "RouterConfig":
        for name in ("policy", "prefill_policy", "decode_policy"):
            value = getattr(self, name)
            if value is not None and value not in POLICIES:
                raise ValueError(f"{name} must be one of {', '.join(POLICIES)}, got {value!r}")
        for url in [*self.worker_urls, *(u for u, _ in self.prefill_urls), *self.decode_urls]:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"worker URL must start with http:// or https://, got {url!r}")
        if self.pd_disaggregation and not (self.prefill_urls and self.decode_urls) and (
                self.prefill_urls or self.decode_urls):
            raise ValueError("--pd-disaggregation needs both --prefill and --decode workers (or neither, "
                             "to add them later through POST /workers)")
        return self

    @property
    def attempts(self) -> int:
        return 1 if self.disable_retries else self.retry_max_retries

"""Prometheus metrics of the server, with vLLM's metric names under the ``gfx906_llm:`` prefix.

Names and meanings follow vLLM's ``vllm/v1/metrics/loggers.py`` (PrometheusStatLogger):
``vllm:num_requests_running`` -> ``gfx906_llm:num_requests_running`` and so on. Every metric
carries the ``model_name`` label, as vLLM's do. The metrics live in their own
``CollectorRegistry`` (never the process-global one), so several servers or tests in one process
do not collide.

``ServerMetrics`` is an AsyncEngine observer: ``on_step`` / ``on_abort`` run in the engine's loop
thread (prometheus-client metrics are thread-safe); gauges are refreshed from
``AsyncEngine.get_stats()`` when /metrics is scraped (``update_from_stats``).
"""

from __future__ import annotations

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest)

PREFIX = "gfx906_llm:"

# Buckets as in vLLM's PrometheusStatLogger (seconds / tokens).
_TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]
_TPOT_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                 20.0, 40.0, 80.0]
_LATENCY_BUCKETS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0]
_TOKEN_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000]

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServerMetrics:
    """The server's metrics for one served model (``model_name`` label)."""

    def __init__(self, model_name: str):
        disable_created_metrics()  # no *_created series (process-wide switch, as vLLM sets it)
        self.registry = CollectorRegistry()
        self.model_name = model_name
        lbl = ["model_name"]
        r = self.registry

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(PREFIX + name, doc, lbl, registry=r).labels(model_name)

        def hist(name: str, doc: str, buckets: list[float]) -> Histogram:
            return Histogram(PREFIX + name, doc, lbl, buckets=buckets, registry=r).labels(model_name)

        def counter(name: str, doc: str) -> Counter:
            return Counter(PREFIX + name, doc, lbl, registry=r).labels(model_name)

        self.num_requests_running = gauge("num_requests_running", "Number of requests in model execution batches.")
        self.num_requests_waiting = gauge("num_requests_waiting", "Number of requests waiting to be processed.")
        self.kv_cache_usage_perc = gauge("kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        self.num_free_blocks = gauge("num_free_kv_blocks", "Free KV-cache blocks (gfx906-llm extra).")
        self.num_total_blocks = gauge("num_total_kv_blocks", "Total KV-cache blocks (gfx906-llm extra).")
        self.num_preemptions = counter("num_preemptions", "Cumulative number of preemptions by the engine.")
        self.prompt_tokens = counter("prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("generation_tokens", "Number of generation tokens processed.")
        self.engine_step_errors = counter("engine_step_errors", "Engine steps that raised (gfx906-llm extra).")
        self._request_success = Counter(PREFIX + "request_success", "Count of finished requests by finish reason.",
                                        ["model_name", "finished_reason"], registry=r)
        self.time_to_first_token = hist("time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                                        _TTFT_BUCKETS)
        self.time_per_output_token = hist("time_per_output_token_seconds",
                                          "Histogram of time per output token in seconds (mean over a request).",
                                          _TPOT_BUCKETS)
        self.e2e_latency = hist("e2e_request_latency_seconds", "Histogram of end to end request latency in seconds.",
                                _LATENCY_BUCKETS)
        self.queue_time = hist("request_queue_time_seconds",
                               "Histogram of time spent waiting before the first schedule, in seconds.",
                               _LATENCY_BUCKETS)
        self.request_prompt_tokens = hist("request_prompt_tokens", "Number of prefill tokens processed per request.",
                                          _TOKEN_BUCKETS)
        self.request_generation_tokens = hist("request_generation_tokens",
                                              "Number of generation tokens processed per request.", _TOKEN_BUCKETS)
        self._seen: dict[str, int] = {}  # request_id -> generated tokens counted so far (loop thread)
        self._preemptions_seen = 0
        self._step_errors_seen = 0

    def request_success(self, finished_reason: str) -> Counter:
        return self._request_success.labels(self.model_name, finished_reason)

    # ---- AsyncEngine observer (loop thread) ---------------------------------------------------
    def on_step(self, outputs: list) -> None:
        """Count tokens of the outputs of one step; observe latencies of finished requests."""
        for out in outputs:
            num_gen = sum(len(c.token_ids) for c in out.outputs)
            prev = self._seen.get(out.request_id)
            if prev is None:
                self.prompt_tokens.inc(len(out.prompt_token_ids))
                prev = 0
            if num_gen > prev:
                self.generation_tokens.inc(num_gen - prev)
            if not out.finished:
                self._seen[out.request_id] = num_gen
                continue
            self._seen.pop(out.request_id, None)
            reasons = {c.finish_reason for c in out.outputs}
            self.request_success("abort" if "abort" in reasons else
                                 "length" if reasons == {"length"} else "stop").inc()
            self._observe_finished(out, num_gen)

    def on_abort(self, request_id: str) -> None:
        """A request that ended (abort, engine failure) without a final output from the engine."""
        self._seen.pop(request_id, None)
        self.request_success("abort").inc()

    def _observe_finished(self, out, num_gen: int) -> None:
        m = out.metrics
        self.request_prompt_tokens.observe(len(out.prompt_token_ids))
        self.request_generation_tokens.observe(num_gen)
        if m.finished_time is not None:
            self.e2e_latency.observe(max(0.0, m.finished_time - m.arrival_time))
        if m.first_scheduled_time is not None:
            self.queue_time.observe(max(0.0, m.first_scheduled_time - m.arrival_time))
        if m.first_token_time is not None:
            self.time_to_first_token.observe(max(0.0, m.first_token_time - m.arrival_time))
            n = max(len(c.token_ids) for c in out.outputs)  # decode steps of the longest of the n
            if m.last_token_time is not None and n > 1:
                self.time_per_output_token.observe(max(0.0, (m.last_token_time - m.first_token_time) / (n - 1)))

    # ---- scrape --------------------------------------------------------------------------------
    def update_from_stats(self, stats, num_step_errors: int = 0) -> None:
        """Refresh the gauges from an ``EngineStats`` snapshot (None: engine not loaded)."""
        if stats is not None:
            self.num_requests_running.set(stats.num_running)
            self.num_requests_waiting.set(stats.num_waiting)
            self.kv_cache_usage_perc.set(stats.kv_cache_usage)
            self.num_free_blocks.set(stats.num_free_blocks)
            self.num_total_blocks.set(stats.num_total_blocks)
            if stats.num_preemptions > self._preemptions_seen:
                self.num_preemptions.inc(stats.num_preemptions - self._preemptions_seen)
                self._preemptions_seen = stats.num_preemptions
        if num_step_errors > self._step_errors_seen:
            self.engine_step_errors.inc(num_step_errors - self._step_errors_seen)
            self._step_errors_seen = num_step_errors

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)

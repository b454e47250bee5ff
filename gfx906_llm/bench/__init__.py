"""``gfx906-llm bench latency | throughput | serve``: speed figures as JSON (vLLM's benchmark set).

- ``latency``: one batch at a time through an in-process ``LLMEngine``: time to first token
  (TTFT), time per output token (TPOT), end-to-end latency, with percentiles.
- ``throughput``: offline ``LLM.generate`` over many prompts: requests/s, output and total tokens/s.
- ``serve``: streaming load against a running OpenAI-compatible server at a list of
  concurrencies; optional PNG of throughput and latency against concurrency (matplotlib).
"""

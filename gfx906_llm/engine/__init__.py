"""The engine: requests, the paged-KV block manager, the scheduler and the step loop.

request.py, block_manager.py and scheduler.py import no torch: the engine gets its model runner
injected (vLLM V1's EngineCore / Scheduler split).
"""

"""Front ends of the engine: the OpenAI-compatible HTTP server (``openai/``) and its metrics."""

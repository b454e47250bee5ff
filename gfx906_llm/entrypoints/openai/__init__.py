"""OpenAI-compatible API: request/response models (protocol.py), the completion and chat
handlers (serving_*.py) and the FastAPI/uvicorn server (api_server.py)."""

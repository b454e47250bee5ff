"""Model definitions, looked up by Hugging Face architecture name (models/registry.py)."""

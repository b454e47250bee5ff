"""Model loading: Hugging Face folders (safetensors) and GGUF files."""

from gfx906_llm.loader.model_loader import LoadedModel, load_model, resolve_model_path

__all__ = ["LoadedModel", "load_model", "resolve_model_path"]

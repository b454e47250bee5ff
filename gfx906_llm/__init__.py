"""gfx906-llm: a lean LLM inference server for AMD gfx906, honest on every other target."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # lazy: `import gfx906_llm` stays light (no torch/transformers until used)
    if name == "LLM":
        from gfx906_llm.llm import LLM

        return LLM
    if name == "SamplingParams":
        from gfx906_llm.sampling_params import SamplingParams

        return SamplingParams
    raise AttributeError(name)

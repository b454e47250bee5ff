"""Triton kernels tuned for gfx906 (wave64, no matrix cores, 64 KiB LDS, fp16), with generic
launch settings for gfx90a, gfx942, gfx1100 and NVIDIA.

Each module holds a kernel, its launcher and its per-arch launch ``CONFIGS`` table (keyed by
``gfx906_llm.platform.Platform.config_key``), and an ``isa_specs()`` function listing the
configurations that the ISA report (``gfx906_llm.kernels.isa``) compiles. Importing a module
here imports triton; nothing outside this folder and the platform kernel table does.
"""

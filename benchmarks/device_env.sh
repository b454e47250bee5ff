# Source this at the start of a command on the GPU machine (the device tool), from the repo root:
#   source benchmarks/device_env.sh
# It installs the carried wheels (.whl/: gguf, fastapi, uvicorn, pydantic, ... that the machine's
# image lacks) into /tmp/site, lays the package out as it installs (kernels/ -> gfx906_llm.kernels,
# quant/ -> gfx906_llm.quant) under /tmp/pkg, and exports PYTHONPATH and REPO. Run Python from a
# folder outside the repo (cd /tmp) so that the uninstalled top-level folders do not shadow it.
REPO=$(pwd); export REPO
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
fi
rm -rf /tmp/pkg && mkdir -p /tmp/pkg/gfx906_llm
cp -r gfx906_llm/* /tmp/pkg/gfx906_llm/ && cp -r kernels /tmp/pkg/gfx906_llm/kernels && cp -r quant /tmp/pkg/gfx906_llm/quant
printf '#!/bin/sh\nexec python3 -m gfx906_llm.cli "$@"\n' > /tmp/pkg/gfx906-llm && chmod +x /tmp/pkg/gfx906-llm
export PYTHONPATH=/tmp/site:/tmp/pkg:$REPO/benchmarks PATH=/tmp/pkg:$PATH PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

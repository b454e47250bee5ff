#!/usr/bin/env bash
# GPU correctness checks in one GPU-machine call (the device tool), results into $1:
#   source benchmarks/device_env.sh && cd /tmp && bash $REPO/benchmarks/gpu_checks.sh $OUT
# 1. the GPU tests of the kernels (real sizes: W4A16 GEMV/GEMM, fused ops, fused qkv rotary +
#    cache write, attention, GGUF) and of decode-graph replay;
# 2. the engine on random tiny GPTQ and GGUF models, GPU (fused kernels, split-K partials summed by
#    their consumers, graphs) against the fp32 CPU path: log-probs and greedy tokens;
# 3. graph replay against eager on a random 16 x 2048 fp16 Llama (graph_check.py).
# Each step has its own time limit and prints a short summary.
set -u
OUTDIR=${1:?output folder}
B=$REPO/benchmarks
mkdir -p "$OUTDIR"
export PYTHONPATH=$PYTHONPATH:$REPO
timeout 240 python3 -m pytest -q $REPO/tests/kernels/test_w4a16.py $REPO/tests/kernels/test_fused_ops.py \
    $REPO/tests/kernels/test_qkv_rope_cache.py $REPO/tests/kernels/test_attention_triton.py \
    $REPO/tests/kernels/test_cache_ops.py $REPO/tests/kernels/test_gguf_kernels.py $REPO/tests/worker/test_cuda_graph.py \
    --import-mode=importlib -p no:cacheprovider -k "not isa" > "$OUTDIR/pytest_gpu.txt" 2>&1
echo "pytest rc=$?"; grep -E "^(FAILED|ERROR)" "$OUTDIR/pytest_gpu.txt" | head -8; tail -1 "$OUTDIR/pytest_gpu.txt"
for fmt in gptq gguf-q4_k; do
    timeout 120 python3 $B/gguf_engine_check.py --format $fmt --dir /tmp/check_$fmt > "$OUTDIR/engine_$fmt.json" \
        2> "$OUTDIR/engine_$fmt.err"; echo "engine check $fmt rc=$?"; tail -c 600 "$OUTDIR/engine_$fmt.json"
done
timeout 150 python3 $B/graph_check.py > "$OUTDIR/graph_check.json" 2> "$OUTDIR/graph_check.err"
echo "graph_check rc=$?"; tail -c 800 "$OUTDIR/graph_check.json"

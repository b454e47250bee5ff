#!/usr/bin/env bash
# End-to-end figures of issues 4-6 in one GPU-machine call (the device tool), JSON into $1:
#   source benchmarks/device_env.sh && cd /tmp && bash $REPO/benchmarks/e2e_all.sh $OUT
# Writes the Llama-3-8B-shaped random models (GPTQ 4-bit g128, GGUF Q4_K_M, fp16) under /tmp/rand8b,
# runs benchmarks/e2e_decode.py on each (batch 1, 8, 32, 64), the batch-1 step profile of the GPTQ
# and GGUF models, bench_gguf.py's decode section, and the GPU tests of the GEMV/GGUF/fused-op
# kernels and of graph replay. Every step has its own
# time limit, so one slow step cannot eat the call; each prints a short summary last.
# E2E_SKIP_GGUF_BENCH=1 skips bench_gguf.py, E2E_SKIP_PYTEST=1 the tests (when gpu_checks.sh ran them).
set -u
OUTDIR=${1:?output folder}
B=$REPO/benchmarks
M=/tmp/rand8b
mkdir -p "$OUTDIR" $M/gguf-q4_k
for fmt in gptq gguf-q4_k fp16; do
    dst=$M/$fmt
    [ "$fmt" = gguf-q4_k ] && dst=$M/$fmt/model.gguf
    timeout 120 python3 -m gfx906_llm.bench.random_model --format $fmt --shape llama3-8b --out $dst --overwrite \
        > "$OUTDIR/make_$fmt.txt" 2>&1 || echo "make $fmt failed: $(tail -2 "$OUTDIR/make_$fmt.txt")"
done
for fmt in gptq gguf-q4_k fp16; do
    dst=$M/$fmt
    [ "$fmt" = gguf-q4_k ] && dst=$M/$fmt/model.gguf
    timeout 150 python3 $B/e2e_decode.py $dst --batch-sizes 1 8 32 64 --label $fmt --out "$OUTDIR/e2e_$fmt.json" \
        > "$OUTDIR/e2e_$fmt.txt" 2>&1; echo "e2e $fmt rc=$?"; tail -4 "$OUTDIR/e2e_$fmt.txt"
done
for fmt in gptq gguf-q4_k; do
    dst=$M/$fmt
    [ "$fmt" = gguf-q4_k ] && dst=$M/$fmt/model.gguf
    timeout 90 python3 $B/profile_step.py $dst > "$OUTDIR/prof_$fmt.txt" 2>&1; echo "profile $fmt rc=$?"
    grep -v Warn "$OUTDIR/prof_$fmt.txt" | head -14
done
[ "${E2E_SKIP_GGUF_BENCH:-0}" = 1 ] || timeout 120 python3 $B/bench_gguf.py --sections decode --out "$OUTDIR/gguf.json" > "$OUTDIR/gguf.txt" 2>&1
echo "bench_gguf rc=$?"
[ "${E2E_SKIP_PYTEST:-0}" = 1 ] && exit 0  # gpu_checks.sh ran them
export PYTHONPATH=$PYTHONPATH:$REPO
timeout 150 python3 -m pytest -q $REPO/tests/kernels/test_w4a16.py $REPO/tests/kernels/test_gguf_kernels.py \
    $REPO/tests/kernels/test_fused_ops.py $REPO/tests/kernels/test_qkv_rope_cache.py $REPO/tests/quant/test_gguf_merge.py $REPO/tests/worker/test_cuda_graph.py \
    --import-mode=importlib -p no:cacheprovider > "$OUTDIR/pytest_gpu.txt" 2>&1
echo "pytest rc=$?"; tail -3 "$OUTDIR/pytest_gpu.txt"

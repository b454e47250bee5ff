#!/usr/bin/env bash
# One GPU-machine call (the device tool) for a session's closing figures, JSON into $1:
#   source benchmarks/device_env.sh && cd /tmp && bash $REPO/benchmarks/session_check.sh $OUT
# 1. GPU tests of the split-K accumulator / fused ops / qkv_rope_cache (real sizes, PDL in a graph);
# 2. the engine on a random tiny GPTQ model on the GPU (graphs, async scheduling) against the fp32
#    CPU path; 3. Llama-3-8B-shaped GPTQ decode with async scheduling and without (batch 1, 8),
#    then graphs vs eager on a random fp16 Llama (graph_check.py), then GGUF Q4_K_M and fp16 decode.
# The 8B models are written in the background while 1-2 run. Each step has its own time limit.
set -u
OUTDIR=${1:?output folder}
B=$REPO/benchmarks
M=/tmp/rand8b
mkdir -p "$OUTDIR" $M/gguf-q4_k
export PYTHONPATH=$PYTHONPATH:$REPO
(for fmt in gptq gguf-q4_k fp16; do
    dst=$M/$fmt; [ "$fmt" = gguf-q4_k ] && dst=$M/$fmt/model.gguf
    timeout 150 python3 -m gfx906_llm.bench.random_model --format $fmt --shape llama3-8b --out $dst --overwrite \
        > "$OUTDIR/make_$fmt.txt" 2>&1 || echo "make $fmt failed"
done) &
K=$REPO/tests/kernels
timeout 100 python3 -m pytest -q $K/test_splitk_accumulator.py $K/test_qkv_rope_cache.py $K/test_fused_ops.py \
    --import-mode=importlib -p no:cacheprovider > "$OUTDIR/pytest_gpu.txt" 2>&1
echo "pytest rc=$?"; grep -E "^(FAILED|ERROR)" "$OUTDIR/pytest_gpu.txt" | head -8; tail -1 "$OUTDIR/pytest_gpu.txt"
timeout 90 python3 $B/gguf_engine_check.py --format gptq --dir /tmp/check_gptq > "$OUTDIR/engine_gptq.json" \
    2> "$OUTDIR/engine_gptq.err"; echo "engine check gptq rc=$?"; tail -c 250 "$OUTDIR/engine_gptq.json"; echo
wait
summary() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['model'], 'async', d.get('async_scheduling'), 'start_s', round(d['engine_start_s'],1), 'roof', round(d['roof_tok_s']), [(r['batch'], round(r['decode_tok_s'])) for r in d['runs']], 'frac', round(d.get('fraction_of_roof', 0), 3), 'replay_ms', {k: round(v, 3) for k, v in d.get('replay_only_ms', {}).items()})" "$1"; }
e2e() {  # label model timeout args...
    local label=$1 model=$2 t=$3; shift 3
    timeout $t python3 $B/e2e_decode.py $model --label $label --out "$OUTDIR/e2e_$label.json" "$@" > "$OUTDIR/e2e_$label.txt" 2>&1
    echo "e2e $label rc=$?"; grep -i "capture failed" "$OUTDIR/e2e_$label.txt" | head -2; summary "$OUTDIR/e2e_$label.json"
}
e2e gptq $M/gptq 150 --batch-sizes 1 8 32 64
e2e gptq_sync $M/gptq 90 --batch-sizes 1 8 --no-async-scheduling
timeout 120 python3 $B/graph_check.py > "$OUTDIR/graph_check.json" 2> "$OUTDIR/graph_check.err"
echo "graph_check rc=$?"; python3 -c "import json; d=json.load(open('$OUTDIR/graph_check.json')); print({k: v for k, v in d.items() if not isinstance(v, (list, dict))}, d['same_tokens'], max(x['max_lp_diff_before'] or 0 for x in d['divergence']))"
e2e gguf-q4_k $M/gguf-q4_k/model.gguf 130 --batch-sizes 1 8 32 64
e2e fp16 $M/fp16 130 --batch-sizes 1 8 32 64

#!/usr/bin/env bash
# A/B of end-to-end decode in one GPU-machine call: a base tree (a `git archive` tarball carried
# as an ignored path) against the working tree, on one Llama-3-8B-shaped random model.
#   bash benchmarks/ab_e2e.sh BASE.tar OUTDIR [FORMAT=gptq] [BATCH_SIZES="1 8"]
# (run from the repo root on the device). Prints one summary line per run, then the working
# tree's batch-1 kernel profile (profile_graph.py) when PROFILE=1.
set -u
BASE_TAR=${1:?base tarball}; OUTDIR=${2:?output folder}; FMT=${3:-gptq}; BS=${4:-1 8}
HERE=$(pwd)
M=/tmp/rand8b/$FMT; DST=$M; [ "$FMT" = gguf-q4_k ] && DST=$M/model.gguf
mkdir -p "$OUTDIR" /tmp/ab_base /tmp/rand8b; [ "$FMT" = gguf-q4_k ] && mkdir -p $M
tar -xf "$BASE_TAR" -C /tmp/ab_base
summary() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], 'roof', round(d['roof_tok_s']), [(r['batch'], round(r['decode_tok_s'])) for r in d['runs']], 'frac', round(d.get('fraction_of_roof', 0), 3), 'replay_ms', {k: round(v, 3) for k, v in d.get('replay_only_ms', {}).items()}, 'start_s', round(d['engine_start_s'], 1))" "$1" "$2"; }
run_tree() {  # label tree
    (cd "$2" && source benchmarks/device_env.sh && cd /tmp && export PYTHONPATH=$PYTHONPATH:$REPO &&
     { [ -f "$DST" ] || [ -f "$DST/config.json" ] || timeout 150 python3 -m gfx906_llm.bench.random_model --format $FMT --shape llama3-8b \
           --out $DST --overwrite > "$OUTDIR/make.txt" 2>&1; } &&
     timeout 200 python3 $REPO/benchmarks/e2e_decode.py $DST --label $1 --batch-sizes $BS \
         --out "$OUTDIR/e2e_$1.json" > "$OUTDIR/e2e_$1.txt" 2>&1)
    echo "$1 rc=$?"; summary "$OUTDIR/e2e_$1.json" "$1"
}
run_tree base /tmp/ab_base
run_tree new "$HERE"
run_tree base2 /tmp/ab_base
if [ "${PROFILE:-0}" = 1 ]; then
    (source benchmarks/device_env.sh && cd /tmp && timeout 120 python3 $REPO/benchmarks/profile_graph.py $DST \
        > "$OUTDIR/prof.txt" 2> "$OUTDIR/prof.err"; echo "profile rc=$?"; tail -n +2 "$OUTDIR/prof.txt" | head -18)
fi

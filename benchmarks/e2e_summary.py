"""Print one line per ``e2e_decode.py`` JSON file: batch-1 decode vs roof, concurrency, start-up.

    python benchmarks/e2e_summary.py RESULT.json [...]
"""

import json
import sys

for path in sys.argv[1:]:
    try:
        d = json.load(open(path))
    except (OSError, ValueError) as e:
        print(f"{path}: {e}")
        continue
    runs = {r["batch"]: r for r in d.get("runs", [])}
    b = " ".join(f"b{k}={v['decode_tok_s']:.0f}/{v['output_tok_s']:.0f}" for k, v in sorted(runs.items()))
    ttft = d.get("time_to_first_served_token_runs_s") or d.get("time_to_first_served_token", {}).get("seconds")
    eager = d.get("eager_batch1", {}).get("decode_tok_s")
    print(f"{d['model']}: copy {d['copy_bandwidth_GBs']:.0f} GB/s, weights {d['weight_bytes'] / 2**30:.2f} GiB, "
          f"roof {d['roof_tok_s']:.0f} tok/s, fraction {d.get('fraction_of_roof', 0):.2f}, "
          f"decode/output tok/s {b}, eager b1 {eager and round(eager)}, "
          f"serve->first token {ttft} s, engine start {d['engine_start_s']:.1f} s, "
          f"replay ms {d.get('replay_only_ms')}")

#!/bin/bash
# Label-free self-improvement with co-improving chains (Lee et al. 2025), EXPERIMENTAL, orchestrated by hand
# until dvc.yaml has parallel chains (see README "Label-free chains").
#
#   bash scripts/label_free_chains.sh OUT [PRESET] [SEEDS]      e.g. bash scripts/label_free_chains.sh ../chains
#
# Each seed j gets its own clone of this repository's HEAD, OUT/chain<j>, with PRESET (default easy-to-hard) and
# the seed keys of `restem seeds run` (restem.query.seeds.SEED_KEYS) set to j. At iteration k every chain's
# filter is the label-free `agreement` filter whose voters are ALL chains' current models (models/iter<k-1>, copied into
# inputs/voters/c<i>): a sample is kept only when its answer is the one at least a majority of the chains' models
# give greedily (filter.voters.min_agree), and it passes the task's consistency check. No verifier decides; the
# verifier's verdicts only measure each filter's precision (metrics/filter/iter<k>.json). The chains share one
# DVC cache (OUT/cache), so a base trained before is reused. Needs the easy-to-hard layout: one Grow pool slice per
# iteration, listed in loop.iterations.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 OUT [PRESET] [SEEDS]  (SEEDS: e.g. '0 1 2')" >&2; exit 2; }
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
PRESET=${2:-easy-to-hard}
SEEDS=(${3:-0 1 2})
REPO=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
MAJORITY=$(( ${#SEEDS[@]} / 2 + 1 ))
VOTERS=$(printf 'inputs/voters/c%s, ' "${SEEDS[@]}"); VOTERS="[${VOTERS%, }]"

for j in "${SEEDS[@]}"; do
  rm -rf "$OUT/chain$j" && git clone -q "$REPO" "$OUT/chain$j"
  (cd "$OUT/chain$j"
   restem preset "$PRESET" > /dev/null
   dvc config --local cache.dir "$OUT/cache"
   python - "$j" "$VOTERS" "$MAJORITY" <<'EOF'
import sys
from ruamel.yaml import YAML  # dvc's own YAML library: keeps params.yaml's comments
from restem.query.seeds import SEED_KEYS  # the keys one seed sets, as `restem seeds run` sets them
seed, voters, majority = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
y = YAML()
doc = y.load(open("params.yaml"))
for dotted in SEED_KEYS:
    *path, last = dotted.split(".")
    node = doc
    for part in path:
        node = node[part]
    node[last] = seed
doc["filter"]["mode"] = "agreement"
doc["filter"]["voters"]["seeds"] = []
doc["filter"]["voters"]["checkpoints"] = YAML(typ="safe").load(voters)
doc["filter"]["voters"]["min_agree"] = majority
y.dump(doc, open("params.yaml", "w"))
EOF
   dvc repro -s problems base reward_model > "$OUT/chain$j.log" 2>&1)
done
ITERATIONS=$(cd "$OUT/chain${SEEDS[0]}" && python -c "
from restem.schemas.params import load_params
print(' '.join(sorted(load_params().loop.iterations, key=int)))")
for k in $ITERATIONS; do
  for j in "${SEEDS[@]}"; do
    for i in "${SEEDS[@]}"; do
      rm -rf "$OUT/chain$j/inputs/voters/c$i" && mkdir -p "$OUT/chain$j/inputs/voters"
      cp -rL "$OUT/chain$i/models/iter$((k - 1))" "$OUT/chain$j/inputs/voters/c$i"
    done
  done
  pids=()
  for j in "${SEEDS[@]}"; do
    (cd "$OUT/chain$j" && dvc repro -s voters "grow@$k" "score@$k" "rationalize@$k" "filter@$k" "improve@$k" \
       >> "$OUT/chain$j.log" 2>&1) & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { echo "iteration $k failed: see $OUT/chain*.log" >&2; exit 1; }; done
  echo "iteration $k done"
done
for j in "${SEEDS[@]}"; do (cd "$OUT/chain$j" && dvc repro -s evaluate plots >> "$OUT/chain$j.log" 2>&1); done
echo "done: per chain, metrics/iterations/ and metrics/filter/ in $OUT/chain<j>; over chains:"
echo "  restem seeds report $(printf -- '--dir %s ' "${SEEDS[@]/#/$OUT/chain}")"

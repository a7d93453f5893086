#!/usr/bin/env bash
# Regenerate every number and picture README shows, one run after another:
#     bash scripts/reproduce.sh
# Each step is a chapter's default run (its lesson) or an experiment of experiments/ (the
# lab), most of them behind one row of README's claims table. Its wall time goes into
# runs/reproduce.jsonl; at the end its metrics.json goes into docs/results.json, and
# README's tables, docs/results.md and the pictures in docs/ are rendered from that file.
# The timed runs must run alone: two jobs on two cores slow each other down.
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
    python scripts/results.py reference   # the machine's speed just before...
    local start=$EPOCHREALTIME
    if "$@"; then
        python scripts/results.py record "$name" "$out" "$start" "$EPOCHREALTIME" -- "$@"
    else  # go on: the other steps' numbers are still worth having
        echo "== $name FAILED"
        failed="$failed $name"
    fi
    python scripts/results.py reference   # ...and just after: its own sitting's unit
}
failed=""

# The judge is trained once, before anything is timed: no step pays for it.
python -c "import common, judge; judge.Judge.load(common.load_data('mnist5k'))"

# The chapters' default runs, the lessons: README's chapter table.
step 01 runs/01_autoregressive_pixels python 01_autoregressive_pixels.py
step 02 runs/02_patch_autoregression python 02_patch_autoregression.py
step 03 runs/03_ddpm python 03_ddpm.py
step 04 runs/04_cfg python 04_cfg.py
step 05 runs/05_gan python 05_gan.py
step 06 runs/06_vae python 06_vae.py
step 07 runs/07_causal_transformer python 07_causal_transformer.py
step 08 runs/08_latent_diffusion python 08_latent_diffusion.py
step 09 runs/09_text_to_image python 09_text_to_image.py
# README's quick look, for slow machines.
step 03_quick runs/03_quick python 03_ddpm.py --steps 300 --samples 200 --out runs/03_quick

# The lab: experiments/, one per claim of README's claims table (and the pictures they draw).
step 01_blur runs/01_blur python experiments/01_blur.py
step 01_one_pixel runs/01_one_pixel python experiments/01_one_pixel.py \
    --load runs/01_autoregressive_pixels/model.pt
step 01_argmax runs/01_argmax python experiments/01_argmax.py \
    --load runs/01_autoregressive_pixels/model.pt
step 02_sweep runs/02_sweep python experiments/02_sweep.py \
    --load runs/02_patch_autoregression/model.pt
step 03_scale_down runs/03_scale_down python experiments/03_scale_down.py
step 03_sampling_steps runs/03_sampling_steps python experiments/03_sampling_steps.py \
    --load runs/03_ddpm/model.pt --samples 500
step 03_targets runs/03_targets python experiments/03_targets.py --steps 1000 --samples 500 \
    --load runs/03_ddpm/model.pt
step 04_guidance runs/04_guidance python experiments/04_guidance.py --load runs/04_cfg/model.pt
step 05_walks runs/05_walks python experiments/05_walks.py --load runs/05_gan/model.pt
step 06_latent_map runs/06_latent_map python experiments/06_latent_map.py
step 06_interpolation runs/06_interpolation python experiments/06_interpolation.py \
    --load runs/06_vae/model.pt
step 07_one_pass runs/07_one_pass python experiments/07_one_pass.py
step 07_mask_cost runs/07_mask_cost python experiments/07_mask_cost.py
step 07_versus_01 runs/07_versus_01 python experiments/07_versus_01.py \
    --metrics-01 runs/01_autoregressive_pixels/metrics.json
step 07_text runs/07_text python experiments/07_text.py
step 08_versus_04 runs/08_versus_04 python experiments/08_versus_04.py \
    --metrics-04 runs/04_cfg/metrics.json
step 09_prompt_following runs/09_prompt_following python experiments/09_prompt_following.py \
    --load runs/09_text_to_image/model.pt
step 09_sketch runs/09_sketch python experiments/09_sketch.py

# What the chapters' exercises ask beyond the claims (docs/exercises.md, scripts/exercises.py).
step 01_temperature runs/01_temperature python 01_autoregressive_pixels.py --no-gif \
    --load runs/01_autoregressive_pixels/model.pt --temperature 0.5 --out runs/01_temperature
step 03_eta0 runs/03_eta0 python 03_ddpm.py --no-gif --load runs/03_ddpm/model.pt --eta 0 \
    --out runs/03_eta0
step 08_guidance4 runs/08_guidance4 python 08_latent_diffusion.py --no-gif \
    --load runs/08_latent_diffusion/model.pt --guidance 4 --out runs/08_guidance4

python scripts/results.py collect     # runs/ -> docs/results.json and the pictures in docs/
python scripts/results.py render      # docs/results.json -> README.md, docs/results.md
if [ -n "$failed" ]; then
    echo "failed:$failed" >&2
    exit 1
fi

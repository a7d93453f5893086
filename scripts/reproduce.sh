#!/usr/bin/env bash
# Regenerate every number and figure in README.md, one run after another.
# Run from anywhere: bash scripts/reproduce.sh      (README's 'Regenerating' section says how long it takes)
# Each run writes runs/<name>/metrics.json; README's numbers are read from those,
# and every step's wall-clock time is appended to runs/reproduce_times.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs
times=runs/reproduce_times.txt
: > "$times"
t0=$SECONDS
step() {
    echo "== $*"
    local start=$SECONDS
    "$@"
    echo "$(( SECONDS - start )) s  $*" | tee -a "$times"
}

# The chapters' default runs: README's course map, one row each. These are the
# timed runs, so they run alone: two jobs on two cores would slow each other.
step python 01_autoregressive_pixels.py              # row 01; claims: blur, argmax, one evaluation per pixel
step python 02_patch_autoregression.py               # row 02; claims: k pixels per step, scattered vs contiguous (N=500 sweep)
step python 03_ddpm.py                               # row 03; claims: noise, scale-down, quality
step python 03_ddpm.py --load runs/03_ddpm/model.pt --out runs/03_sweep --samples 500 --sweep-steps 5,10,25,50,100
                                                     # claim: diffusion at 5..100 evaluations (headline figure, N=500 like 02)
step python 04_cfg.py                                # row 04; claim: guidance follows the label
step python 05_gan.py --samples 1000                 # row 05; claim: the discriminator's accuracy
step python 06_vae.py --samples 1000                 # row 06; claim: AE against VAE latent space
step python 07_causal_transformer.py --compare runs/01_autoregressive_pixels/metrics.json
                                                     # row 07 (trained for 01's training time); claim: every step at once

# Claim "predict the noise, not the clean image": row 03's default run again
# with only --target changed (equal budget), then both models sampled without
# clipping the clean-image estimate, which shows where eps loses (03, section 4).
step python 03_ddpm.py --target x0 --out runs/03_x0
step python 03_ddpm.py --load runs/03_ddpm/model.pt --no-clip --out runs/03_noclip
step python 03_ddpm.py --load runs/03_x0/model.pt --no-clip --out runs/03_x0_noclip

step python scripts/headline_figure.py               # docs/headline.png and the sample grids in docs/
echo "all done in $(( (SECONDS - t0) / 60 )) min $(( (SECONDS - t0) % 60 )) s" | tee -a "$times"

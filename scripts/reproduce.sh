#!/usr/bin/env bash
# Regenerate every number and figure in README.md, one run after another.
# Run from the repository root: bash scripts/reproduce.sh
# Each run writes runs/<name>/metrics.json; README's numbers are read from those.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
step() { echo "== $*"; /usr/bin/env time -f "   %e s" "$@"; }

step python 01_autoregressive_pixels.py              # README row 01; claims: blur, argmax, one evaluation per pixel
step python 02_patch_autoregression.py               # row 02; claims: k pixels per step, scattered vs contiguous
step python 03_ddpm.py                               # row 03; claims: noise, scale-down, quality
step python 03_ddpm.py --load runs/03_ddpm/model.pt --out runs/03_sweep --sweep-steps 5,10,25,50,100
                                                     # claim: diffusion's FD at 5..100 evaluations (headline figure)
step python 03_ddpm.py --steps 2000 --samples 500 --out runs/03_eps        # claim: eps against x0, equal budget
step python 03_ddpm.py --steps 2000 --samples 500 --target x0 --out runs/03_x0
step python 04_cfg.py                                # row 04; claim: guidance follows the label
step python 05_gan.py --samples 1000                 # row 05; claim: the discriminator's accuracy
step python 06_vae.py --samples 1000                 # row 06; claim: AE against VAE latent space
step python 07_causal_transformer.py --compare runs/01_autoregressive_pixels/metrics.json
                                                     # row 07; claim: causal models train every step at once
step python scripts/headline_figure.py               # docs/headline.png and the sample grids in docs/
echo "all done in $(( ($(date +%s) - t0) / 60 )) minutes"

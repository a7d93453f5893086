"""What README's generated blocks and docs/results.md say, made from docs/results.json only.

Each function takes the results (a dict, as scripts/results.py collects them) and
returns Markdown. Every number comes from a run's metrics.json through that file;
every verdict ("held?") is computed from the numbers by the rule written beside it.
"""
from __future__ import annotations

from pathlib import Path

from results import fmt, minutes


def metrics(res: dict, step: str) -> dict:
    return res["steps"].get(step, {}).get("metrics", {})


def sweep_fd(rows: list, **match) -> float | None:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r["fd"]
    return None


# %% README: the chapter table
CHAPTERS = [
    ("01", "01_autoregressive_pixels.py",
     "a whole-image predictor learns a blur; one missing pixel, predicted as a distribution "
     "given the rest, works; one network with the position as input does every step; "
     "sampling, not argmax, gives variety; an exact likelihood"),
    ("02", "02_patch_autoregression.py",
     "k pixels per step: faster, and worse, less so when the pixels are spread out"),
    ("03", "03_ddpm.py",
     "noise as the most spread-out removal; scale down before adding noise; what the "
     "network should predict; DDIM sampling"),
    ("04", "04_cfg.py", "a label as one more input, dropped at random; classifier-free guidance"),
    ("05", "05_gan.py", "a generator and a critic in a game; watching the game for collapse"),
    ("06", "06_vae.py", "an autoencoder's latent space cannot be sampled, a VAE's can; the ELBO"),
    ("07", "07_causal_transformer.py",
     "a causal transformer learns every step of a digit in one pass; the key/value cache"),
    ("08", "08_latent_diffusion.py",
     "the capstone: 04's guided diffusion in the latent space of a VAE, as large image "
     "generators do"),
]


def headline(res: dict, step: str) -> str:
    m = metrics(res, step)
    if not m:
        return "not run"
    judged = f"FD {fmt(m['fd'])} at N={m['n']} ({fmt(m['fd_ratio'], 2)}x the floor), " \
             f"confidence {fmt(m['confidence'], 2)}"
    extra = {
        "01": lambda: f"; {bits(m.get('bits_per_pixel'))} bits per pixel held out",
        "04": lambda: f"; label accuracy {fmt(m.get('label_accuracy'))} "
                      f"at s={fmt(m.get('guidance'))}",
        "07": lambda: f"; {bits(m.get('bits_per_pixel'))} bits per pixel held out",
        "08": lambda: f"; label accuracy {fmt(m.get('label_accuracy'))}",
    }.get(step, lambda: "")()
    return judged + extra


def chapter_table(res: dict) -> str:
    lines = ["| # | file | what it teaches | default run, measured | time |",
             "| --- | --- | --- | --- | --- |"]
    for step, name, idea in CHAPTERS:
        seconds = res["steps"].get(step, {}).get("seconds")
        lines.append(f"| {step} | `{name}` | {idea} | {headline(res, step)} | "
                     f"{minutes(seconds) if seconds else 'n/a'} |")
    return "\n".join(lines) + "\n"


# %% README: the claims table
def claims_table(res: dict) -> str:
    lines = ["| claim | where | what is compared | measured | held? |",
             "| --- | --- | --- | --- | --- |"]
    for claim in CLAIMS:
        try:
            row = claim(res)
        except (KeyError, TypeError, IndexError, StopIteration):
            row = None
        if row:
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def bits(x) -> str:
    """Bits per pixel to the thousandth: 0.120 against 0.123 reads as a difference."""
    return "n/a" if x is None else f"{x:.3f}"


def yes_no(ok: bool, no: str = "no") -> str:
    return "yes" if ok else f"**{no}**"


def blur(res):
    m = metrics(res, "01")
    ok = m["blur_rms_to_mean"] < 0.1 * m["digit_rms_to_mean"] and m["blur_coverage"] <= 2
    return ["A network trained to output a whole digit from a blank input learns the blurry "
            "average", "01, section 1",
            "its output against the average of the training digits",
            f"{fmt(m['blur_rms_to_mean'], 2)} RMS from the average (a training digit is "
            f"{fmt(m['digit_rms_to_mean'], 2)} from it); judge: FD {fmt(m['blur_fd_ratio'])}x "
            f"the floor, confidence {fmt(m['blur_confidence'], 2)}, {m['blur_coverage']} class",
            # rule: within a tenth of a digit's spread of the average, and at most 2 classes
            yes_no(ok)]


def one_pixel(res):
    p = metrics(res, "01")["one_pixel"]
    ok = p["rms_given_rest"] < 0.5 * p["rms_dataset_mean"]
    return ["One missing pixel, predicted from the rest of the image, comes out right: the "
            "average of the colours it could have is still a colour", "01, section 2",
            f"pixel {p['index']} of {p['images']} held-out digits: the network's average given "
            "the rest, and the data set's average, each against the true value",
            f"RMS error {fmt(p['rms_given_rest'], 2)} given the rest, "
            f"{fmt(p['rms_dataset_mean'], 2)} for the data set's average",
            # rule: given the rest, at most half the data-set average's error
            yes_no(ok)]


def argmax(res):
    m = metrics(res, "01")
    ok = m["argmax_identical"] and m["argmax_distinct"] == 1
    return ["Always taking the most likely value draws one image; sampling draws a different "
            "one each time", "01, section 4",
            "argmax twice from an empty canvas against sampling",
            f"argmax: the same image both times ({m['argmax_inked_pixels']} inked pixels: paper "
            f"is likelier at every step); sampling: {m['n']} different digits, FD "
            f"{fmt(m['fd_ratio'])}x the floor",
            yes_no(ok)]


def scale_down(res):
    last = metrics(res, "03")["noising_demo"]["rows"][-1]
    ok = abs(last["scaled_std"] - 1) < 0.05 and last["plain_std"] > 2
    return ["Scale the image down before adding noise, and repeated noising ends at pure "
            "noise, N(0, I)", "03, section 1",
            f"{last['t']:,} noising steps of beta = 0.02 with and without the scale-down",
            f"spread {fmt(last['plain_std'], 3)} without it (it grows as sqrt(var(x_0) + "
            f"t beta)), {fmt(last['scaled_std'], 3)} with it; what is left of the image: "
            f"correlation {fmt(last['scaled_corr_with_x0'], 2)}",
            # rule: the scaled spread within 5% of 1 while the plain one has doubled
            yes_no(ok)]


def few_steps(res):
    rows = sorted(metrics(res, "03_sweep")["sweep"], key=lambda r: r["evaluations"])
    d01 = res["derived"]["01_at_02s_n"]
    first = next((r for r in rows if r["fd"] <= d01["fd"]), None)
    trail = ", ".join(f"{fmt(r['fd'])} at {r['evaluations']}" for r in rows)
    return ["Diffusion needs tens of network evaluations per image where auto-regression "
            "needs one per pixel", "03's sweep against 01",
            f"FD at N={rows[0]['n']} against evaluations per image (03: continuous values, a "
            "UNet; 01: black or white pixels, a fully connected network)",
            f"03: {trail}; 01: {fmt(d01['fd'])} at 784",
            # rule: some step count up to 100 matches 01's FD
            yes_no(first is not None and first["evaluations"] <= 100) +
            (f": 03 passes 01 at {first['evaluations']} evaluations" if first else "")]


TALK_ORDER = ["xprev", "x0", "eps"]


def targets(res):
    rows = metrics(res, "03_targets")["targets"]
    plain = {r["target"]: r for r in rows if r["weighting"] == "plain"}
    best = min(plain.values(), key=lambda r: r["fd"])
    listed = "; ".join(f"{r['target']}{'+' + r['weighting'] if r['weighting'] != 'plain' else ''}"
                       f" FD {fmt(r['fd'])}" for r in rows)
    noclip = metrics(res, "03_noclip")
    steps = metrics(res, "03_targets")["config"]["steps"]
    return ["Predict the clean image rather than the slightly less noisy one, and then the "
            "noise rather than the clean image", "03, section 4; scripts/compare_targets.py",
            f"one network per target, {steps:,} training steps each, sampled alike (N="
            f"{rows[0]['n']}); and 03's default model sampled without clipping its estimate",
            f"{listed}. Unclipped, the default model's FD goes from "
            f"{fmt(metrics(res, '03')['fd'])} to {fmt(noclip['fd'])}",
            # rule: the talk's order holds if FD falls from xprev to x0 to eps
            yes_no(plain["xprev"]["fd"] > plain["x0"]["fd"] > plain["eps"]["fd"],
                   f"partly: {best['target']} measured best")]


def guidance(res):
    rows = sorted(metrics(res, "04_sweep")["sweep"], key=lambda r: r["guidance"])
    acc = " / ".join(fmt(r["label_accuracy"]) for r in rows)
    div = " / ".join(fmt(r["diversity"], 3) for r in rows)
    scales = " / ".join(fmt(r["guidance"]) for r in rows)
    guided = [r for r in rows if r["guidance"] >= 1]
    ok = all(b["label_accuracy"] >= a["label_accuracy"] for a, b in zip(rows, rows[1:])) and \
        all(b["diversity"] < a["diversity"] for a, b in zip(guided, guided[1:]))
    return ["Classifier-free guidance makes samples follow the label, at the cost of variety",
            "04, the guidance sweep",
            f"the same model at guidance s = {scales} (s = 0 ignores the label, s = 1 is the "
            "plain conditional model)",
            f"label accuracy {acc}; variety within a class {div} (at s = 0 that is the whole "
            f"set's, real digits {fmt(metrics(res, '04_sweep')['real_diversity'], 3)})",
            # rule: accuracy never falls and variety falls at every s >= 1
            yes_no(ok)]


def gan(res):
    m = metrics(res, "05")
    first = (m["d_acc_real_first"] + m["d_acc_fake_first"]) / 2
    last = (m["d_acc_real_final"] + m["d_acc_fake_final"]) / 2
    return ["The critic's accuracy falls as the generator improves", "05, section 4",
            "the critic's accuracy on real and generated batches, first and last 100 steps",
            f"{fmt(first, 2)} at first, {fmt(last, 2)} at the end (chance: 0.5); keeping the "
            f"quarter of drawn digits the critic rates most real takes FD from "
            f"{fmt(m['unfiltered_fd'])} to {fmt(m['fd'])}",
            # rule: the end is at least 0.05 below the start
            yes_no(last < first - 0.05, "no: it ends where it began")]


def vae(res):
    m = metrics(res, "06")
    return ["An autoencoder's latent space cannot be sampled; a VAE's can", "06",
            "the same network trained with and without the KL term, both decoding "
            "z ~ N(0, I)",
            f"VAE FD {fmt(m['fd'])} ({fmt(m['fd_ratio'])}x the floor), confidence "
            f"{fmt(m['confidence'], 2)}; autoencoder FD {fmt(m['ae_fd'])}, confidence "
            f"{fmt(m['ae_confidence'], 2)}",
            # rule: the autoencoder's FD at least three times the VAE's
            yes_no(m["ae_fd"] > 3 * m["fd"])]


def causal(res):
    m = metrics(res, "07")
    return ["A causal network learns every step of an image in one evaluation, where the same "
            "network evaluated once per step learns one", "07, section 7",
            "the same transformer trained both ways for the same seconds: all 784 positions per "
            "evaluation, or one position per evaluation (on the prefix before it)",
            f"{fmt(m['causal_targets_per_second'])} against "
            f"{fmt(m['one_position_targets_per_second'])} targets learned per second: "
            f"{fmt(m['causal_speedup'])}x (not 784x: a causal target pays attention over up "
            "to 784 earlier pixels, a one-position pass runs on a prefix)",
            # rule: at least ten times as many targets per second
            yes_no(m["causal_speedup"] > 10)]


def mask(res):
    c = metrics(res, "07_maskcost")["mask_cost"]
    worse = c["mask_cost_bits"] > 2 * c["mask_cost_se"]
    better = c["mask_cost_bits"] < -2 * c["mask_cost_se"]
    return ["The causal mask costs a little prediction quality", "07, --mask-cost",
            f"the same transformer trained one position per evaluation on {c['targets']:,} "
            "targets, with the mask inside the prefix and without it (the prediction of pixel "
            "i still sees only pixels before i)",
            f"held-out {bits(c['causal_bits_per_pixel'])} bits per pixel with the mask, "
            f"{bits(c['full_bits_per_pixel'])} without (difference "
            f"{fmt(c['mask_cost_bits'], 2)} +- {fmt(c['mask_cost_se'], 1)})",
            # rule: more than two standard errors either way, else not shown
            "yes" if worse else ("**no**: at this short budget the mask helped" if better
                                 else "not shown at this budget")]


def versus_01(res):
    m = metrics(res, "07_compare")
    other = m["compare"]
    return ["With the pixels already drawn around each position as a hint, the transformer "
            "beats chapter 01's network at equal training time", "07 --compare against 01",
            f"held-out bits per pixel after {fmt(other['train_seconds'])} s of training each "
            "(two different networks; without the hint, `--no-hint`, the transformer lost: "
            "docs/experiments.md)",
            f"07 {bits(m['bits_per_pixel'])}, 01 {bits(other['bits_per_pixel'])}; samples: FD "
            f"{fmt(m['fd'])} against 01's {fmt(other['fd'])}",
            # rule: a lower held-out loss
            yes_no(m["bits_per_pixel"] < other["bits_per_pixel"])]


def sweep_02(res) -> dict:
    """02's sweep as {(order, k): row}."""
    return {(r["order"], r["k"]): r for r in metrics(res, "02")["sweep"]}


def several_pixels(res):
    rows = sweep_02(res)
    ks = sorted({k for _, k in rows})
    trail = "; ".join(f"{o}: " + ", ".join(f"{fmt(rows[(o, k)]['fd'])} at "
                                          f"{rows[(o, k)]['evaluations']}" for k in ks)
                      for o in ("scattered", "contiguous"))
    ok = all(rows[(o, ks[-1])]["fd"] > 1.5 * rows[(o, ks[0])]["fd"]
             for o in ("scattered", "contiguous"))
    return ["Revealing several pixels per network evaluation is faster but loses quality",
            "02, the sweep",
            f"FD at N={rows[('scattered', ks[0])]['n']} against network evaluations per image "
            f"(784 / k, k = {', '.join(map(str, ks))} pixels per evaluation)", trail,
            # rule: the fewest evaluations at least 1.5x the FD of one pixel per evaluation
            yes_no(ok)]


def spread_out(res):
    rows, m = sweep_02(res), metrics(res, "02")
    k, gap = m["k"], m["fd_contiguous_over_scattered"]
    ks = sorted(int(x) for x in gap)
    control = gap["1"] <= 1.5
    opens = gap[str(k)] > gap["1"] and \
        rows[("contiguous", k)]["dependence"] > rows[("scattered", k)]["dependence"]
    dep = {o: ", ".join(f"{fmt(rows[(o, j)]['dependence'], 2)}" for j in ks[1:])
           for o in ("contiguous", "scattered")}
    return ["... less so when the pixels revealed together are spread out, because "
            "neighbouring pixels depend on each other", "02, sections 4 and 6",
            "both orders trained alike, so k = 1 (exact one pixel at a time either way) is the "
            "control; FD of contiguous over scattered at every k, and how strongly one step's "
            "pixels are correlated in real held-out digits (mean absolute correlation over pairs)",
            f"FD ratio at k = {', '.join(map(str, ks))}: "
            f"{', '.join(fmt(gap[str(j)], 2) for j in ks)} (at k = 784 both orders are one "
            f"step, the same); dependence at k = {', '.join(map(str, ks[1:]))}: contiguous "
            f"{dep['contiguous']}, scattered {dep['scattered']}",
            # rule: the control within 1.5x, and the gap and the dependence larger at --k
            yes_no(control and opens, "partly: the orders differ already at k = 1"
                   if opens else "no")]


def noise(res):
    rows = sorted(metrics(res, "03_sweep")["sweep"], key=lambda r: r["evaluations"])
    scattered = sweep_02(res)
    best = min((r for (o, _), r in scattered.items()  # 02's cheapest with 25 or more
                if o == "scattered" and r["evaluations"] >= 25), key=lambda r: r["evaluations"])
    d03 = min(rows, key=lambda r: abs(r["evaluations"] - best["evaluations"]))
    return ["Adding noise to every pixel is the most spread-out way to remove information: "
            "diffusion does far better at the same number of steps", "03's sweep against 02",
            f"FD at N={d03['n']}, about {best['evaluations']} network evaluations per image "
            "(03: continuous values, a UNet; 02: black or white pixels, a fully connected "
            "network)",
            f"03 {fmt(d03['fd'])} at {d03['evaluations']}; 02 scattered {fmt(best['fd'])} at "
            f"{best['evaluations']}",
            # rule: diffusion at most half 02's FD at about the same evaluations
            yes_no(d03["fd"] < 0.5 * best["fd"])]


def latent(res):
    m = metrics(res, "08_compare")
    a, b = m["compare"]["04"], m["compare"]["08"]
    batch = {"04": metrics(res, "04")["config"]["batch_size"], "08": m["config"]["batch_size"]}
    cheaper = b["steps_per_second"] * batch["08"] > a["steps_per_second"] * batch["04"]
    bounded = b["fd"] <= 1.5 * a["fd"]
    return ["Diffusion in a learned latent space is cheaper per step at a bounded cost in "
            "quality", "08 --compare against 04",
            f"04 on {a['values_per_image']} pixels and 08 on {b['values_per_image']} latent "
            f"values, trained for the same {fmt(a['train_seconds'])} s (08's includes its "
            "autoencoder); the autoencoder's reconstructions are 08's ceiling",
            f"training images per second {fmt(b['steps_per_second'] * batch['08'])} against "
            f"{fmt(a['steps_per_second'] * batch['04'])} (denoiser steps of {batch['08']} and "
            f"{batch['04']} images); seconds per sample "
            f"{fmt(b['sample_seconds_per_image'], 2)} against "
            f"{fmt(a['sample_seconds_per_image'], 2)}; FD {fmt(b['fd'])} against "
            f"{fmt(a['fd'])}, label accuracy {fmt(b['label_accuracy'])} against "
            f"{fmt(a['label_accuracy'])}; reconstructions FD {fmt(m['recon_fd'])}",
            # rule: more images per second and FD within 1.5x of 04's
            yes_no(cheaper and bounded, "partly" if cheaper or bounded else "no")]


CLAIMS = [blur, one_pixel, argmax, several_pixels, spread_out, noise, few_steps, scale_down,
          targets, guidance, gan, vae, causal, mask, versus_01, latent]


# %% docs/results.md: every run in full
def results_page(res: dict) -> str:
    mach = res["machine"]
    ref = res.get("reference_step_seconds")
    out = ["# Results", "",
           "Generated by `bash scripts/reproduce.sh` (through `scripts/results.py`); do not edit.",
           "", f"- date: {res['date']}" + (f" to {res['last_date']}" if res.get("last_date")
                                              not in (None, res["date"]) else ""),
           f"- machine: {mach['cpu']}, {mach['cores']} cores, GPU: {mach['gpu']}; "
           f"{mach['system']}; Python {mach['python']}, torch {mach['torch']}",
           f"- reference step (`scripts/reference_step.py`, measured before and after the "
           f"runs; each step is divided by the two measurements around it): median {fmt(ref, 3)} s "
           f"({', '.join(fmt(r, 3) for r in res.get('reference_measurements', []))})",
           f"- all steps: {minutes(res['total_seconds'])}", "",
           "| step | command | wall time | reference steps |", "| --- | --- | --- | --- |"]
    for name, s in res["steps"].items():
        out.append(f"| {name} | `{s['command']}` | {minutes(s['seconds'])} | "
                   f"{fmt(s['reference_steps'])} |")
    for name, s in res["steps"].items():
        out += ["", f"## {name}: `{s['command']}`", ""]
        scalars = {k: v for k, v in s["metrics"].items()
                   if isinstance(v, (int, float, str, bool)) or v is None}
        out += ["| metric | value |", "| --- | --- |"]
        out += [f"| {k} | {fmt(v) if isinstance(v, float) else v} |" for k, v in scalars.items()]
        for k, v in s["metrics"].items():
            if isinstance(v, list) and v and isinstance(v[0], dict):
                keys = [
                    c for c in v[0] if isinstance(v[0][c], (int, float, str)) or v[0][c] is None
                ]
                out += ["", f"{k}:", "", "| " + " | ".join(keys) + " |",
                        "|" + " --- |" * len(keys)]
                out += ["| " + " | ".join(fmt(r.get(c)) if isinstance(r.get(c), float)
                                          else str(r.get(c)) for c in keys) + " |" for r in v]
    return "\n".join(out) + "\n"


# %% The headline figure
def headline_figure(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    d01 = res["derived"].get("01_at_02s_n")
    if d01:
        ax.plot([784], [d01["fd"]], "s", ms=9, label=f"01 pixel by pixel (N={d01['n']})")
    for order, style in (("scattered", "o-"), ("contiguous", "^-")):
        rows = sorted((r for r in metrics(res, "02").get("sweep", []) if r["order"] == order),
                      key=lambda r: r["evaluations"])
        if rows:
            ax.plot([r["evaluations"] for r in rows], [r["fd"] for r in rows], style,
                    label=f"02 {order} (N={rows[0]['n']})")
    rows = sorted(metrics(res, "03_sweep").get("sweep", []), key=lambda r: r["evaluations"])
    if rows:
        ax.plot([r["evaluations"] for r in rows], [r["fd"] for r in rows], "D-",
                label=f"03 diffusion, DDIM (N={rows[0]['n']})")
        ax.axhline(rows[0]["fd_floor"], ls=":", c="gray")
        ax.text(1.05, rows[0]["fd_floor"] * 1.05, f"real digits, N={rows[0]['fd_floor_n']}",
                fontsize=7, color="gray")
    ax.set(xscale="log", yscale="log", xlabel="network evaluations per image",
           ylabel="FD to real digits (lower is better)",
           title="Quality against generation cost, same judge, same N")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

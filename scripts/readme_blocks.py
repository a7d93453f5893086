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


# %% README: a quick look, for slow machines
def quick_look(res: dict) -> str:
    step, default = res["steps"].get("03_quick", {}), res["steps"].get("03", {})
    if not step:
        return "(not measured yet)\n"
    m = step["metrics"]
    command = step["command"].replace(" --out runs/03_quick", "")
    return (f"```bash\n{command}\n```\n\n{m['config']['steps']} training steps and {m['n']} "
            f"samples took {minutes(step['seconds'])} on the machine of the tables below, "
            f"against {minutes(default.get('seconds', 0))} for the default run; FD "
            f"{fmt(m['fd_ratio'], 2)}x the floor at N={m['n']}, against "
            f"{fmt(default.get('metrics', {}).get('fd_ratio'), 2)}x.\n")


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
     "a causal transformer learns every step of a digit in one pass; the key/value cache "
     "(readable right after 02)"),
    ("08", "08_latent_diffusion.py",
     "04's guided diffusion in the latent space of a VAE, as large image generators do"),
    ("09", "09_text_to_image.py",
     "the label becomes a sentence: captions from the digits, a tiny text encoder, guidance; "
     "the same network conditioned on a sketch"),
]


def headline(res: dict, step: str) -> str:
    m = metrics(res, step)
    if not m:
        return "not run"
    judged = f"FD {fmt(m['fd'])} at N={m['n']} ({fmt(m['fd_ratio'], 2)}x the floor), " \
             f"confidence {fmt(m['confidence'], 2)}"
    extra = {
        "01": lambda: f"; {bits(m.get('bits_per_pixel'))} bits per pixel held out",
        "02": lambda: f" ({m['order']}, k={m['k']}); contiguous FD {fmt(m['fd_contiguous'])}",
        "04": lambda: f"; label accuracy {fmt(m.get('label_accuracy'))} "
                      f"at s={fmt(m.get('guidance'))}",
        "07": lambda: f"; {bits(m.get('bits_per_pixel'))} bits per pixel held out",
        "08": lambda: f"; label accuracy {fmt(m.get('label_accuracy'))}",
        "09": lambda: f"; label accuracy {fmt(m.get('label_accuracy'))} against the prompt",
    }.get(step, lambda: "")()
    return judged + extra


def chapter_table(res: dict) -> str:
    ref = res.get("reference_step_seconds")
    lines = ["| # | file | what it teaches | default run, measured | time | reference steps |",
             "| --- | --- | --- | --- | --- | --- |"]
    for step, name, idea in CHAPTERS:
        s = res["steps"].get(step, {})
        seconds, cost = s.get("seconds"), s.get("reference_steps")
        try:
            measured = headline(res, step)
        except KeyError:  # a run from before a key existed: run it again
            measured = "not run"
        lines.append(f"| {step} | `{name}` | {idea} | {measured} | "
                     f"{minutes(seconds) if seconds else 'n/a'} | "
                     f"{fmt(cost) if cost and ref else 'n/a'} |")
    return "\n".join(lines) + "\n"


# %% README: the claims table
def claims_table(res: dict) -> str:
    lines = ["| claim | where | what is compared | measured | held? |",
             "| --- | --- | --- | --- | --- |"]
    for claim in CLAIMS:
        try:
            row = claim(res)
        except (KeyError, TypeError, IndexError, StopIteration, ValueError):
            row = None
        if row:
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def bits(x) -> str:
    """Bits per pixel to the thousandth: 0.120 against 0.123 reads as a difference."""
    return "n/a" if x is None else f"{x:.3f}"


def yes_no(ok: bool, no: str = "no") -> str:
    return "yes" if ok else f"**{no}**"


DIFFERENT = "yes, at these settings; the networks differ, so this shows the whole recipe, " \
            "not the order of removal alone"


def blur(res):
    m = metrics(res, "01_blur")
    ok = m["blur_rms_to_mean"] < 0.1 * m["digit_rms_to_mean"] and m["blur_coverage"] <= 2 \
        and m["blur_fd_ratio"] > 20 and m["blur_confidence"] < 0.5
    return ["A network trained to output a whole digit from a blank input learns the blurry "
            "average", "experiments/01_blur.py",
            "its output against the average of the training digits",
            f"{fmt(m['blur_rms_to_mean'], 2)} RMS from the average (a training digit is "
            f"{fmt(m['digit_rms_to_mean'], 2)} from it); judge: FD {fmt(m['blur_fd_ratio'])}x "
            f"the floor, confidence {fmt(m['blur_confidence'], 2)}, {m['blur_coverage']} class",
            # rule: within a tenth of a digit's spread of the average, at most 2 classes, and
            # no digit to the judge: over 20x the floor, confidence under 0.5
            yes_no(ok)]


def one_pixel(res):
    p = metrics(res, "01_one_pixel")
    ok = p["rms_given_rest"] < 0.5 * p["rms_dataset_mean"]
    return ["One missing pixel, predicted from the rest of the image, comes out right: the "
            "average of the colours it could have is still a colour",
            "experiments/01_one_pixel.py",
            f"pixel {p['index']} of {p['images']} held-out digits: the network's average given "
            "the rest, and the data set's average, each against the true value",
            f"RMS error {fmt(p['rms_given_rest'], 2)} given the rest, "
            f"{fmt(p['rms_dataset_mean'], 2)} for the data set's average",
            # rule: given the rest, at most half the data-set average's error
            yes_no(ok)]


def argmax(res):
    m = metrics(res, "01_argmax")
    ok = m["argmax_identical"] and m["argmax_distinct"] == 1 and \
        m["sampled_distinct"] == m["sampled_n"]
    return ["Always taking the most likely value draws one image; sampling draws a different "
            "one each time", "experiments/01_argmax.py",
            "argmax twice from an empty canvas against sampling",
            "argmax: the same image both times (" + (
                "an empty page: paper is likelier at every step" if m["argmax_inked_pixels"] == 0
                else f"{m['argmax_inked_pixels']} inked pixels") + f"); sampling: "
            f"{m['sampled_distinct']} different images of {m['sampled_n']}, FD "
            f"{fmt(m['sampled_fd_ratio'])}x the floor",
            # rule: argmax one image, every sample a different one, and the samples digits to
            # the judge (within 20x the floor; the blur scores over 200x)
            yes_no(ok and m["sampled_fd_ratio"] < 20)]


def sweep_mean(res, order: str, k: int) -> float:
    return metrics(res, "02_sweep")["fd"][order][str(k)]["mean"]


def spread(s: dict, digits: int = 2) -> str:
    """A figure measured over several seeds: its mean, and its range."""
    return f"{fmt(s['mean'], digits)} ({fmt(s['min'], digits)}-{fmt(s['max'], digits)})"


def several_pixels(res):
    m = metrics(res, "02_sweep")
    ks = m["ks"]
    trail = "; ".join(f"{o}: " + ", ".join(f"{fmt(sweep_mean(res, o, k))} at {784 // k}"
                                          for k in ks) for o in ("scattered", "contiguous"))
    ok = all(sweep_mean(res, o, ks[-1]) > 1.5 * sweep_mean(res, o, ks[0])
             for o in ("scattered", "contiguous"))
    flat = [f"{o} from k = {a} to {b}" for o in ("scattered", "contiguous")
            for a, b in zip(ks, ks[1:]) if sweep_mean(res, o, b) <= sweep_mean(res, o, a)]
    return ["Revealing several pixels per network evaluation is faster but loses quality",
            "experiments/02_sweep.py",
            f"FD at N={m['n']}, the mean of {len(m['seeds'])} sampling seeds, against network "
            f"evaluations per image (784 / k, k = {', '.join(map(str, ks))})", trail,
            # rule: the fewest evaluations at least 1.5x the FD of one pixel per evaluation,
            # and FD rising at every k of both orders (else partly, saying where it does not)
            ("yes" if not flat else "**partly: FD does not rise " + ", ".join(flat) + "**")
            if ok else "**no**"]


def order_at_k(normalised: dict, contiguous_dep: float, scattered_dep: float) -> str:
    """One k's verdict on "less so when spread out", from the FD ratio contiguous/scattered
    divided, seed by seed, by the same ratio at k = 1 (the control, where both orders are
    exact one-pixel auto-regression), and the dependence of one step's pixels.
    yes: above 1 for every seed and neighbours depend more; partly: above 1 on average, or
    the dependence alone; reversed: below 1 for every seed; no: otherwise."""
    if normalised["max"] < 1:
        return "reversed"
    every, mean = normalised["min"] > 1, normalised["mean"] > 1
    depends = contiguous_dep > scattered_dep
    if every and depends:
        return "yes"
    return "partly" if (mean and depends) or every else "no"


def runs_of(ks: list, said: dict) -> list:
    """The row's ks grouped into runs of neighbours with the same verdict: [(verdict, [k...])]."""
    out = []
    for k in ks:
        if out and out[-1][0] == said[k]:
            out[-1][1].append(k)
        else:
            out.append((said[k], [k]))
    return out


def k_span(ks: list) -> str:
    return f"k = {ks[0]}" if len(ks) == 1 else \
        f"k = {ks[0]} and {ks[1]}" if len(ks) == 2 else f"k = {ks[0]} to {ks[-1]}"


def order_verdict(m: dict, ks: list) -> str:
    """The row's verdict: order_at_k at every k it shows, neighbours with the same verdict
    said together, each verdict but yes with what was measured there."""
    dep = {k: (m["dependence"]["contiguous"][str(k)]["given_nothing"],
               m["dependence"]["scattered"][str(k)]["given_nothing"]) for k in ks}
    said = {k: order_at_k(m["ratio_over_control"][str(k)], *dep[k]) for k in ks}
    one = m["fd"]["scattered"][str(m["ks"][-1])]["mean"]
    ratio = m["fd_contiguous_over_scattered"]
    parts = []
    for verdict, run in runs_of(ks, said):
        if verdict == "yes":
            parts.append(f"yes at {k_span(run)}")
            continue
        k = run[-1]
        c, s = m["fd"]["contiguous"][str(k)]["mean"], m["fd"]["scattered"][str(k)]["mean"]
        why = {"partly": "the gap beyond the control is within the seeds' spread, or a "
                         "patch's pixels are no more dependent than scattered ones",
               "no": "the gap is within the control's"}.get(verdict) or (
            f"contiguous still scores worse (FD {fmt(c)} against {fmt(s)}), but by "
            f"{fmt(ratio[str(k)]['mean'], 2)}x, under the control's "
            f"{fmt(ratio['1']['mean'], 2)}x; there both orders are nearer the one-step "
            f"result they share (FD {fmt(one)} at k = {m['ks'][-1]}), and a patch's pixels "
            f"are {fmt(dep[k][0] / dep[k][1], 2)}x as dependent as scattered ones "
            f"({fmt(dep[k][0], 2)} against {fmt(dep[k][1], 2)}; up to "
            f"{fmt(max(a / b for a, b in dep.values()), 2)}x at other k): which of these "
            "reverses the ratio was not measured")
        parts.append(f"**{verdict} at {k_span(run)}**: {why}")
    return "; ".join(parts)


def spread_out(res):
    m = metrics(res, "02_sweep")
    ks = m["ks"]
    ratio, norm = m["fd_contiguous_over_scattered"], m["ratio_over_control"]
    dep = m["dependence"]
    return ["... less so when the pixels revealed together are spread out, because "
            "neighbouring pixels depend on each other", "experiments/02_sweep.py",
            f"the FD ratio contiguous / scattered at each k over {len(m['seeds'])} sampling "
            "seeds; at k = 1 both orders are exact one-pixel auto-regression, so that ratio is "
            "the control, and each k's ratio is divided by it, seed by seed; how strongly one "
            "step's pixels are correlated in real held-out digits at each k",
            f"control at k = 1: {spread(ratio['1'])}; ratio over the control at k = "
            + ", ".join(f"{j}: {spread(norm[str(j)])}" for j in ks[1:-1])
            + " (k = 784 is one step for both); dependence, contiguous / scattered, at k = "
            + ", ".join(f"{j}: {fmt(dep['contiguous'][str(j)]['given_nothing'], 2)} / "
                        f"{fmt(dep['scattered'][str(j)]['given_nothing'], 2)}"
                        for j in ks[1:-1]),
            # rule: order_verdict at every k between 1 and 784
            order_verdict(m, ks[1:-1])]


def noise(res):
    rows = sorted(metrics(res, "03_sampling_steps")["sweep"], key=lambda r: r["evaluations"])
    k = min((k for k in metrics(res, "02_sweep")["ks"] if 784 // k >= 25), key=lambda k: 784 // k)
    d02 = sweep_mean(res, "scattered", k)
    d03 = min(rows, key=lambda r: abs(r["evaluations"] - 784 // k))
    return ["Adding noise to every pixel is the most spread-out way to remove information: "
            "diffusion does far better at the same number of steps",
            "experiments/03_sampling_steps.py against experiments/02_sweep.py",
            f"FD at N={d03['n']}, about {784 // k} network evaluations per image (03: continuous "
            "values, a UNet; 02: black or white pixels, a fully connected network)",
            f"03 {fmt(d03['fd'])} at {d03['evaluations']}; 02 scattered {fmt(d02)} at {784 // k}",
            # rule: diffusion at most half 02's FD at about the same evaluations
            DIFFERENT if d03["fd"] < 0.5 * d02 else "**no**"]


def few_steps(res):
    rows = sorted(metrics(res, "03_sampling_steps")["sweep"], key=lambda r: r["evaluations"])
    d01 = res["derived"]["01_at_02s_n"]
    first = next((r for i, r in enumerate(rows) if all(q["fd"] <= d01["fd"] for q in rows[i:])),
                 None)
    trail = ", ".join(f"{fmt(r['fd'])} at {r['evaluations']}" for r in rows)
    ok = first is not None and first["evaluations"] <= 100
    return ["Diffusion needs tens of network evaluations per image where auto-regression "
            "needs one per pixel", "experiments/03_sampling_steps.py against 01",
            f"FD at N={rows[0]['n']} against evaluations per image (03: continuous values, a "
            "UNet; 01: black or white pixels, a fully connected network)",
            f"03: {trail}; 01: {fmt(d01['fd'])} at 784",
            # rule: from some step count up to 100 on, every count matches 01's FD
            (DIFFERENT + f"; 03 passes 01 at {first['evaluations']} evaluations") if ok
            else "**no**"]


def scale_down(res):
    last = metrics(res, "03_scale_down")["rows"][-1]
    ok = abs(last["scaled_std"] - 1) < 0.05 and last["plain_std"] > 2 and \
        abs(last["scaled_corr_with_x0"]) < 0.05
    return ["Scale the image down before adding noise, and repeated noising ends at pure "
            "noise, N(0, I)", "experiments/03_scale_down.py",
            f"{last['t']:,} noising steps of beta = 0.02 with and without the scale-down",
            f"spread {fmt(last['plain_std'], 3)} without it (it grows as sqrt(var(x_0) + "
            f"t beta)), {fmt(last['scaled_std'], 3)} with it; what is left of the image: "
            f"correlation {fmt(last['scaled_corr_with_x0'], 2)}",
            # rule: the scaled spread within 5% of 1 while the plain one has doubled, and
            # under 0.05 correlation left with the image
            yes_no(ok)]


def close(a: float, b: float) -> bool:
    """Within 10% of each other: from one run each, a difference this small may not repeat."""
    return abs(a - b) <= 0.1 * max(abs(a), abs(b))


def one_run(a: float, b: float, show=fmt) -> str:
    """What a verdict resting on one run each says when its two figures are close."""
    return f" ({show(a)} against {show(b)}, one run each: no seeds were run)" if close(a, b) \
        else ""


def versus_fd(name_a: str, a: float, name_b: str, b: float) -> str:
    """Who beat whom in FD (lower is better), or a match within 10% with one_run's note."""
    if close(a, b):
        return f"{name_a} matched {name_b}" + one_run(a, b)
    return f"{name_a} beat {name_b}" if a < b else f"{name_b} beat {name_a}"


def targets_verdict(fd: dict, clipped: float, unclipped: float) -> str:
    """yes: x0 beats xprev and an eps target beats x0; **no**: neither; **partly**:
    otherwise; each comparison said, and what sampling without clipping did."""
    eps = {"plain eps": fd["eps"], "eps with min-SNR (03's default)": fd["eps+minsnr"]}
    first = fd["x0"] < fd["xprev"] and not close(fd["x0"], fd["xprev"])
    second = any(v < fd["x0"] and not close(v, fd["x0"]) for v in eps.values())
    head = "yes" if first and second else "**partly**" if first or second else "**no**"
    said = [versus_fd("x0", fd["x0"], "xprev", fd["xprev"])]
    said += [versus_fd(name, v, "x0", fd["x0"]) for name, v in eps.items()]
    clip = (f"unclipped, 03's default model fails: FD {fmt(unclipped)} against "
            f"{fmt(clipped)}") if unclipped > 2 * clipped else \
        f"unclipped, 03's default model scores about the same ({fmt(unclipped)})"
    return f"{head}: " + "; ".join(said + [clip])


def targets(res):
    m = metrics(res, "03_targets")
    rows = m["targets"]
    fd = {r["target"] + ("+" + r["weighting"] if r["weighting"] != "plain" else ""): r["fd"]
          for r in rows}
    listed = "; ".join(f"{name} FD {fmt(v)}" for name, v in fd.items())
    return ["Predict the clean image rather than the slightly less noisy one, and then the "
            "noise rather than the clean image", "experiments/03_targets.py",
            f"one network per target from the same starting weights, {m['config']['steps']:,} "
            f"training steps each, sampled alike (N={rows[0]['n']}), one run each; and 03's "
            "default model sampled without clipping its clean-image estimate",
            f"{listed}. Unclipped, the default model's FD goes from "
            f"{fmt(metrics(res, '03')['fd'])} (N={metrics(res, '03')['n']}) to "
            f"{fmt(m['unclipped']['fd'])} (N={m['unclipped']['n']})",
            # rule: targets_verdict
            targets_verdict(fd, metrics(res, "03")["fd"], m["unclipped"]["fd"])]


def guidance(res):
    m = metrics(res, "04_guidance")
    rows = sorted(m["sweep"], key=lambda r: r["guidance"])
    acc = " / ".join(fmt(r["label_accuracy"]) for r in rows)
    div = " / ".join(fmt(r["diversity"], 3) for r in rows)
    scales = " / ".join(fmt(r["guidance"]) for r in rows)
    guided = [r for r in rows if r["guidance"] >= 1]
    ok = all(b["label_accuracy"] >= a["label_accuracy"] for a, b in zip(rows, rows[1:])) and \
        all(b["diversity"] < a["diversity"] for a, b in zip(guided, guided[1:])) and \
        rows[0]["diversity"] >= m["real_diversity"]
    return ["Classifier-free guidance makes samples follow the label, at the cost of variety",
            "experiments/04_guidance.py",
            f"the same model at guidance s = {scales} (s = 0 ignores the label, s = 1 is the "
            "plain conditional model), from the same starting noise",
            f"label accuracy {acc}; variety within a class {div} (at s = 0 that is the whole "
            f"set's, real digits {fmt(m['real_diversity'], 3)})",
            # rule: accuracy never falls and variety falls at every s >= 1, from an unguided
            # model at least as varied as real digits (so the fall is guidance's doing)
            yes_no(ok)]


def gan_verdict(first: float, last: float, unfiltered_fd: float, kept_fd: float) -> str:
    """yes if the critic's accuracy ends at least 0.05 below where it began; the filter's
    FD says whether the critic still tells real from drawn at the end."""
    tells = "keeping the digits it rates most real still improves FD: it still tells them " \
        "apart" if kept_fd < unfiltered_fd and not close(kept_fd, unfiltered_fd) else \
        "keeping the digits it rates most real does not improve FD"
    if last < first - 0.05:
        return f"yes; {tells}"
    return f"**no**: it fell {fmt(first - last, 2)}, under the rule's 0.05; {tells}"


def gan(res):
    m = metrics(res, "05")
    first = (m["d_acc_real_first"] + m["d_acc_fake_first"]) / 2
    last = (m["d_acc_real_final"] + m["d_acc_fake_final"]) / 2
    return ["The critic's accuracy falls as the generator improves", "05, section 4",
            "the critic's accuracy on real and generated batches, first and last 100 steps",
            f"{fmt(first, 2)} at first, {fmt(last, 2)} at the end (chance: 0.5); keeping the "
            f"quarter of drawn digits the critic rates most real takes FD from "
            f"{fmt(m['unfiltered_fd'])} to {fmt(m['fd'])}",
            # rule: gan_verdict
            gan_verdict(first, last, m["unfiltered_fd"], m["fd"])]


def vae(res):
    m = metrics(res, "06")
    return ["An autoencoder's latent space cannot be sampled; a VAE's can", "06",
            "the same network trained with and without the KL term, both decoding "
            "z ~ N(0, I)",
            f"VAE FD {fmt(m['fd'])} ({fmt(m['fd_ratio'])}x the floor), confidence "
            f"{fmt(m['confidence'], 2)}; autoencoder FD {fmt(m['ae_fd'])}, confidence "
            f"{fmt(m['ae_confidence'], 2)}",
            # rule: the autoencoder's FD at least three times the VAE's, and its confidence
            # (how clearly the judge sees a digit) lower
            yes_no(m["ae_fd"] > 3 * m["fd"] and m["ae_confidence"] < m["confidence"])]


def causal(res):
    m = metrics(res, "07_one_pass")
    return ["A causal network learns every step of an image in one evaluation, where the same "
            "network evaluated once per step learns one", "experiments/07_one_pass.py",
            f"the same transformer trained both ways, {m['steps']} steps each: all 784 positions "
            "per evaluation, or one position per evaluation (on the prefix before it)",
            f"{fmt(m['causal_targets_per_second'])} against "
            f"{fmt(m['one_position_targets_per_second'])} targets learned per second: "
            f"{fmt(m['causal_speedup'])}x (not 784x: a causal target pays attention over up "
            "to 784 earlier pixels, a one-position pass runs on a prefix)",
            # rule: at least ten times as many targets per second
            yes_no(m["causal_speedup"] > 10)]


def mask(res):
    c = metrics(res, "07_mask_cost")
    worse = c["mask_cost_bits"] > 2 * c["mask_cost_se"]
    better = c["mask_cost_bits"] < -2 * c["mask_cost_se"]
    return ["The causal mask costs a little prediction quality", "experiments/07_mask_cost.py",
            f"the same transformer trained one position per evaluation on {c['targets']:,} "
            "targets, with the mask inside the prefix and without it (the prediction of pixel "
            "i still sees only pixels before i)",
            f"held-out {bits(c['causal_bits_per_pixel'])} bits per pixel with the mask, "
            f"{bits(c['full_bits_per_pixel'])} without (difference "
            f"{fmt(c['mask_cost_bits'], 2)} +- {fmt(c['mask_cost_se'], 1)})",
            # rule: more than two standard errors either way, else not shown
            "yes" if worse else ("**no**: at this short budget the mask helped" if better
                                 else "not shown at this budget")]


def versus_verdict(bits_07: float, bits_01: float, fd_07: float, fd_01: float) -> str:
    """Better held-out bits is the claim; the samples' FD is said beside it either way,
    and one_run's note where the bits are close."""
    note = one_run(bits_07, bits_01, bits)
    if bits_07 >= bits_01:
        return "**no**" + note
    return "yes, in held-out bits" + note + ("" if fd_07 <= fd_01 else
                                             "; **but its samples score a worse FD**")


def versus_01(res):
    c = metrics(res, "07_versus_01")["compare"]
    a, b = c["07"], c["01"]
    return ["With the pixels already drawn around each position as a hint, the transformer "
            "beats chapter 01's network at equal training time", "experiments/07_versus_01.py",
            f"held-out bits per pixel and the samples' FD after {fmt(b['train_seconds'])} s of "
            "training each (two different networks; without the hint the transformer lost: "
            "docs/experiments.md)",
            f"bits per pixel: 07 {bits(a['bits_per_pixel'])}, 01 {bits(b['bits_per_pixel'])}; "
            f"samples: FD {fmt(a['fd'])} against 01's {fmt(b['fd'])} (N={a['n']})",
            # rule: versus_verdict
            versus_verdict(a["bits_per_pixel"], b["bits_per_pixel"], a["fd"], b["fd"])]


def latent(res):
    m = metrics(res, "08_versus_04")
    a, b = m["compare"]["04"], m["compare"]["08"]
    cheaper = b["steps_per_second"] * b["batch_size"] > a["steps_per_second"] * a["batch_size"] \
        and b["sample_seconds_per_image"] < a["sample_seconds_per_image"]
    bounded = b["fd"] <= 1.5 * a["fd"] and b["label_accuracy"] >= a["label_accuracy"] - 0.02 \
        and m["recon_fd"] < a["fd"]
    return ["Diffusion in a learned latent space is cheaper per step at a bounded cost in "
            "quality", "experiments/08_versus_04.py",
            f"04 on {a['values_per_image']} pixels and 08 on {b['values_per_image']} latent "
            f"values, their denoisers trained for the same {fmt(a['train_seconds'])} s "
            f"(08's autoencoder, trained once beforehand and reused as large generators reuse "
            f"theirs, took another {fmt(b['autoencoder_seconds'])} s); the autoencoder's "
            "reconstructions are 08's ceiling",
            f"training images per second {fmt(b['steps_per_second'] * b['batch_size'])} against "
            f"{fmt(a['steps_per_second'] * a['batch_size'])}; seconds per sample "
            f"{fmt(b['sample_seconds_per_image'], 2)} against "
            f"{fmt(a['sample_seconds_per_image'], 2)}; FD {fmt(b['fd'])} against "
            f"{fmt(a['fd'])}, label accuracy {fmt(b['label_accuracy'])} against "
            f"{fmt(a['label_accuracy'])}; reconstructions FD {fmt(m['recon_fd'])}",
            # rule: cheaper: more training images and fewer seconds per sample; bounded: FD
            # within 1.5x of 04's, label accuracy within 0.02, and the autoencoder's ceiling
            # (reconstructions FD) under 04's FD, so that it leaves room to match 04
            yes_no(cheaper and bounded, "partly" if cheaper or bounded else "no")]


def prompt_at(row: dict, unguided: dict, words: list, real_accuracy: float) -> str:
    """One scale: the digit named is drawn at least 0.9 times as often as the judge
    recognises real digits, and every attribute word is followed at least 0.3 more often
    than at s = 0. yes: both; partly: one; no: neither."""
    digit = row["label_accuracy"] >= 0.9 * real_accuracy
    followed = all(row[f"follow_{w}"] >= unguided[f"follow_{w}"] + 0.3 for w in words)
    return "yes" if digit and followed else ("partly" if digit or followed else "no")


def prompt_verdict(rows: list, words: list, real_accuracy: float) -> str:
    """prompt_at at every guided scale of the row (rows[0] is s = 0), scales with the same
    verdict said together; what falls short said where it does."""
    said = {r["guidance"]: prompt_at(r, rows[0], words, real_accuracy) for r in rows[1:]}
    parts = []
    for verdict, run in runs_of(list(said), said):
        at = "s = " + " and ".join(fmt(g) for g in run)
        if verdict == "yes":
            parts.append(f"yes at {at}")
            continue
        r = next(q for q in rows if q["guidance"] == run[0])
        short = [f"label accuracy {fmt(r['label_accuracy'])}"] * (
            r["label_accuracy"] < 0.9 * real_accuracy) + [
            f"'{w}' followed {fmt(r[f'follow_{w}'], 2)}" for w in words
            if r[f"follow_{w}"] < rows[0][f"follow_{w}"] + 0.3]
        parts.append(f"**{verdict} at {at}** (short of the rule: {', '.join(short)})")
    return "; ".join(parts)


def sentence(res):
    m = metrics(res, "09_prompt_following")
    rows = sorted(m["sweep"], key=lambda r: r["guidance"])
    words = [k[7:] for k in rows[0] if k.startswith("follow_") and k != "follow_mean"]
    per_scale = "; ".join(f"s = {fmt(r['guidance'])}: label accuracy "
                          f"{fmt(r['label_accuracy'])}, words followed "
                          + " / ".join(fmt(r[f'follow_{w}'], 2) for w in words) for r in rows)
    return ["A sentence can steer the image: the label becomes a caption, learned from the "
            "digits' own alt text", "experiments/09_prompt_following.py",
            f"09's model at guidance s = {', '.join(fmt(r['guidance']) for r in rows)} on "
            f"{rows[0]['n']} fixed prompts: the judge's digit against the prompt's, and the "
            f"share of samples whose measured stroke and slant match each word "
            f"({' / '.join(words)}); real held-out digits with their captions as the ceiling",
            f"{per_scale}; real digits: label accuracy {fmt(m['real']['label_accuracy'])}",
            # rule: prompt_verdict at every scale against s = 0
            prompt_verdict(rows, words, m["real"]["label_accuracy"])]


def sketch_verdict(rows: list, other_error: float, label_accuracy: float) -> str:
    """yes: at every guided scale under half the error of a digit ignoring its sketch, while
    s = 0 (the sketch ignored, rows[0]) is not, and the judge reads the default scale's
    results as the sketch's digit 9 times in 10; said as what it shows: one condition."""
    follows = all(r["sketch_error"] < 0.5 * other_error for r in rows[1:])
    control = rows[0]["sketch_error"] >= 0.5 * other_error
    ok = follows and control and label_accuracy >= 0.9
    return "yes, for the one condition measured: a 7x7 sketch" if ok else "**no**"


def sketch(res):
    m = metrics(res, "09_sketch")
    rows = sorted(m["sweep"], key=lambda r: r["guidance"])
    default = next(r for r in rows if r["guidance"] == m["config"]["guidance"])
    return ["The same mechanism conditions on another kind of input: measured for one, a 7x7 "
            "sketch instead of words",
            "experiments/09_sketch.py",
            "09's network given each held-out digit's 7x7 sketch as a second input channel "
            "instead of a caption; how far each result's own 7x7 version is from its sketch "
            "(mean absolute difference, ink 0 to 1), against a real digit and another digit's "
            "sketch. A grey 7x7 sketch holds much of a digit: this is closer to enlarging than "
            "to drawing from a doodle",
            "; ".join(f"s = {fmt(r['guidance'])}: {fmt(r['sketch_error'], 2)}" for r in rows)
            + f"; a real digit against another's sketch: {fmt(m['other_digit_error'], 2)}; "
            f"label accuracy at s = {fmt(default['guidance'])}: "
            f"{fmt(default['label_accuracy'])}",
            # rule: sketch_verdict
            sketch_verdict(rows, m["other_digit_error"], default["label_accuracy"])]


CLAIMS = [blur, one_pixel, argmax, several_pixels, spread_out, noise, few_steps, scale_down,
          targets, guidance, gan, vae, causal, mask, versus_01, latent, sentence, sketch]


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
           f"- reference step (`scripts/reference_step.py`, measured just before and just after "
           f"each step, which is divided by the mean of the two): median {fmt(ref, 3)} s "
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
    m02 = metrics(res, "02_sweep")
    for order, style in (("scattered", "o-"), ("contiguous", "^-")):
        if m02:
            ks = sorted(m02["ks"], reverse=True)
            ax.plot([784 // k for k in ks], [sweep_mean(res, order, k) for k in ks], style,
                    label=f"02 {order} (N={m02['n']}, mean of {len(m02['seeds'])} seeds)")
    rows = sorted(metrics(res, "03_sampling_steps").get("sweep", []),
                  key=lambda r: r["evaluations"])
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

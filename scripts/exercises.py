"""docs/exercises.md: the answers to the exercises that end each chapter, made from the
chapters' own `# %% Exercises` cells and docs/results.json only.

    python scripts/results.py render      (writes this page with README's blocks)

Each exercise is numbered in its chapter's cell; ANSWERS holds, per chapter and in that
order, a function that takes the results and returns the answer in Markdown. An answer
gives the reasoning, and the figures where a run of scripts/reproduce.sh measured them;
where none did, it says so (and which step of reproduce.sh would). Nobody types a
measured number here. tests/test_repository.py fails when docs/exercises.md differs.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from readme_blocks import metrics, sweep_mean
from results import fmt

ROOT = Path(__file__).resolve().parent.parent
EXERCISES_MD = ROOT / "docs" / "exercises.md"
MARKER = "\n# %% Exercises"
PATCH = re.compile(r"docs/solutions/[\w.-]+\.patch")


# %% Reading the chapters' exercise cells
def cell(path: Path) -> str:
    """The chapter's `# %% Exercises` cell, from its marker to the end ('' if it has none)."""
    text = Path(path).read_text()
    return text[text.index(MARKER) + 1:] if MARKER in text else ""


def exercises(path: Path) -> list[dict]:
    """The chapter's exercises in order: {number, kind (its first words: "Predict, then run",
    "Predict", "Change the code" or "Explain", else None), words (its text without the
    commands), commands (each an argv list, its first item the script), patches (the
    docs/solutions/ files it names)}. A command is a line indented by five
    spaces or more that starts with `python`; a line ending in a backslash goes on."""
    found, command = [], None
    for line in cell(path).splitlines()[1:]:
        line = line[2:] if line.startswith("# ") else line.lstrip("#")
        head = re.match(r"(\d+)\. ", line)
        if head:
            kind = re.match(r"\d+\. (Predict, then run|Predict|Change the code|Explain)\b", line)
            found.append({"number": int(head.group(1)), "kind": kind and kind.group(1),
                          "words": [], "commands": [], "patches": []})
        if not found:  # the cell's preamble, before exercise 1
            continue
        found[-1]["patches"] += PATCH.findall(line)
        if command is None and not re.match(r" {5,}python ", line):
            found[-1]["words"].append(line.strip())
            continue
        command = (command or "") + " " + line.strip().rstrip("\\")
        if not line.endswith("\\"):
            found[-1]["commands"].append(shlex.split(command)[1:])
            command = None
    for ex in found:
        ex["words"] = re.sub(r"^\d+\. ", "", " ".join(ex["words"]))
    return found


def chapters(root: Path = ROOT) -> list[Path]:
    return sorted(Path(root).glob("[0-9][0-9]_*.py"))


# %% Helpers for the answers
def step(res: dict, name: str) -> dict:
    """A step's metrics, or {} when the results file does not hold it."""
    return metrics(res, name)


def not_measured(name: str) -> str:
    return (f"Not measured in the results file yet: `bash scripts/reproduce.sh {name}` "
            "runs it and adds the figures here.")


YOURS = "Not measured here: the run is yours to make, and your figures are the answer."


def ratio(m: dict) -> str:
    return f"{fmt(m['fd_ratio'], 2)}x the floor"


def ways(n: int) -> str:
    return "one way" if n == 1 else f"{n} ways"


def row(rows: list, **match) -> dict:
    return next(r for r in rows if all(r.get(k) == v for k, v in match.items()))


# %% 01
def a01_argmax(res):
    m = step(res, "01_argmax")
    if not m:
        return "Argmax never inks a pixel: " + not_measured("01_argmax")
    inked = ("none: it draws an empty page" if m["argmax_inked_pixels"] == 0
             else f"{m['argmax_inked_pixels']} pixels")
    return (f"{inked.capitalize()}, the same image both times. Most of any digit is paper, so "
            "paper is the likelier level of pixel 0; given nothing but paper so far, paper "
            "stays the likelier level at every step, and the greedy choice never starts a "
            "stroke. Sampling inks a pixel whenever its draw says so, and the network then "
            "completes each beginning into its own digit: "
            f"{m['sampled_distinct']:,} different images of {m['sampled_n']:,}, FD "
            f"{ratio({'fd_ratio': m['sampled_fd_ratio']})}. Given the same top half of a "
            f"held-out digit, argmax completes it {m['completions']} times in "
            f"{ways(m['completions_argmax_distinct'])}, sampling in "
            f"{ways(m['completions_sampled_distinct'])}.")


def a01_temperature(res):
    base, m = step(res, "01"), step(res, "01_temperature")
    text = ("The held-out bits per pixel cannot change: they score real held-out digits under "
            "the learned probabilities, and the temperature only changes how a sample is drawn "
            "from them (section 5 never reads it). The FD can: at T = 0.5 every step's "
            "distribution is sharpened towards its likeliest level, so fewer stray pixels, "
            "and less variety; as T goes to 0 sampling becomes argmax and its empty page "
            "(exercise 1). Whether the cleaner strokes or the lost variety weigh more in FD "
            "is what the run tells.")
    if not m or not base:
        return text + " " + not_measured("01_temperature")
    same = "the same" if abs(m["bits_per_pixel"] - base["bits_per_pixel"]) < 1e-9 else "not " \
        "the same (a different model was loaded?)"
    return (text + f" Measured (N={m['n']:,}): FD {fmt(m['fd'])} ({ratio(m)}) at T = 0.5 "
            f"against {fmt(base['fd'])} ({ratio(base)}) at T = 1; held-out bits per pixel "
            f"{m['bits_per_pixel']:.4f} against {base['bits_per_pixel']:.4f}, {same}.")


def a01_close_up(res):
    return ("Worse bits per pixel, and speckled samples with broken strokes. Without the "
            "close-up, the network must learn, for each of the 784 positions separately, which "
            "of its inputs are pixel i's neighbours, through the one linear layer over the "
            "whole image and the position's embedding; the close-up handed the same weights "
            "the neighbourhood of every position, so what they learn about strokes serves "
            "everywhere (PixelCNN's idea). " + YOURS + " docs/experiments.md keeps the lab note "
            "from when the close-up was chosen.")


def a01_one_pixel(res):
    p, b = step(res, "01_one_pixel"), step(res, "01_blur")
    text = ("The condition. Given all the other pixels, a hidden pixel has nearly one possible "
            "colour: inside a stroke ink, on empty paper paper, so the average of what it could "
            "be is still a colour. Given nothing, every pixel could be ink or paper, and the "
            "average of all the digits is a grey smudge. ")
    if p:
        text += (f"Measured on pixel {p['index']} of {p['images']} held-out digits: RMS error "
                 f"{fmt(p['rms_given_rest'], 2)} given the rest, against "
                 f"{fmt(p['rms_dataset_mean'], 2)} for the data set's average. ")
    if b:
        text += (f"The whole-image network lands {fmt(b['blur_rms_to_mean'], 2)} RMS from the "
                 f"average digit (a training digit is {fmt(b['digit_rms_to_mean'], 2)} from it), "
                 f"and the judge scores its copies at FD {fmt(b['blur_fd_ratio'])}x the floor. ")
    return text + ("The more is given, the narrower the answer's distribution and the less its "
                   "average blurs: auto-regression asks only narrow questions.")


# %% 02
def a02_k49(res):
    m = step(res, "02_sweep")
    if not m:
        return not_measured("02_sweep")
    s16, s49 = sweep_mean(res, "scattered", 16), sweep_mean(res, "scattered", 49)
    c16, c49 = sweep_mean(res, "contiguous", 16), sweep_mean(res, "contiguous", 49)
    lead = "Both get worse" if s49 > s16 and c49 > c16 else "Not both worse, measured"
    return (f"{lead}: each step now draws 49 pixels independently given the same "
            "partial image, so more of the dependence between the pixels drawn together is "
            f"lost. experiments/02_sweep.py measured (N={m['n']}, the mean of {len(m['seeds'])} "
            f"sampling seeds): scattered FD {fmt(s16)} at k = 16, {fmt(s49)} at k = 49 "
            f"({fmt(s49 / s16, 2)}x); contiguous {fmt(c16)} and {fmt(c49)} "
            f"({fmt(c49 / c16, 2)}x), where a 7x7 patch's pixels are drawn side by side. FD "
            f"depends on N: your run scores 1,000 samples, so compare its ratios.")


def a02_k1_k784(res):
    m = step(res, "02_sweep")
    text = ("At k = 784: there both orders reveal every pixel in one step, given nothing, and "
            "both networks learned the same thing for that step, each pixel's share of ink over "
            "the data set: the same process, chapter 01's blur drawn with noise. At k = 1 both "
            "orders are exact one-pixel auto-regression, and perfect networks would score "
            "alike; trained ones do not, because the contiguous network learns pixel p's "
            "conditional only from examples whose frontier stands at p, the scattered one from "
            "random sets. ")
    if not m:
        return text + not_measured("02_sweep")
    r = m["fd_contiguous_over_scattered"]
    return text + (f"Measured: FD contiguous / scattered {fmt(r['784']['mean'], 3)} at k = 784 "
                   f"(FD {fmt(sweep_mean(res, 'contiguous', 784))} and "
                   f"{fmt(sweep_mean(res, 'scattered', 784))}), and "
                   f"{fmt(r['1']['mean'], 3)} ({fmt(r['1']['min'], 3)} to "
                   f"{fmt(r['1']['max'], 3)} over {len(m['seeds'])} seeds) at k = 1: the "
                   "control every other k is divided by.")


def a02_strided(res):
    m = step(res, "02_sweep")
    dep = ""
    if m:
        d = m["dependence"]
        dep = (f" (measured on held-out digits at k = 16, the mean |correlation| within a step: "
               f"{fmt(d['scattered']['16']['given_nothing'], 2)} scattered, "
               f"{fmt(d['contiguous']['16']['given_nothing'], 2)} contiguous)")
    return ("Close to scattered, probably. At k = 16 one step's pixels are 49 apart, a row and "
            "three quarters: never neighbours, so they depend on each other about as little as "
            "a random set's" + dep + ". What differs is that every image has the same order: "
            "each step's known set is always the same, so the network learns 49 fixed "
            "conditionals from all its examples (as the contiguous network does), where the "
            "scattered network spreads its training over random sets, and a sample cannot "
            "start its strokes anywhere else. " + YOURS)


def a02_k196(res):
    m = step(res, "02_sweep")
    text = ("At k = 196 a sample takes four steps, and both orders are near the one-step result "
            "they share at k = 784 (exercise 2): all bad, with little room for a gap. And a "
            "quarter of the image is so large that most of its pixels are far apart: a 14x14 "
            "patch is less 'neighbourly' than a 4x4 one, so it loses less to independent "
            "draws. ")
    if not m:
        return text + not_measured("02_sweep")
    r, d = m["ratio_over_control"], m["dependence"]
    return text + (
        f"Measured: FD contiguous / scattered over the k = 1 control, {fmt(r['16']['mean'], 3)} "
        f"at k = 16 and {fmt(r['196']['mean'], 3)} at k = 196; FD "
        f"{fmt(sweep_mean(res, 'contiguous', 196))} contiguous and "
        f"{fmt(sweep_mean(res, 'scattered', 196))} scattered at k = 196, against "
        f"{fmt(sweep_mean(res, 'scattered', 784))} at k = 784; the dependence within a "
        f"contiguous step, {fmt(d['contiguous']['16']['given_nothing'], 2)} at k = 16 and "
        f"{fmt(d['contiguous']['196']['given_nothing'], 2)} at k = 196 (scattered: "
        f"{fmt(d['scattered']['196']['given_nothing'], 2)}). Which of the two reasons reverses "
        "the ratio was not measured.")


# %% 03
def a03_sample_steps(res):
    rows = sorted(step(res, "03_sampling_steps").get("sweep", []), key=lambda r: r["evaluations"])
    text = ("Each DDIM step jumps from x_t to an earlier x_s along the predicted noise; with few "
            "steps each jump is long, and a clean-image estimate made at high noise (a blur, "
            "section 4) is trusted over a long stretch. Past some tens of steps the network's "
            "own errors, not the step size, set the quality, and more steps buy little. ")
    if not rows:
        return text + not_measured("03_sampling_steps")
    by = {r["evaluations"]: r for r in rows}
    trail = ", ".join(f"{fmt(r['fd'])} at {r['evaluations']}" for r in rows)
    text += f"Measured (N={rows[0]['n']}, floor {fmt(rows[0]['fd_floor'])}): FD {trail}"
    if 5 in by and 25 in by and 100 in by:
        text += (f": 5 steps cost {fmt(by[5]['fd'] / by[25]['fd'], 2)}x the FD of 25, and 100 "
                 f"steps gain {fmt(1 - by[100]['fd'] / by[25]['fd'], 2)} of it, for 4x the time")
    return text + "."


def a03_clip(res):
    m, s = step(res, "03_targets").get("unclipped"), step(res, "03_sampling_steps")
    text = ("An eps network's clean-image estimate divides by sqrt(abar_t): "
            "x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t), and near t = T that "
            "multiplies a small error in eps_hat by thousands (section 4). Unclipped, the early "
            "estimates are wild values far outside [-1, 1], and DDIM's next step is built on "
            "them; clipped, they stay among images, and the noise is recomputed to agree. ")
    if not m:
        return "A collapse, most likely. " + text + not_measured("03_targets")
    clipped = [r["fd"] for r in s.get("sweep", []) if r["evaluations"] == 25 and r["n"] == m["n"]]
    text = ("A collapse. " if clipped and m["fd"] > 2 * clipped[0] else "Measured, no "
            "collapse, though the reasoning predicts one. ") + text
    text += (f"Measured (N={m['n']}): unclipped FD {fmt(m['fd'])} ({ratio(m)}, the judge finding "
             f"{m['coverage']} of the 10 digits)")
    if clipped:
        text += f", against {fmt(clipped[0])} clipped at the same N and 25 steps"
    return text + "."


def a03_eta(res):
    base, m = step(res, "03"), step(res, "03_eta0")
    text = ("Worse, most likely. With eta = 1 every step adds fresh noise, part of x_t is "
            "drawn anew and re-predicted, so later steps correct an imperfect network's earlier "
            "mistakes; eta = 0 follows one deterministic path, and every error made early is "
            "carried to the end. With a perfect network both sample the same distribution; the "
            "difference is the network's errors.")
    if not m or not base:
        return text + " " + not_measured("03_eta0")
    return text + (f" Measured (N={m['n']:,}): FD {fmt(m['fd'])} ({ratio(m)}) at eta 0 against "
                   f"{fmt(base['fd'])} ({ratio(base)}) at eta 1, the same model and seed.")


def a03_linear(res):
    return ("With linear betas abar_t falls fast: about 0.08 at t = 500 (the cosine schedule: "
            "0.49) and under 0.01 from t = 674 on (cosine: from t = 936). A third of the "
            "timesteps hold almost no image, so about a third of DDIM's 25 evenly spaced steps "
            "denoise what is still nearly pure noise, and the few steps where the digit takes "
            "shape are crowded together. Expect a worse FD at the same training and the same "
            "25 steps (DDPM's 1,000 steps hid this). These abar figures follow from the "
            "formulas alone; " + YOURS[0].lower() + YOURS[1:])


def a03_xprev(res):
    m = step(res, "03_targets")
    text = ("An error e in the clean image is an error c0 * e in xprev, and c0 = sqrt(abar_{t-1}) "
            "beta_t / (1 - abar_t) is close to 0 at high noise: the xprev loss hardly notices "
            "its mistakes at the noisy steps, the ones that decide which digit it is and where "
            "its strokes go. Sampling then divides by c0 to get the clean image back, blowing "
            "those neglected errors up exactly where a sample begins. ")
    if not m:
        return text + not_measured("03_targets")
    fd = {r["target"] + (" with min-SNR" if r["weighting"] != "plain" else ""): r["fd"]
          for r in m["targets"]}
    return text + (f"Measured ({m['config']['steps']:,} training steps each, "
                   f"N={m['targets'][0]['n']}, one run each): FD "
                   + ", ".join(f"{k} {fmt(v)}" for k, v in fd.items()) + ".")


# %% 04
def a04_guidance(res):
    m = step(res, "04_guidance")
    text = ("s = 0 ignores the label, so the digit asked for comes out about one time in ten; "
            "s = 1 samples the conditional model as it learned it; larger s exaggerates what "
            "makes the image that digit. ")
    if not m:
        return text + not_measured("04_guidance")
    rows = sorted(m["sweep"], key=lambda r: r["guidance"])
    best = min(rows, key=lambda r: r["fd"])
    return text + ("Measured (N=" + f"{rows[0]['n']:,}): " + "; ".join(
        f"s = {fmt(r['guidance'])}: label accuracy {fmt(r['label_accuracy'])}, FD {fmt(r['fd'])}"
        for r in rows) + f". The best FD is at s = {fmt(best['guidance'])}; the default 1.75 "
        "was chosen for the label accuracy (exercise 4 says why the two part ways).")


def a04_sevens(res):
    m = step(res, "04_guidance")
    text = ("More alike. Guidance pushes every sample away from what the unconditional model "
            "would draw, towards the features that make it most clearly a seven, and the "
            "ways of writing a seven that are also like other digits are pushed out. ")
    if not m:
        return text + not_measured("04_guidance")
    rows = sorted(m["sweep"], key=lambda r: r["guidance"])
    s1, s4 = row(rows, guidance=1.0), max(rows, key=lambda r: r["guidance"])
    return text + (f"Measured over all ten digits, the mean pixel distance between two samples "
                   f"asked for the same digit: {fmt(s1['diversity'], 3)} at s = 1, "
                   f"{fmt(s4['diversity'], 3)} at s = {fmt(s4['guidance'])}; real digits of "
                   f"one label: {fmt(m['real_diversity'], 3)}. The judge's confidence rises "
                   f"from {fmt(s1['confidence'], 3)} to {fmt(s4['confidence'], 3)}.")


def a04_no_dropout(res):
    return ("The \"no label\" row is never used in training, so it keeps its random initial "
            "values, and the network's output given it is not p(x) but whatever an input it "
            "never saw makes it do. At s = 1 only the conditional half counts, so samples stay "
            "fine; at the default s = 1.75 guidance pushes away from that arbitrary output, "
            "out_u + s (out_c - out_u), and the push points nowhere useful: expect artefacts "
            "and a worse FD; s = 0 shows what that output draws, which is not p(x). "
            "Classifier-free guidance needs the "
            "same network to know both p(x | label) and p(x). " + YOURS)


def a04_fd(res):
    m = step(res, "04_guidance")
    text = ("Label accuracy asks one question of each sample: is it the digit asked for? FD "
            "compares the whole set's features with real digits', their spread included. "
            "Guidance narrows each class and exaggerates its typical look: every sample is "
            "clearly its digit, but the set no longer varies as real handwriting does. At s = 0 "
            "the labels are ignored and the variety is there, but the unconditional model's "
            "digits are less clean. ")
    if not m:
        return text + not_measured("04_guidance")
    rows = sorted(m["sweep"], key=lambda r: r["guidance"])
    return text + ("Measured, per scale, FD / variety within a class: " + "; ".join(
        f"s = {fmt(r['guidance'])}: {fmt(r['fd'])} / {fmt(r['diversity'], 3)}" for r in rows)
        + f" (real digits' variety: {fmt(m['real_diversity'], 3)}).")


# %% 05
def a05_keep(res):
    m = step(res, "05")
    text = ("The critic still tells many drawn digits from real ones at the end, so its "
            "score carries information; at its optimum its logit would be log p_data(x) / "
            "p_G(x), and keeping the highest logits moves the kept set towards the data. ")
    if "unfiltered_fd" not in m:
        return "Worse, most likely. " + text + not_measured("05")
    lead = "Worse. " if m["unfiltered_fd"] > m["fd"] else "Measured, not worse. "
    text = lead + text
    return text + (f"Measured (N={m['n']:,}; the default run prints both): FD "
                   f"{fmt(m['unfiltered_fd'])} for every drawn digit, {fmt(m['fd'])} for the "
                   f"best {m['keep']:.0%}; the judge's confidence "
                   f"{fmt(m['unfiltered_confidence'], 3)} and {fmt(m['confidence'], 3)}.")


def a05_walks(res):
    m = step(res, "05_walks")
    text = ("A draw z ~ N(0, I) in 64 dimensions has a length close to "
            "sqrt(64) = 8, and two draws are nearly at right angles, so the straight line's "
            "midpoint has a length close to 8 / sqrt(2), about 5.7: a region where N(0, I) puts "
            "almost no mass and the generator never had an input. The great circle keeps the "
            "length of its ends. ")
    if not m:
        return "The great circle, most likely. " + text + not_measured("05_walks")
    lead = "The great circle. " if m["circle_fd"] < m["line_fd"] else "Measured, the line. "
    text = lead + text
    return text + (f"Measured (N={m['line_n']:,} pairs): the midpoints' length over "
                   f"the ends', {fmt(m['line_norm'], 2)} on the line and "
                   f"{fmt(m['circle_norm'], 2)} on the circle; FD of the ends "
                   f"{fmt(m['ends_fd'])}, of the line's midpoints {fmt(m['line_fd'])}, "
                   f"of the circle's {fmt(m['circle_fd'])}.")


def a05_minimax(res):
    return ("A slow, or failed, start. Early on the critic rejects drawn digits easily, "
            "D(G(z)) near 0, and there log(1 - D(G(z))) is flat: its gradient with respect to "
            "the logit is -D(G(z)), nearly 0, so the generator learns almost nothing while "
            "the critic races ahead. training.png shows the critic's accuracy on drawn digits "
            "near 1 for longer; if the generator never catches up, the samples stay blobs or "
            "a few kinds of digit. Same fixed point as the non-saturating loss, far worse "
            "gradients where the artist is worst. " + YOURS)


def a05_detach(res):
    return ("An error at the first step: \"Trying to backward through the graph a second "
            "time\". Without detach, the critic's loss.backward() runs back through the "
            "generator too, and autograd frees the generator's part of the graph when it is "
            "done; generator_step then backpropagates through the same generated batch and "
            "finds it gone. (The gradients that reached the generator's weights would have "
            "been wiped by its zero_grad anyway.) retain_graph=True would silence the error "
            "and compute the generator's gradients twice for nothing: detach is how the "
            "critic's update keeps its hands off the artist.")


def a05_equilibrium(res):
    m = step(res, "05")
    text = ("The generator's digits are not yet distributed like real ones: a small pair in a "
            "few thousand steps does not reach the equilibrium, and the critic still finds "
            "differences. Those differences are what the filter spends: the digits the critic "
            "takes for real are, on average, the more real-looking ones. At the equilibrium the "
            "critic's score would carry no information and the filter would be four generator "
            "passes per digit for nothing. ")
    if "d_acc_real_final" not in m:
        return text + not_measured("05")
    first = (m["d_acc_real_first"] + m["d_acc_fake_first"]) / 2
    last = (m["d_acc_real_final"] + m["d_acc_fake_final"]) / 2
    return text + (f"Measured: the critic's accuracy {fmt(first, 2)} over the first 100 steps, "
                   f"{fmt(last, 2)} over the last; keeping the best quarter took FD from "
                   f"{fmt(m['unfiltered_fd'])} to {fmt(m['fd'])}.")


# %% 06
def a06_codes(res):
    m = step(res, "06")
    text = ("The VAE's codes fill the prior: its KL term pulls each q(z|x) towards N(0, I), so "
            "over held-out digits E[z_j^2] sits near 1 in every dimension. Nothing pulls the "
            "autoencoder's codes anywhere: they spread as far as reconstruction likes, leaving "
            "a draw from N(0, I) in a small region in the middle, among gaps its decoder never "
            "learned. So the VAE's samples are digits, the autoencoder's mostly smudges. ")
    if "vae_code_second_moment" not in m:
        return text + not_measured("06")
    v, a = m["vae_code_second_moment"], m["ae_code_second_moment"]
    return text + (f"Measured: E[z_j^2] {fmt(min(v), 2)} to {fmt(max(v), 2)} for the VAE, "
                   f"{fmt(min(a), 2)} to {fmt(max(a), 2)} for the autoencoder; FD "
                   f"{fmt(m['fd'])} against {fmt(m['ae_fd'])}, the judge's confidence "
                   f"{fmt(m['confidence'], 2)} against {fmt(m['ae_confidence'], 2)}, the "
                   f"autoencoder's samples read as {m['ae']['coverage']} of the 10 digits.")


def a06_interpolation(res):
    m = step(res, "06_interpolation")
    text = ("The chapter's argument says the VAE's: its codes leave no gaps, so the middle of a "
            "line between two codes should decode to something digit-like. But the middle of "
            "two different digits is often neither digit, in any latent space, and the "
            "autoencoder, paying no KL, reconstructs its ends more sharply. ")
    if not m:
        return text + not_measured("06_interpolation")
    better = "the VAE's" if m["vae_middle_fd"] < m["ae_middle_fd"] else "the autoencoder's"
    return text + (f"Measured (N={m['vae_middle_n']:,} pairs): the midpoints' FD "
                   f"{fmt(m['vae_middle_fd'])} for the VAE, {fmt(m['ae_middle_fd'])} for the "
                   f"autoencoder ({better} better), confidence "
                   f"{fmt(m['vae_middle_confidence'], 2)} and "
                   f"{fmt(m['ae_middle_confidence'], 2)}; the ends (reconstructions) "
                   f"{fmt(m['vae_end_fd'])} and {fmt(m['ae_end_fd'])}. Both models' midpoints are "
                   "far from digits; the VAE's advantage is sampling the prior (exercise 1), "
                   "not the straight line between two codes.")


def a06_beta(res):
    m = step(res, "06")
    text = ("With beta = 4 a nat of KL costs four of reconstruction, so the encoder keeps less "
            "about each digit in z: the held-out reconstruction part rises, the KL part falls, "
            "and some latent dimensions may stop carrying anything (their q(z|x) is the prior). "
            "The samples get blurrier and more alike, though the prior is covered with fewer "
            "holes. The held-out bound the run prints stays the true -ELBO (held_out_elbo "
            "does not read beta), and it gets worse. ")
    if "rec_nats_held" in m:
        text += (f"The default's parts, to compare with: reconstruction "
                 f"{fmt(m['rec_nats_held'])} nats, KL {fmt(m['kl_nats_held'], 3)} nats, "
                 f"-ELBO {fmt(m['neg_elbo_held'])}. ")
    return text + YOURS


def a06_independent(res):
    m, d = step(res, "06"), step(res, "03")
    text = ("Chapter 02: pixels drawn in one step independently given the same partial image "
            "lose what they share, and the fewer steps, the worse. Here every pixel is "
            "independent given z, so whatever z leaves open each pixel averages on its own: "
            "section 1's blur, in small. 02 drew fewer pixels per step and spread them out; "
            "diffusion (03) removes little per step over many steps; 08 lets a diffusion model "
            "choose the latent and a convolutional decoder draw it. ")
    if "fd" in m and "fd" in d:
        text += (f"Measured at N={m['n']:,}: the VAE's FD {fmt(m['fd'])}, 03's "
                 f"{fmt(d['fd'])} at {d['evaluations_per_image']} evaluations per image.")
    return text


# %% 07
def a07_one_pass(res):
    m = step(res, "07_one_pass")
    text = ("A one-position evaluation runs on the prefix before its target, on average "
            "half the image, and causal attention on a prefix costs about a third of a full "
            "pass: by arithmetic alone the ratio would be about 330 (the experiment's "
            "docstring counts it). Costs paid once per evaluation, the optimizer step and "
            "Python's overhead, push the measured ratio back towards 784. ")
    if not m:
        return "Less, most likely. " + text + not_measured("07_one_pass")
    lead = "Less. " if m["causal_speedup"] < 784 else "Measured, at least 784 times. "
    text = lead + text
    return text + (f"Measured: {fmt(m['causal_targets_per_second'])} against "
                   f"{fmt(m['one_position_targets_per_second'])} targets per second, "
                   f"{fmt(m['causal_speedup'])}x; after {m['steps']} steps each, held-out bits "
                   f"per pixel {fmt(m['causal_bits_per_pixel'], 3)} against "
                   f"{fmt(m['one_position_bits_per_pixel'], 3)}.")


def a07_text(res):
    m = step(res, "07_text")
    text = ("Far fewer than log2 of the vocabulary, which is what a model that knows nothing "
            "pays: spelling, words and Python's vocabulary make the next character predictable, "
            "as strokes make the next pixel. ")
    if not m:
        return text + not_measured("07_text")
    return text + (f"Measured: {m['vocabulary']} distinct characters, log2 = "
                   f"{fmt(m['uniform_bits'], 3)} bits; the transformer needs "
                   f"{fmt(m['bits_per_char'], 3)} bits per character on the held-out tenth "
                   f"of {m['characters']:,} characters, after {m['steps']:,} steps.")


def a07_no_mask(res):
    return ("Both come out lower than with the mask: input i + 1 holds token i (shift_right), "
            "and the hints of later inputs hold it too, so without the mask output i can read "
            "its own target, and the network learns to copy instead of predicting; how far the "
            "loss falls depends on how soon it finds that route. A compressor that cheats: the "
            "held-out bits are scored by the same one-pass loss. "
            "samples.png shows nearly empty pages or noise: in generation token i does not "
            "exist yet when it is drawn, the copy has nothing to copy, and what the network "
            "learned instead of predicting is useless. The mask is what makes one pass an "
            "honest loss for all 784 steps. " + YOURS)


def a07_mask_cost(res):
    c = step(res, "07_mask_cost")
    text = ("The talk's cost is about capacity: full attention inside the prefix can compute "
            "strictly more. Likely, learning is the bottleneck at a small budget. Without the "
            "mask, every earlier position's vector changes whenever the prefix grows, so the "
            "network must learn a different function for each length, from one target per "
            "evaluation; with it, position j computes the same thing whatever follows, and "
            "what it learns for one target serves every later one. ")
    if not c:
        return text + not_measured("07_mask_cost")
    found = ("The mask helped. " if c["mask_cost_bits"] < -2 * c["mask_cost_se"] else
             "The mask cost a little, as the talk says. " if c["mask_cost_bits"] >
             2 * c["mask_cost_se"] else "No difference beyond two standard errors. ")
    return found + text + (
        f"Measured after {c['steps']:,} steps ({c['targets']:,} targets): held-out "
        f"{c['causal_bits_per_pixel']:.3f} bits per pixel with the mask, "
        f"{c['full_bits_per_pixel']:.3f} without (difference {fmt(c['mask_cost_bits'], 2)} +- "
        f"{fmt(c['mask_cost_se'], 1)}), one run; at larger budgets the talk's cost may show.")


def a07_versus(res):
    m = step(res, "07_versus_01")
    text = ("Held-out bits score real digits, every pixel given the real pixels before it: "
            "average prediction. FD scores samples, where every condition is the model's own "
            "earlier draw: an error early in a sample is fed back and compounds, and a mistake "
            "that costs few bits (a stray pixel, a broken stroke) can spoil a digit's look. The "
            "two measure different things; a better likelihood does not promise better samples. ")
    if not m:
        return text + not_measured("07_versus_01")
    a, b = m["compare"]["07"], m["compare"]["01"]
    both = a["bits_per_pixel"] < b["bits_per_pixel"] and a["fd"] > b["fd"]
    return text + ("07 against 01 shows it: " if both else "07 against 01: ") + (
        f"trained for 01's {fmt(b['train_seconds'])} s, bits per pixel 07 "
        f"{a['bits_per_pixel']:.3f}, 01 {b['bits_per_pixel']:.3f}; FD {fmt(a['fd'])} against "
        f"{fmt(b['fd'])} (N={a['n']:,}).")


# %% 08
def a08_guidance(res):
    g, base, m = step(res, "04_guidance"), step(res, "08"), step(res, "08_guidance4")
    text = ("As in 04: the label accuracy rises to nearly every digit, the variety within a "
            "digit falls, and FD gets worse once s is past the scale that samples the model "
            "as it learned. ")
    if g:
        rows = sorted(g["sweep"], key=lambda r: r["guidance"])
        text += ("04's model measured label accuracy / FD " + "; ".join(
            f"{fmt(r['label_accuracy'])} / {fmt(r['fd'])} at s = {fmt(r['guidance'])}"
            for r in rows) + ". ")
    if not m or not base:
        return text + not_measured("08_guidance4")
    return text + (f"Measured for 08 (N={m['n']:,}): label accuracy "
                   f"{fmt(m['label_accuracy'])} and FD {fmt(m['fd'])} at s = "
                   f"{fmt(m['guidance'])}, against {fmt(base['label_accuracy'])} and "
                   f"{fmt(base['fd'])} at s = {fmt(base['guidance'])}.")


def a08_ceiling(res):
    m = step(res, "08")
    text = ("Every sample is the decoder's output on some latent, and a reconstruction "
            "is its output on a real digit's own latent, the best latent there is for that "
            "digit. To beat them, the denoiser would have to find latents that decode to more "
            "realistic digits than real digits' codes do. The reconstructions are the ceiling. ")
    if "recon_fd" not in m:
        return "Hardly. " + text + not_measured("08")
    lead = "Hardly. " if m["fd"] > m["recon_fd"] else "Measured, yes, this time. "
    text = lead + text
    return text + (f"Measured (N={m['n']:,}): reconstructions FD {fmt(m['recon_fd'])} "
                   f"({fmt(m['recon_fd_ratio'], 2)}x the floor), samples {fmt(m['fd'])} "
                   f"({ratio(m)}).")


def a08_decode_noise(res):
    return ("Expect smudges, much like 06's autoencoder sampled from the prior. With a KL "
            "weight of 0.01 the codes are not pushed to fill N(0, I); section 2 standardises "
            "each latent channel to mean 0 and variance 1 over the training codes, but that "
            "sets only each value's spread, not how the 196 values go together, and a stroke "
            "is a pattern across neighbouring positions. Independent draws hold none: a high "
            "FD, a low confidence, and a label accuracy near chance, since nothing reads the "
            "labels. The diffusion model is what learned where the codes lie. " + YOURS)


def a08_race(res):
    m = step(res, "08_versus_04")
    text = ("The autoencoder: trained once beforehand, outside the race, and a ceiling on "
            "every sample (its reconstructions). Large generators accept both because one "
            "autoencoder serves every denoiser trained on its latents, and at their sizes the "
            "saving per step is large (Stable Diffusion denoises a 4x64x64 grid for a "
            "3x512x512 image, 48 times fewer values) while the ceiling stays high. ")
    if not m:
        return text + not_measured("08_versus_04")
    a, b = m["compare"]["04"], m["compare"]["08"]
    return text + (
        f"Measured, 08's denoiser given 04's {fmt(a['train_seconds'])} s of training (it took "
        f"{fmt(b['train_seconds'])} s, its steps set by a pilot run): training images per "
        f"second {fmt(b['steps_per_second'] * b['batch_size'])} (08) against "
        f"{fmt(a['steps_per_second'] * a['batch_size'])} (04); seconds per sample "
        f"{fmt(b['sample_seconds_per_image'], 2)} against {fmt(a['sample_seconds_per_image'], 2)}; "
        f"FD {fmt(b['fd'])} against {fmt(a['fd'])}; the autoencoder took another "
        f"{fmt(b['autoencoder_seconds'])} s, and its reconstructions score FD "
        f"{fmt(m['recon_fd'])}.")


# %% 09
def prompt_rows(res) -> list:
    return sorted(step(res, "09_prompt_following").get("sweep", []),
                  key=lambda r: r["guidance"])


def a09_scales(res):
    rows, m = prompt_rows(res), step(res, "09")
    text = ("At s = 0 the caption is ignored: the digit named comes out about one time in ten, "
            "and 'thin' is followed about as often as a digit happens to be thin. Guidance "
            "brings both up. ")
    if not rows:
        return text + not_measured("09_prompt_following")
    chance = f" (real digits measured thin: {fmt(m['share_thin'], 2)})" if "share_thin" in m \
        else ""
    return text + ("Measured (N=" + f"{rows[0]['n']:,}, the default prompts): " + "; ".join(
        f"s = {fmt(r['guidance'])}: the digit named {fmt(r['label_accuracy'])}, 'thin' "
        f"followed {fmt(r['follow_thin'], 2)}" for r in rows) + chance + ".")


def a09_left(res):
    rows, m = prompt_rows(res), step(res, "09")
    text = ("'slanted left' is the rarest word of the alt text, so the network saw it least, "
            "and a model without a caption seldom slants left, so guidance has further to "
            "push. ")
    if not rows or "share_left" not in m:
        return "Less often, most likely. " + text + not_measured("09_prompt_following")
    lead = "Less often, at least at low scales. " if any(
        r["follow_left"] < r["follow_right"] for r in rows[1:]) else "Measured, as often. "
    text = lead + text
    return text + (f"Real digits measured left: {fmt(m['share_left'], 2)}, right: "
                   f"{fmt(m['share_right'], 2)}. Measured over the default prompts (not this "
                   "one), left / right followed: " + "; ".join(
                       f"{fmt(r['follow_left'], 2)} / {fmt(r['follow_right'], 2)} at s = "
                       f"{fmt(r['guidance'])}" for r in rows) + ".")


def a09_mean(res):
    return ("Long prompts, on their digit. A mean divides every word's vector by the "
            "caption's length: in 'a thick seven, slanted right' (five words) the digit's "
            "word weighs a fifth, in 'a seven' a half, so the longer the prompt, the weaker "
            "the digit's pull, and the MLP must undo a scale that depends on the length. "
            "Section 3's comment records that a mean followed the digit less often "
            "(docs/experiments.md). " + YOURS)


def a09_order(res):
    return ("The encoder sums its words' vectors, so order is lost. Harmless here: the "
            "grammar gives each kind of word one role (one digit, one thickness, one side) and "
            "every attribute describes the one digit, so the set of words says everything. "
            "'a dog on a cat' and 'a cat on a dog' have the same words; telling them apart "
            "needs an encoder that reads order (positions and attention: a transformer, as "
            "CLIP's and T5's), and an image that attends to each word (cross-attention) rather "
            "than one summed vector.")


def a09_sketch(res):
    m = step(res, "09_sketch")
    text = ("Hardly. A 7x7 sketch in shades of grey holds each 4x4 patch's mean ink, most of "
            "a digit; the network's task is closer to enlarging, filling in the strokes' "
            "edges. Drawing from a doodle would need a sketch that holds far less, where many "
            "digits fit one sketch. ")
    if not m:
        return text + not_measured("09_sketch")
    rows = sorted(m["sweep"], key=lambda r: r["guidance"])
    return text + ("Measured, the mean absolute difference between each result's 7x7 version "
                   "and its sketch: " + "; ".join(
                       f"{fmt(r['sketch_error'], 2)} at s = {fmt(r['guidance'])} (FD "
                       f"{fmt(r['fd'])})" for r in rows)
                   + f"; a real digit against another's sketch: "
                   f"{fmt(m['other_digit_error'], 2)}; the floor {fmt(rows[0]['fd_floor'])} "
                   f"(N={rows[0]['n']:,}). At s = 0 the sketch is ignored and the error is a "
                   "stranger's: the match is the condition's doing.")


ANSWERS = {
    "01": [a01_argmax, a01_temperature, a01_close_up, a01_one_pixel],
    "02": [a02_k49, a02_k1_k784, a02_strided, a02_k196],
    "03": [a03_sample_steps, a03_clip, a03_eta, a03_linear, a03_xprev],
    "04": [a04_guidance, a04_sevens, a04_no_dropout, a04_fd],
    "05": [a05_keep, a05_walks, a05_minimax, a05_detach, a05_equilibrium],
    "06": [a06_codes, a06_interpolation, a06_beta, a06_independent],
    "07": [a07_one_pass, a07_text, a07_no_mask, a07_mask_cost, a07_versus],
    "08": [a08_guidance, a08_ceiling, a08_decode_noise, a08_race],
    "09": [a09_scales, a09_left, a09_mean, a09_order, a09_sketch],
}


# %% The page
def question(ex: dict) -> list[str]:
    """An exercise as the chapter states it: its words as a quote, its commands as code."""
    out = ["> " + ex["words"]]
    for argv in ex["commands"]:
        out += ["", "```bash", "python " + shlex.join(argv), "```"]
    return out


def page(res: dict, root: Path = ROOT) -> str:
    mach = res.get("machine", {})
    out = ["# Exercises: the answers", "",
           "Generated by `python scripts/results.py render` from the chapters' exercise cells "
           "and `docs/results.json`; do not edit.", "",
           "Every chapter ends with a cell `# %% Exercises`: predict, then run; change the "
           "code; explain. Try each before reading its answer. The figures below come from "
           f"the runs of `bash scripts/reproduce.sh` ({mach.get('cpu', 'a CPU')}, "
           f"{res.get('date')}); a run of yours with the same seed on a CPU lands close. FD "
           "depends on the number of samples N, so compare an FD with one at the same N, or "
           "its ratio to the floor (real digits' FD at that N). A command's `--load` needs "
           "the chapter's default run first. A reference solution applies with "
           "`git apply docs/solutions/NAME.patch` and comes off with `git apply -R`."]
    for path in chapters(root):
        found, answers = exercises(path), ANSWERS.get(path.name[:2], [])
        if [e["number"] for e in found] != list(range(1, len(answers) + 1)):
            raise SystemExit(f"{path.name}: exercises {[e['number'] for e in found]}, but "
                             f"{len(answers)} answers in scripts/exercises.py")
        if not found:
            continue
        out += ["", f"## {path.name}"]
        for ex, answer in zip(found, answers):
            out += ["", f"### {path.name[:2]}.{ex['number']} {ex['kind']}",
                    "", *question(ex), "", answer(res)]
            out += [f"\nA solution: [{p}](solutions/{Path(p).name})." for p in ex["patches"]]
    return "\n".join(out) + "\n"

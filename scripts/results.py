"""One home for every number README shows.

scripts/reproduce.sh runs every chapter and every experiment README quotes, and
calls this file to keep the record:

    python scripts/results.py reference            time the reference workload (into the log)
    python scripts/results.py record NAME OUT START END -- COMMAND...   one finished step
    python scripts/results.py collect              runs/ -> docs/results.json, pictures -> docs/
    python scripts/results.py render               docs/results.json -> README's generated
                                                   blocks, docs/results.md, docs/headline.png,
                                                   docs/exercises.md (scripts/exercises.py)

README's tables live between markers such as <!-- results:chapters --> and
<!-- /results:chapters -->; `render` rewrites only what lies between them, and
tests/test_repository.py fails when they differ from what docs/results.json
gives. Nobody types a measured number into README.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOG = ROOT / "runs" / "reproduce.jsonl"
RESULTS = ROOT / "docs" / "results.json"
README = ROOT / "README.md"
RESULTS_MD = ROOT / "docs" / "results.md"

# The pictures README shows, copied from each run's folder into docs/ as <step>_<file>.
PICTURES = {
    "01": ["samples.png", "generation.gif"],
    "01_argmax": ["argmax_vs_sampling.png"],
    "02": ["samples.png", "generation.gif"],
    "02_sweep": ["fd_vs_evaluations.png"],
    "03": ["samples.png", "generation.gif"],
    "03_scale_down": ["forward_process.png"],
    "03_targets": ["estimates.png"],
    "04": ["samples.png", "generation.gif"],
    "04_guidance": ["guidance_grid.png"],
    "05": ["samples.png", "generation.gif", "training.png", "modes.png"],
    "06": ["samples.png", "generation.gif"],
    "06_latent_map": ["latent_map.png"],
    "07": ["samples.png", "generation.gif"],
    "08": ["samples.png", "generation.gif", "reconstructions.png"],
    "09": ["samples.png", "generation.gif"],
    "09_prompt_following": ["prompt_following.png"],
    "09_sketch": ["sketches.png"],
}


# %% Recording what reproduce.sh runs
def append(entry: dict) -> None:
    LOG.parent.mkdir(exist_ok=True)
    with LOG.open("a") as f:
        f.write(json.dumps(entry) + "\n")


def read_log() -> list[dict]:
    return [json.loads(line) for line in LOG.read_text().splitlines() if line.strip()]


def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"cpu": model, "cores": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
            "torch": torch.__version__, "system": f"{platform.system()} {platform.release()}"}


# %% Collecting the runs into docs/results.json
def bracketing_reference(log: list[dict], i: int) -> float | None:
    """The machine's speed around log entry i: the mean of the reference step measured last
    before it and first after it. A step re-run later is divided by its own sitting's figure."""
    before = [e["reference"] for e in log[:i] if "reference" in e][-1:]
    after = [e["reference"] for e in log[i + 1:] if "reference" in e][:1]
    return statistics.mean(before + after) if before + after else None


def collect() -> dict:
    log = read_log()
    refs = [e["reference"] for e in log if "reference" in e]
    steps = {}
    for i, e in enumerate(log):
        if "name" not in e:
            continue
        metrics_path = ROOT / e["out"] / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        reference = bracketing_reference(log, i)
        steps[e["name"]] = {"command": e["command"], "out": e["out"], "seconds": e["seconds"],
                            "reference_steps": e["seconds"] / reference if reference else None,
                            "finished": e["finished"], "metrics": metrics}
        for picture in PICTURES.get(e["name"], []):
            if (ROOT / e["out"] / picture).exists():
                shutil.copyfile(ROOT / e["out"] / picture, ROOT / "docs" / f"{e['name']}_{picture}")
    dates = [e["date"] for e in log if "date" in e]
    results = {"machine": machine(), "date": dates[0] if dates else None,
               "last_date": dates[-1] if dates else None,
               "reference_step_seconds": statistics.median(refs) if refs else None,
               "reference_measurements": refs,
               "total_seconds": sum(s["seconds"] for s in steps.values()), "steps": steps,
               "derived": derived(steps)}
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    return results


def derived(steps: dict) -> dict:
    """Numbers that need a run's files, not just its metrics: computed once, here."""
    out = {}
    if "01" in steps and (ROOT / steps["01"]["out"] / "samples.npz").exists():
        sys.path.insert(0, str(ROOT))
        import numpy as np

        import common
        import judge

        n = steps.get("02_sweep", {}).get("metrics", {}).get("n", 500)  # 02's sweep's N
        x = np.load(ROOT / steps["01"]["out"] / "samples.npz")["x"][:n]
        r = judge.Judge.load(common.load_data("mnist5k")).evaluate(x)
        out["01_at_02s_n"] = {k: r[k] for k in ("n", "fd", "fd_floor", "fd_ratio")}
    return out


# %% Rendering: README's blocks and docs/results.md
def fmt(x, digits: int = 3) -> str:
    """A measured number, rounded for reading: 3 significant figures, thousands separated."""
    if x is None:
        return "n/a"
    if isinstance(x, int) or (isinstance(x, float) and x >= 100):
        return f"{round(x):,}"
    return f"{x:.{digits}g}"


def minutes(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def blocks(res: dict) -> dict[str, str]:
    """Every generated block of README, by marker name."""
    from readme_blocks import chapter_table, claims_table, quick_look  # noqa: E402

    return {"quick": quick_look(res), "chapters": chapter_table(res), "claims": claims_table(res)}


def replace_blocks(text: str, new: dict[str, str]) -> str:
    for name, body in new.items():
        pattern = re.compile(rf"(<!-- results:{name} -->\n).*?(<!-- /results:{name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- results:{name} --> block")
        text = pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)
    return text


def results_md(res: dict) -> str:
    from readme_blocks import results_page  # noqa: E402

    return results_page(res)


def render(res: dict | None = None) -> None:
    res = res or json.loads(RESULTS.read_text())
    README.write_text(replace_blocks(README.read_text(), blocks(res)))
    RESULTS_MD.write_text(results_md(res))
    from readme_blocks import headline_figure  # noqa: E402

    headline_figure(res, ROOT / "docs" / "headline.png")
    from exercises import EXERCISES_MD, page  # noqa: E402

    EXERCISES_MD.write_text(page(res))
    print(f"wrote README.md's blocks, {RESULTS_MD.name}, headline.png and {EXERCISES_MD.name} "
          f"from {RESULTS.name}")


def main(argv: list[str]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    what = argv[0] if argv else ""
    if what == "reference":
        from reference_step import reference_step_seconds

        # 15 repeats, not the script's 5: one short sitting varies by 10-20% from the next.
        append({"reference": reference_step_seconds(repeats=15),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    elif what == "record":
        name, out, start, end, sep, *command = argv[1:]
        assert sep == "--", "usage: record NAME OUT START END -- COMMAND..."
        append({"name": name, "out": out, "seconds": float(end) - float(start),
                "command": " ".join(command),
                "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    elif what == "collect":
        collect()
    elif what == "render":
        render()
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

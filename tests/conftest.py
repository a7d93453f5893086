"""Shared test set-up: a cache folder of the test run's own, and the judge loaded once."""
import os
import shutil
from pathlib import Path

# The judge is trained once per cache folder (about 20 s on two cores). Tests use a
# folder inside the repository's ignored runs/ so they never touch the user's cache,
# and so a second local run reuses it; CI starts from a clean clone and trains it once.
os.environ.setdefault(
    "GENCOURSE_CACHE", str(Path(__file__).resolve().parent.parent / "runs" / ".test-cache")
)
# A judge the user's own runs already trained (python 03_ddpm.py, as README's Start does
# first) is the same judge, trained by the same seed on the same digits: copied, not
# retrained, it spares the suite half a minute. The user's cache is only read.
for _judge in (Path.home() / ".cache" / "gencourse").glob("judge-v*.pt"):
    _mine = Path(os.environ["GENCOURSE_CACHE"]) / _judge.name
    if not _mine.exists():
        _mine.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_judge, _mine)
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

import common  # noqa: E402
import judge as judge_module  # noqa: E402

# On a developer's machine the property tests draw new examples every run, to find new
# failures; on CI (CI set) they draw the same ones, so a merge never fails by chance.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def data():
    return common.load_data("mnist5k")


@pytest.fixture(scope="session")
def judge(data):
    return judge_module.Judge.load(data)


@pytest.fixture
def quick_judge(monkeypatch, tmp_path):
    """Judges of 60 steps, in a cache of the test's own: enough to fit images with nothing to
    learn in them (noise), and half a minute shorter than the real one's training."""
    monkeypatch.setattr(judge_module.train_judge, "__defaults__", (60, 0))
    monkeypatch.setattr(common, "CACHE_DIR", tmp_path / "cache")

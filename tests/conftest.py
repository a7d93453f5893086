"""Shared test set-up: a cache folder of the test run's own, and the judge loaded once."""
import os
from pathlib import Path

# The judge is trained once per cache folder (about 20 s on two cores). Tests use a
# folder inside the repository's ignored runs/ so they never touch the user's cache,
# and so a second local run reuses it; CI starts from a clean clone and trains it once.
os.environ.setdefault(
    "GENCOURSE_CACHE", str(Path(__file__).resolve().parent.parent / "runs" / ".test-cache")
)
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

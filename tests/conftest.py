import os
import sys

import pytest
import torch

# Test helpers (fixtures, workers) live beside the tests; the repository root is never put on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def pytest_addoption(parser):
    parser.addoption("--shard", default=None, metavar="K/N",
                     help="run only the K-th of N interleaved parts of the collected tests (shards.py)")


def pytest_collection_modifyitems(config, items):
    spec = config.getoption("--shard")
    if spec:
        import shards

        try:
            kept, left_out = shards.split(items, spec)
        except ValueError as err:
            raise pytest.UsageError(str(err)) from None
        items[:] = kept
        config.hook.pytest_deselected(items=left_out)
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
    # The files whose workers run for minutes under the interpreter: in one pytest process they go last, so that the
    # other tests run beside the workers started in the background (pytest_collection_finish); split over several
    # processes (`make test`: pytest-xdist, a file per process at a time) they go first, so that each runs beside
    # the other processes' files instead of being the last to end.
    items.sort(key=lambda item: (item.path.name in BACKGROUND_WORKERS) != in_xdist(config))  # stable: file order kept


# Test files whose module fixture `interpreted` runs their worker for minutes under the Triton interpreter: the
# worker starts in the background once the suite is collected, when a test that uses the fixture will run
# (interpreter_worker.start), and the files' tests run after all others (pytest_collection_modifyitems).
BACKGROUND_WORKERS = ("test_triton_interpret.py", "test_decode_overhead.py", "test_key_sums.py")


def in_xdist(config) -> bool:
    """This process is one of pytest-xdist's workers (each collects every test, and runs the files given to it)."""
    return hasattr(config, "workerinput")


def pytest_collection_finish(session):
    from interpreter_worker import start

    if in_xdist(session.config):  # every xdist worker collects every file: a file's worker runs where its tests run
        return
    files = {str(item.path) for item in session.items if item.path.name in BACKGROUND_WORKERS
             and "interpreted" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("skip")}
    for path in sorted(files):
        start(path)


def pytest_sessionfinish(session):
    from interpreter_worker import stop_all

    stop_all()


# The GPU tests draw fresh random inputs on every run (tests/test_triton_gpu.py); the run's seed is printed in the
# header, and setting this variable to it draws the same inputs again.
SEED_VARIABLE = "SLKERNELS_TEST_SEED"


def pytest_report_header(config):
    return f"random inputs: {SEED_VARIABLE}={os.environ[SEED_VARIABLE]} draws this run's again"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed GPU test's report names the run's seed (quiet runs print no header)."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "gpu" in item.keywords:
        report.sections.append(("random inputs", f"{SEED_VARIABLE}={os.environ[SEED_VARIABLE]} draws them again"))


def pytest_configure(config):
    """Every temporary file of the run (the code's, torch.distributed's, subprocesses') goes into one folder
    that is removed at the end, so the suite leaves nothing in the system temp directory."""
    import random
    import tempfile

    os.environ.setdefault(SEED_VARIABLE, str(random.SystemRandom().randrange(2**31)))
    if in_xdist(config):  # one process per core: torch's own threads would only contend for it
        torch.set_num_threads(1)
    root = tempfile.mkdtemp(prefix="slconvert-tests-")
    config._slconvert_tmp = (root, os.environ.get("TMPDIR"), tempfile.tempdir)
    os.environ["TMPDIR"] = root
    tempfile.tempdir = root


def pytest_unconfigure(config):
    import shutil
    import tempfile

    saved = getattr(config, "_slconvert_tmp", None)
    if saved is None:
        return
    root, old_env, old_tempdir = saved
    tempfile.tempdir = old_tempdir
    if old_env is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = old_env
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def drawn_figures(monkeypatch):
    """The figures `slconvert.evaluation.plots` draws, kept open (its `plt.close` appends them here instead), so a test
    can read their axes after the PNG is written."""
    from slconvert.evaluation import plots

    kept = []
    monkeypatch.setattr(plots.plt, "close", kept.append)
    return kept

"""Test set-up shared by every test file.

Prefect reads its settings when first imported, so its state is pointed at a
private temporary folder here, before any test module imports it: tests never touch
~/.prefect nor a `make run` that may be up on this machine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="kiroku-test-prefect-"))
os.environ["PREFECT_HOME"] = str(_PREFECT_HOME)
os.environ.pop("PREFECT_API_URL", None)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["OMP_THREAD_LIMIT"] = "1"
# Prefect's temporary server may take longer than its 20 s default to start on a loaded 2-core machine
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# never the data folder recorded in the venv by `make install`: tests use their own
os.environ["KIROKU_HOME_RECORD"] = str(_PREFECT_HOME / "no-kiroku-home")
for _var in ("KIROKU_HOME", "KIROKU_INBOX", "KIROKU_CONFIG", "KIROKU_S3_ENDPOINT_URL", "KIROKU_CATALOG_URL"):
    os.environ.pop(_var, None)

import pytest  # noqa: E402

from tests.services_fixtures import *  # noqa: E402,F401,F403 - the real SeaweedFS fixtures
from tests.e2e_fixtures import *  # noqa: E402,F401,F403

SHARED = Path(__file__).resolve().parents[2] / "shared"


def pytest_sessionfinish(session, exitstatus):  # noqa: ANN001
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared (samples and peer inputs): present for the developers and CI, absent on a user's clone."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present (it is not part of a user's clone)")
    return SHARED

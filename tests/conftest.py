"""Test-wide guards, set before any test module imports Prefect.

A Prefect client with no API URL would start a throwaway server and write to ~/.prefect; in the
tests every client must talk to the session's real server, so a missing URL has to fail loudly,
and nothing may touch the developer's own Prefect home.
"""

import os
import tempfile

os.environ["PREFECT_SERVER_EPHEMERAL_ENABLED"] = "false"
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="driftloop-test-prefect-"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"

# One BentoML store for the whole test process: BentoML reads BENTOML_HOME once. Each test
# keeps its own registry database (under its DRIFTLOOP_HOME), so tests do not see each other's
# model stages.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="driftloop-test-bentoml-")
os.environ["DRIFTLOOP_STORAGE__BENTOML_HOME"] = os.environ["BENTOML_HOME"]
os.environ["BENTOML_DO_NOT_TRACK"] = "true"

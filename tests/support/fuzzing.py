"""Shared settings of the fuzz tests (tests/unit/test_fuzz.py, tests/e2e/test_fuzz_inputs.py).

10,000 examples per target; EDGE_AGENT_FUZZ_EXAMPLES sets another number. No example
database: every run is stateless. The targets are split over two files so that the
suite's workers can run them side by side.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("EDGE_AGENT_FUZZ_EXAMPLES", "10000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.function_scoped_fixture],
    database=None,
    derandomize=False,
    print_blob=False,
)

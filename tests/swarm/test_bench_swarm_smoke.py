"""The swarm's benchmarks still run: each once, small (`--smoke`), on the test swarm, in
their turn among the swarm tests (they pause its nodes), printing their tables
(tests/e2e/test_bench_smoke.py smokes the others)."""

from __future__ import annotations

import os

import pytest

from bench_helpers import run_smoke
from swarm_helpers import SWARM_ID, Swarm

pytestmark = [pytest.mark.swarm, pytest.mark.alongside]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", ["bench_cluster.py", "bench_drain.py"])
def test_the_swarm_benchmark_runs_and_prints_its_table(
    name: str, swarm: Swarm, image_on_manager: str
) -> None:
    run_smoke(name, {**os.environ, "OCC_SWARM_ID": str(SWARM_ID)})

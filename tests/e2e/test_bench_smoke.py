"""Every benchmark in bench/ still runs: each once, small (`--smoke`), printing its table.

A benchmark that nothing runs rots unnoticed (one went on copying a password file out of
the container long after only its hash went in), and the figures in docs/benchmarks.md
must stay reproducible from a checkout. The smokes measure nothing worth keeping: they
write no table, and a loaded machine may miss every target.
"""

from __future__ import annotations

import os

import pytest

from bench_helpers import BENCH, TABLES, run_smoke

# The raw `tar` it compares with reads the engine's volume folders; the fresh machine is a
# second engine in network namespaces of its own.
NEEDS_ROOT = {"bench_backup.py", "bench_fresh.py"}
# Those that run on the test swarm, pausing its nodes: smoked in their turn among the swarm
# tests (tests/swarm/test_bench_swarm_smoke.py), never beside them.
NEEDS_SWARM = {"bench_cluster.py", "bench_drain.py"}


def test_every_benchmark_has_its_smoke() -> None:
    assert sorted(path.name for path in BENCH.glob("bench_*.py")) == sorted(TABLES)
    for name in TABLES:
        assert "--smoke" in (BENCH / name).read_text(), name


@pytest.mark.e2e
@pytest.mark.parametrize("name", sorted(set(TABLES) - NEEDS_SWARM))
def test_the_benchmark_runs_and_prints_its_table(name: str, sandbox_image: str) -> None:
    if name in NEEDS_ROOT and os.geteuid() != 0:
        pytest.skip(f"{name} needs root")
    run_smoke(name)

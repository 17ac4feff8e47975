"""What the single user's sign-in records cost the login service per request, against the
same guard without a state folder, in the same run.

    .venv/bin/python bench/bench_edge_records.py [--runs N]
    .venv/bin/python bench/bench_edge_records.py --smoke   (one short run: it still works)

In process, no engine: `Guard.session_valid` (asked for every request a browser sends)
and the second-factor question asked for every request with Basic credentials. Floor: a
guard with no state folder (sessions in memory, no records). Measured: a guard with one,
which looks at its sessions file's identity before every answer (so that a session ended
by `occ auth sessions --revoke` is refused at once) and asks its records whether the user
has a second factor.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

EDGE = Path(__file__).resolve().parents[1] / "src/opencode_cloud/sandbox/edge.py"
TARGET_US = 50.0  # added per request, at most


def load_edge() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_edge_module", EDGE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def per_call_us(call: Callable[[], object], count: int) -> float:
    began = time.perf_counter()
    for _ in range(count):
        call()
    return (time.perf_counter() - began) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    runs, calls = (1, 200) if args.smoke else (args.runs, args.calls)
    edge = load_edge()
    import bcrypt

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        hash_file = root / "password.bcrypt"
        hash_file.write_bytes(bcrypt.hashpw(b"pw", bcrypt.gensalt(4)))
        floor = edge.Guard(hash_file, "opencode", None)
        kept = edge.Guard(hash_file, "opencode", root / "state")
        tokens = {}
        for name, guard in (("floor", floor), ("kept", kept)):
            tokens[name] = guard.sign_in(guard._generation_locked(), "", "192.0.2.1", "bench")[0]
        rows: dict[str, list[float]] = {"session floor": [], "session kept": [], "second": []}
        for _ in range(runs):
            rows["session floor"].append(
                per_call_us(lambda: floor.session_valid(tokens["floor"]), calls)
            )
            rows["session kept"].append(
                per_call_us(lambda: kept.session_valid(tokens["kept"]), calls)
            )
            rows["second"].append(per_call_us(lambda: kept.second.enrolled("owner"), calls))
        kept.records.close()
    floor_us = statistics.median(rows["session floor"])
    kept_us = statistics.median(rows["session kept"])
    second_us = statistics.median(rows["second"])
    added = kept_us - floor_us
    print(f"{runs} runs of {calls} calls each; medians, microseconds per request\n")
    print("| What | Floor, same run | Measured | Added | Target |")
    print("|---|---|---|---|---|")
    print(
        f"| a browser's request (session cookie) | {floor_us:.1f} µs (no state folder) "
        f"| {kept_us:.1f} µs | {added:+.1f} µs | ≤ {TARGET_US:g} µs added |"
    )
    print(
        f"| a script's request (Basic): second factor? | 0 (not asked) | {second_us:.1f} µs "
        f"| {second_us:+.1f} µs | ≤ {TARGET_US:g} µs added |"
    )
    if not args.smoke and max(added, second_us) > TARGET_US:
        raise SystemExit("over the target")


if __name__ == "__main__":
    main()

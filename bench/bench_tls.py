"""What the certificate costs a start: making it, and checking it, with the `openssl`
command (what the tool uses) against the `cryptography` package; prints a markdown table.

    .venv/bin/python bench/bench_tls.py [--runs N] [--out docs/benchmarks.md]
        [--start-against OTHER/src]

Figures are medians of N runs: wall time, and CPU time (which other work on the machine
moves far less). Making certificates is timed in this process once what it imports is
loaded (a start that makes them has loaded the configuration anyway); imports and reads
in fresh processes, above the floor of `python -c pass`. The
`cryptography` rows need the package (`pip install cryptography`); without it they are
left out. Nothing here needs the engine, but `--start-against`: it also times `occ start`
on a running self-signed instance (the fast path, with the certificate check) with this
tree's code and with another tree's (say, a checkout from before a change), in alternating
runs; it needs the engine and the sandbox image.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from instances import remove_instance  # bench/, the script's own folder

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
ENV_PATH = str(ROOT / "src")
ENV = {"PYTHONPATH": ENV_PATH, "PATH": os.environ.get("PATH", os.defpath)}

MAKE_WITH_CRYPTOGRAPHY = """
import datetime, ipaddress
from pathlib import Path
from cryptography import x509
from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

out = Path(OUT)
now = datetime.datetime.now(datetime.UTC)
names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
         x509.IPAddress(ipaddress.ip_address("::1")), x509.DNSName("box.lan")]
subtrees = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_network("127.0.0.1/32")),
            x509.IPAddress(ipaddress.ip_network("::1/128")), x509.DNSName("box.lan")]
ca_key = ec.generate_private_key(ec.SECP256R1())
ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
      .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
      .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1095))
      .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
      .add_extension(x509.NameConstraints(subtrees, None), critical=True)
      .sign(ca_key, hashes.SHA256()))
key = ec.generate_private_key(ec.SECP256R1())
cert = (x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=820))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256()))
pem = serialization.Encoding.PEM
(out / "server.pem").write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
(out / "server.key").write_bytes(key.private_bytes(
    pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
"""

IMPORT_CRYPTOGRAPHY = (
    "from cryptography import x509; "
    "from cryptography.hazmat.primitives import hashes, serialization; "
    "from cryptography.hazmat.primitives.asymmetric import ec"
)
READ_WITH_CRYPTOGRAPHY = (
    "import sys; from cryptography import x509; "
    "x509.load_pem_x509_certificate(open(sys.argv[1], 'rb').read()).not_valid_after_utc"
)


def median_ms(command: list[str], runs: int, fresh: Path | None = None) -> tuple[float, float]:
    """Median wall time and CPU time (user and system, the children's included) of
    `command`, in ms; with `fresh`, that folder is emptied before each run. CPU time moves
    far less than wall time with other work on the machine."""
    walls, cpus = [], []
    for _ in range(runs):
        if fresh is not None:
            shutil.rmtree(fresh, ignore_errors=True)
            fresh.mkdir(parents=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=ENV)
        walls.append(time.perf_counter() - began)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(walls) * 1000, statistics.median(cpus) * 1000


NAMES = ["localhost", "127.0.0.1", "::1", "box.lan"]


def making(make: Callable[[], object], folder: Path, runs: int) -> tuple[str, str]:
    """Median wall and CPU time (this process and its children) of `make` in this process,
    everything it imports loaded before: what a start that must make them pays on top of
    what it loads anyway (the configuration store among it). `folder` is emptied first."""
    walls, cpus = [], []
    for attempt in range(runs + 1):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        cpu, began = _cpu_seconds(), time.perf_counter()
        make()
        wall, cpu = time.perf_counter() - began, _cpu_seconds() - cpu
        if attempt:  # the first one loads what it needs
            walls.append(wall)
            cpus.append(cpu)
    return f"{statistics.median(walls) * 1000:.1f} ms", f"{statistics.median(cpus) * 1000:.1f} ms"


def _cpu_seconds() -> float:
    """User and system time of this process and of its finished children."""
    mine, children = (
        resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime


def start_rows(other: Path, runs: int) -> list[tuple[str, str, str]]:
    """`occ start` on a running self-signed instance (fast path), this tree against
    `other`, alternating; the instance is removed at the end."""
    import json
    import socket

    instance = f"bench-tls-{os.getpid()}"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as config:
        base = {**os.environ, "OCC_CONFIG_DIR": config, "OCC_INSTANCE": instance}

        def occ(*command: str) -> list[str]:
            return [PYTHON, "-m", "opencode_cloud", *command]

        def env(tree: str) -> dict[str, str]:
            return {**base, "PYTHONPATH": tree}

        mine = ENV_PATH
        for command in (
            ["config", "set", "port", str(port)],
            ["config", "set", "tls", "self-signed"],
            ["config", "env", "set", "OPENCODE_DISABLE_MODELS_FETCH=1"],
            ["start"],
        ):
            subprocess.run(occ(*command), env=env(mine), check=True, capture_output=True)
        try:
            timed: dict[str, list[tuple[float, float]]] = {mine: [], str(other): []}
            for attempt in range(runs):
                order = [mine, str(other)] if attempt % 2 else [str(other), mine]
                for tree in order:
                    timed[tree].append(_one(occ("start"), env(tree)))
            done = subprocess.run(
                occ("--json", "start"), env=env(mine), check=True, capture_output=True
            )
            assert json.loads(done.stdout)["already_running"] is True
        finally:
            remove_instance(instance)
    rows = []
    for tree, label in ((mine, "this tree"), (str(other), "the other tree")):
        wall = statistics.median(w for w, _ in timed[tree]) * 1000
        cpu = statistics.median(c for _, c in timed[tree]) * 1000
        rows.append((f"`occ start`, running self-signed instance: {label}", f"{wall:.0f} ms",
                     f"{cpu:.0f} ms"))  # fmt: skip
    return rows


def _one(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def in_process_ms(call: str, namespace: dict[str, object], runs: int = 2000) -> float:
    """The best of 5 rounds of `runs` calls, per call."""
    import timeit

    return min(timeit.repeat(call, number=runs, repeat=5, globals=namespace)) / runs * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--out", type=Path, help="put the table into this markdown file")
    parser.add_argument("--start-against", type=Path, help="another tree's src folder")
    parser.add_argument(
        "--smoke", action="store_true", help="one short run to check that it works; writes nothing"
    )
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.out = 1, None
    sys.path.insert(0, ENV_PATH)
    from opencode_cloud.access import tls
    from opencode_cloud.config.paths import InstancePaths

    have_cryptography = importlib.util.find_spec("cryptography") is not None
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        instance = InstancePaths(work / "instance")
        material = tls.self_signed(instance, ["localhost", "127.0.0.1"])
        tls.remember_served(instance, material, "bench")
        served = str(tls.served_file(instance))
        floor, floor_cpu = median_ms([PYTHON, "-c", "pass"], args.runs)
        rows.append(("`python -c pass`: the floor", f"{floor:.0f} ms", f"{floor_cpu:.0f} ms"))

        def row(what: str, command: list[str], fresh: Path | None = None) -> None:
            wall, cpu = median_ms(command, args.runs, fresh)
            if command[0] == PYTHON:
                rows.append((what, f"+{wall - floor:.0f} ms", f"+{cpu - floor_cpu:.0f} ms"))
            else:
                rows.append((what, f"{wall:.0f} ms", f"{cpu:.0f} ms"))

        made = work / "made"
        wall, cpu = making(lambda: tls.self_signed(InstancePaths(made), NAMES), made, args.runs)
        rows.append(("make CA and server certificate: the tool (3 `openssl` runs)", wall, cpu))
        if have_cryptography:
            code = compile(MAKE_WITH_CRYPTOGRAPHY, "make", "exec")
            wall, cpu = making(lambda: exec(code, {"OUT": str(made)}), made, args.runs)
            rows.append(("make CA and server certificate: `cryptography`", wall, cpu))
            row("import `cryptography` (x509, ec, hashes)", [PYTHON, "-c", IMPORT_CRYPTOGRAPHY])
            row(
                "read a certificate's end: `cryptography`",
                [PYTHON, "-c", READ_WITH_CRYPTOGRAPHY, served],
            )
        row("read a certificate's end: `openssl x509 -enddate`", ["openssl", "x509", "-noout",
            "-enddate", "-in", served])  # fmt: skip
        row(
            "import `opencode_cloud.access.tls`", [PYTHON, "-c", "import opencode_cloud.access.tls"]
        )
        namespace = {"tls": tls, "pem": Path(served).read_bytes(), "instance": instance}
        calls = 10 if args.smoke else 2000
        reader = in_process_ms("tls.read_pem(pem)", namespace, calls)
        due = in_process_ms("tls.handover_due(instance, 'self-signed', 'bench')", namespace, calls)
        rows.append(("the DER reader, a chain of 2, in the process", f"{reader:.2f} ms", ""))
        rows.append(("`tls.handover_due`, in the process", f"{due:.2f} ms", ""))
    if args.start_against:
        rows += start_rows(args.start_against.resolve(), args.runs)
    lines = ["| What | Wall time | CPU time |", "|---|---|---|"]
    lines += [f"| {what} | {wall} | {cpu} |" for what, wall, cpu in rows]
    table = "\n".join(lines)
    against = " --start-against OTHER/src" if args.start_against else ""
    how = (
        f"`.venv/bin/python bench/bench_tls.py --runs {args.runs}{against}` ({sys.platform}, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load average "
        f"{os.getloadavg()[0]:.1f})"
    )
    print(f"Measured with {how}.\n\n{table}")
    if args.out:
        sys.path.insert(0, str(ROOT / "bench"))
        from report import replace_section

        replace_section(args.out, "tls", how, table, "## The TLS certificate on the start path")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A fresh machine, from nothing to a signed-in answer, measured; prints a markdown table.

    sudo .venv/bin/python bench/bench_fresh.py [--out docs/benchmarks.md]
    sudo .venv/bin/python bench/bench_fresh.py --smoke   (the plumbing only: see below)

This machine already has an engine and images, so the parts of `scripts/up.sh` are timed
against a second Docker engine with an EMPTY data root: its own network namespace (with
NAT to the internet, as a fresh machine has), its own mount namespace and `/run` (so its
own containerd), its socket and data under /tmp/occfresh-*. Every step of `scripts/up.sh`
then runs inside that namespace against it:

- the engine's start (dockerd to its first answer);
- the base image: `scripts/base-image.sh` (no registry answers here: debootstrap);
- the sandbox image: `scripts/sandbox-image.sh` (`occ build`, nothing cached);
- `occ start`, then a signed-in answer: `GET /session` with the password.

The engine's install (`apt-get install docker.io`, as `scripts/engine.sh` runs it) is
timed apart, in a throw-away Debian root made with debootstrap: its download, then its
install. The tool's own install (`pip install -e .[test]` into a new virtualenv, no pip
cache) overlaps with the engine and the base image in `scripts/up.sh`, and is timed apart
too. Baselines, same run, same engine: the same build context built by hand (`docker build
--no-cache`), and a bare `debootstrap` by hand.

`--smoke` takes the images from this machine's engine (`docker save | docker load`,
nothing built), installs nothing, and checks that the rest works: the namespace, the
engine, `occ start` against it and the signed-in answer. Needs root.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BASE_IMAGE = "debian:bookworm-slim"
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
CLAIM_SECONDS = 120.0
PARTS = {
    "engine": "first (the engine's install)",
    "overlap": "at the same time as the engine's install",
    "path": "after it, in turn",
    "baseline": "baseline",
    "check": "the same steps, run by the script",
    "": "-",
}


def sh(*cmd: str, stdout: int | None = None) -> None:
    subprocess.run(list(cmd), check=True, stdout=stdout)


def quiet(*cmd: str) -> None:
    subprocess.run(list(cmd), check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def timed(action: Callable[[], object]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


class FreshEngine:
    """A Docker engine with an empty data root in network and mount namespaces of its own,
    NATed to the internet through this machine. Everything it makes is under `work`."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.name = f"occfresh-{tag}"
        self.veth = f"ofr{tag}"  # interface names: 15 characters at most
        self.net = 100 + secrets.randbelow(100)  # 10.214.NET.0/24
        self.work = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir="/tmp"))
        self.socket = self.work / "docker.sock"
        self.pid: int | None = None

    @property
    def host_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "OCC_CONFIG_DIR": str(self.work / "occ"),
            "OCC_INSTANCE": "fresh",
            "NO_COLOR": "1",
        }

    def inside(self, *cmd: str) -> list[str]:
        """`cmd` in the namespace's network (this machine's files and processes)."""
        return ["nsenter", f"--net=/run/netns/{self.name}", "--", *cmd]

    def run(
        self, *cmd: str, capture: bool = False, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`cmd` in the namespace, as the client of the fresh engine (DOCKER_HOST) with a
        configuration folder of its own."""
        return subprocess.run(
            self.inside(*cmd),
            env={**self.host_env, **(env or {})},
            check=True,
            text=True,
            stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def _rule(self, action: str, table: str, chain: str, *rule: str) -> None:
        comment = ["-m", "comment", "--comment", self.name]
        cmd = ["iptables", "-w", "10", "-t", table, action, chain]
        if action == "-I":
            cmd.append("1")
        subprocess.run([*cmd, *rule, *comment], check=action == "-I", capture_output=True)

    def _rules(self, action: str) -> None:
        subnet = f"10.214.{self.net}.0/24"
        out = ["!", "-o", self.veth]
        self._rule(action, "nat", "POSTROUTING", "-s", subnet, *out, "-j", "MASQUERADE")
        self._rule(action, "filter", "FORWARD", "-i", self.veth, "-j", "ACCEPT")
        self._rule(action, "filter", "FORWARD", "-o", self.veth, "-j", "ACCEPT")

    def network(self) -> None:
        host, inner, peer = f"10.214.{self.net}.1", f"10.214.{self.net}.2", f"{self.veth}p"
        sh("ip", "netns", "add", self.name)
        sh("ip", "link", "add", self.veth, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", peer, "netns", self.name)
        sh("ip", "addr", "add", f"{host}/24", "dev", self.veth)
        sh("ip", "link", "set", self.veth, "up")
        sh("ip", "-n", self.name, "link", "set", "lo", "up")
        sh("ip", "-n", self.name, "addr", "add", f"{inner}/24", "dev", peer)
        sh("ip", "-n", self.name, "link", "set", peer, "up")
        sh("ip", "-n", self.name, "route", "add", "default", "via", host)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1")
        self._rules("-I")

    def start(self) -> float:
        """Start dockerd; the seconds to its first answer."""
        config = {
            "data-root": str(self.work / "docker"),
            "exec-root": str(self.work / "exec"),
            "pidfile": str(self.work / "dockerd.pid"),
            "hosts": [f"unix://{self.socket}"],
            "containerd-namespace": self.name,
            "containerd-plugins-namespace": f"{self.name}-plugins",
            "exec-opts": ["native.cgroupdriver=cgroupfs"],
            "cgroup-parent": f"/{self.name}",
        }
        (self.work / "daemon.json").write_text(json.dumps(config))
        # A private /run (no system containerd there: dockerd starts its own), and none of
        # this machine's engine mounts (copies of them would pin its containers' layers).
        script = (
            "findmnt -rn -o TARGET | grep -E '^/(run|var/lib/docker|var/lib/containerd)(/|$)'"
            ' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done; '
            "mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run && "
            f"exec dockerd --config-file {self.work}/daemon.json"
        )
        log = open(self.work / "dockerd.log", "ab")  # noqa: SIM115 (the daemon keeps it)
        began = time.perf_counter()
        daemon = subprocess.Popen(
            self.inside("unshare", "--mount", "--propagation", "private", "sh", "-c", script),
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        self.pid = daemon.pid
        deadline = time.monotonic() + 120
        while subprocess.run(
            ["curl", "-sf", "--max-time", "2", "--unix-socket", str(self.socket), "http://d/_ping"],
            capture_output=True,
        ).returncode:
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the fresh engine did not start: see {self.work}/dockerd.log")
            time.sleep(0.1)
        return time.perf_counter() - began

    def stop(self) -> None:
        """Remove what the engine runs, stop it and every process left in its namespace,
        then the namespace, the rules and the files."""
        if self.pid is not None and self.socket.exists():
            ids = subprocess.run(
                ["docker", "ps", "-aq"], env=self.host_env, capture_output=True, text=True
            ).stdout.split()
            if ids:
                quiet("env", f"DOCKER_HOST=unix://{self.socket}", "docker", "rm", "-f", *ids)
        for pid in self._pids() if self.pid is not None else []:
            quiet("kill", "-TERM", str(pid))
        deadline = time.monotonic() + 30
        while self.pid is not None and self._pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in self._pids() if self.pid is not None else []:
            quiet("kill", "-KILL", str(pid))
        self._rules("-D")
        for cgroup in Path("/sys/fs/cgroup").glob(f"*/{self.name}"):  # its cgroup parent
            quiet("find", str(cgroup), "-depth", "-type", "d", "-exec", "rmdir", "{}", ";")
        quiet("ip", "link", "del", self.veth)
        quiet("ip", "netns", "del", self.name)
        shutil.rmtree(self.work, ignore_errors=True)

    def _pids(self) -> list[str]:
        """The processes in the namespace: all of them this benchmark's."""
        return subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True
        ).stdout.split()


@contextmanager
def fresh_engine() -> Iterator[FreshEngine]:
    engine = FreshEngine()
    try:
        engine.network()
        yield engine
    finally:
        engine.stop()


def start_and_sign_in(engine: FreshEngine, occ: str) -> None:
    """`occ start`, then the first signed-in answer."""
    engine.run(occ, "start")
    sign_in(engine)


def up_and_sign_in(engine: FreshEngine) -> None:
    """`scripts/up.sh` as a whole (its output kept in the engine's folder), then the first
    signed-in answer."""
    with (engine.work / "up.log").open("w") as log:
        subprocess.run(
            engine.inside("bash", str(ROOT / "scripts/up.sh")),
            env=engine.host_env, check=True, stdout=log, stderr=log,
        )  # fmt: skip
    sign_in(engine)


def sign_in(engine: FreshEngine) -> None:
    """`GET /session` with the password `occ` shows."""
    creds = json.loads(engine.run(str(BIN / "occ"), "--json", "auth", "show", capture=True).stdout)
    token = base64.b64encode(f"{creds['username']}:{creds['password']}".encode()).decode()
    script = (
        "import sys, urllib.request\n"
        "r = urllib.request.Request(sys.argv[1] + '/session')\n"
        "r.add_header('Authorization', sys.argv[2])\n"
        "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
        "assert opener.open(r, timeout=30).status == 200\n"
    )
    engine.run(sys.executable, "-c", script, creds["url"], f"Basic {token}")


def copy_images(engine: FreshEngine, images: tuple[str, ...]) -> None:
    """Images of this machine's engine, loaded into the fresh one (for --smoke)."""
    save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
    subprocess.run(
        ["docker", "load", "-q"], stdin=save.stdout, env=engine.host_env, check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    assert save.wait() == 0, f"docker save {' '.join(images)} failed"


def context_tar(path: Path) -> None:
    """The build context `occ build` sends, with the host's CA bundle, as a file."""
    sys.path.insert(0, str(ROOT / "src"))
    from opencode_cloud.docker.image import build_context

    bundle = os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    path.write_bytes(build_context([bundle] if Path(bundle).is_file() else []))


def build_by_hand(engine: FreshEngine) -> None:
    """The baseline: `docker build --no-cache` of the context `occ build` sends."""
    tar = engine.work / "context.tar"
    context_tar(tar)
    with tar.open("rb") as context:
        subprocess.run(
            engine.inside("docker", "build", "--no-cache", "-q", "-t", "occfresh-by-hand:1", "-"),
            stdin=context,
            env=engine.host_env,
            check=True,
            stdout=subprocess.DEVNULL,
        )


def debootstrap(root: Path) -> None:
    """A minimal Debian root: what base-image.sh makes, and a machine to install into."""
    sh("debootstrap", "--variant=minbase", "bookworm", str(root), MIRROR, stdout=subprocess.DEVNULL)


def engine_apt(root: Path) -> Callable[..., object]:
    """apt-get in the Debian root `root`, as scripts/engine.sh runs it (recommended
    packages included); services are not started there (no init system runs)."""
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    apt = ["chroot", str(root), "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", "-y"]
    return lambda *words: sh(*apt, *words, stdout=subprocess.DEVNULL)


def tool_install(work: Path) -> None:
    """`scripts/up.sh`'s install of the tool: a new virtualenv, `pip install -e .[test]`,
    no pip cache."""
    venv = work / "venv"
    sh("python3", "-m", "venv", str(venv))
    sh(
        str(venv / "bin/pip"), "install", "-q", "--no-cache-dir", "--disable-pip-version-check",
        "-e", f"{ROOT}[test]", stdout=subprocess.DEVNULL,
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    parser.add_argument("--smoke", action="store_true", help="the plumbing only, nothing written")
    args = parser.parse_args()
    if args.smoke and args.out:
        parser.error("--smoke measures nothing worth keeping: it writes no table")
    if os.geteuid() != 0:
        parser.error("needs root: a network namespace, NAT and a second dockerd")
    occ = str(BIN / "occ")
    rows: list[tuple[str, float, str]] = []

    def step(what: str, part: str, action: Callable[[], object]) -> None:
        rows.append((what, timed(action), part))
        print(f"{rows[-1][1]:7.1f} s  {what}", file=sys.stderr)

    # Parts: "overlap" runs beside the engine's install in scripts/up.sh, "path" after it.
    with fresh_engine() as engine:
        (engine.work / "occ").mkdir()
        rootfs = engine.work / "rootfs"
        if not args.smoke:
            step(
                "Base image, its root file system (`base-image.sh --rootfs`: debootstrap)",
                "overlap",
                lambda: engine.run("bash", str(ROOT / "scripts/base-image.sh"), "--rootfs",
                                   str(rootfs)),
            )  # fmt: skip
        step("Engine start (dockerd, empty data root, to its first answer)", "path", engine.start)
        if args.smoke:
            images = (BASE_IMAGE, "opencode-cloud-sandbox:1.18.33")
            step(
                "Images copied from this machine's engine (smoke: nothing built)",
                "",
                lambda: copy_images(engine, images),
            )
        else:
            step(
                "Base image import (`scripts/base-image.sh`: a pull tried, then the import)",
                "path",
                lambda: engine.run("bash", str(ROOT / "scripts/base-image.sh"), BASE_IMAGE,
                                   env={"OCC_BASE_ROOTFS": str(rootfs)}),
            )  # fmt: skip
            step(
                "Sandbox image (`scripts/sandbox-image.sh`: `occ build`, nothing cached)",
                "path",
                lambda: engine.run("bash", str(ROOT / "scripts/sandbox-image.sh")),
            )
        engine.run(occ, "config", "set", "port", "3000")
        step(
            "`occ start` to a signed-in answer (`GET /session` with the password)",
            "path",
            lambda: start_and_sign_in(engine, occ),
        )
        if not args.smoke:
            step(
                "Baseline: the same context, `docker build --no-cache` by hand",
                "baseline",
                lambda: build_by_hand(engine),
            )
    if not args.smoke:
        # The script itself, once more from nothing: on an engine that is installed and
        # runs, it makes the base image after asking the engine (no overlap to win).
        with fresh_engine() as second:
            (second.work / "occ").mkdir()
            second.start()
            step(
                "Check: `scripts/up.sh` as a whole on an empty engine that runs, to a "
                "signed-in answer",
                "check",
                lambda: up_and_sign_in(second),
            )
        work = Path(tempfile.mkdtemp(prefix="occfresh-install-", dir="/var/tmp"))
        try:
            root = work / "debian"
            step(
                "Baseline: `debootstrap --variant=minbase` by hand",
                "baseline",
                lambda: debootstrap(root),
            )
            apt = engine_apt(root)
            step(
                "Engine install (`scripts/engine.sh`): download of docker.io and what it needs",
                "engine",
                lambda: (apt("update"), apt("install", "--download-only", "docker.io")),
            )
            step(
                "Engine install: unpacking and configuring them",
                "engine",
                lambda: apt("install", "docker.io"),
            )
            step(
                "Tool install (`pip install -e .[test]`, new virtualenv, no cache)",
                "overlap",
                lambda: tool_install(work),
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def total(*parts: str) -> float:
        return sum(seconds for _, seconds, part in rows if part in parts)

    overlapped = max([total("engine"), *(sec for _, sec, part in rows if part == "overlap")])
    path = overlapped + total("path")
    table = ["| Step | Seconds | In scripts/up.sh |", "|---|---|---|"]
    table += [f"| {what} | {seconds:.1f} | {PARTS[part]} |" for what, seconds, part in rows]
    verdict = "met" if path <= CLAIM_SECONDS else "not met"
    table.append(f"| All of it one after another | {total('engine', 'overlap', 'path'):.1f} | |")
    table.append(
        "| **Fresh machine to a signed-in answer, as scripts/up.sh runs it** "
        f"| **{path:.1f}** | target <= {CLAIM_SECONDS:.0f} s: {verdict} |"
    )
    text = "\n".join(table)
    print(text)
    if args.out:
        write_section(args.out, text)
    return 0


def write_section(path: Path, table: str) -> None:
    """Put the table into the `## A fresh machine` section of a markdown file: in place of
    the table there (the notes around it stay), or as a new section at the end."""
    heading = "## A fresh machine"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if heading in text:
        lines = text.splitlines()
        first = next(
            i
            for i, line in enumerate(lines)
            if i > lines.index(heading) and line.startswith("| Step |")
        )
        last = first
        while last + 1 < len(lines) and lines[last + 1].startswith("|"):
            last += 1
        text = "\n".join([*lines[:first], table, *lines[last + 1 :]]) + "\n"
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\nMeasured with `sudo .venv/bin/python "
        text += f"bench/bench_fresh.py`, {time.strftime('%Y-%m-%d')}.\n\n{table}\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())

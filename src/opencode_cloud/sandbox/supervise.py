"""PID 1 of the sandbox once its root phase is over: the supervisor of the three services.

The entrypoint starts opencode (as the runtime user), the login service and Caddy (as
the edge's own user), then replaces itself with this program, run as the edge's user
with one capability left, CAP_KILL, so that it can pass a stop on to opencode, whose user
it is not. No process of the container keeps root after that.

Being PID 1, it
- reaps every process that ends in the container (an orphaned child of the agent's
  included), as an init must;
- passes SIGTERM and SIGINT (`docker stop`) on to the three services, waits for them and
  exits with the code of the first one that ended;
- ends the container as soon as any of the three ends on its own (the engine's restart
  policy brings it back), stopping the other two first;
- on SIGHUP asks Caddy to load its configuration again, which re-reads the certificate
  files: the tool writes a renewed certificate into the container and sends SIGHUP, and
  the service renews without a restart.

Only Python's standard library, run as `python3 -I` (nothing from the environment or a
user's site-packages is imported).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

# Seconds the others get to end cleanly once one service has ended or a stop came.
GRACE = 8.0
CADDY = "/usr/bin/caddy"


def log(message: str) -> None:
    print(f"opencode-cloud: {message}", file=sys.stderr, flush=True)


class Supervisor:
    def __init__(self, services: dict[int, str], reload_argv: list[str]) -> None:
        self.services = dict(services)  # pid -> name, of those still running
        self.reload_argv = reload_argv
        self.exit_code: int | None = None
        self.stopping_since: float | None = None

    # -- signals --------------------------------------------------------------------

    def on_stop(self, signum: int, _frame: object) -> None:
        if self.stopping_since is None:
            self.stop_all(signal.Signals(signum))

    def on_reload(self, _signum: int, _frame: object) -> None:
        # A child of ours: reaped in the main loop like any other process.
        try:
            subprocess.Popen(self.reload_argv, stdin=subprocess.DEVNULL)
        except OSError as exc:
            log(f"cannot reload the edge: {exc}")

    def on_alarm(self, _signum: int, _frame: object) -> None:
        self.signal_all(signal.SIGKILL)

    def signal_all(self, how: signal.Signals) -> None:
        for pid in self.services:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, how)

    def stop_all(self, how: signal.Signals = signal.SIGTERM) -> None:
        self.stopping_since = time.monotonic()
        self.signal_all(how)
        # Whatever does not end within the grace period is killed.
        signal.setitimer(signal.ITIMER_REAL, GRACE)

    # -- the loop -------------------------------------------------------------------

    def collect_early_ends(self) -> None:
        """Services that ended before this program ran: the shell that started them may
        have reaped them already (then they are no child of ours any more)."""
        for pid in list(self.services):
            try:
                ended, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                ended, status = pid, 1 << 8
            if ended:
                self.ended(pid, status)

    def ended(self, pid: int, status: int) -> None:
        name = self.services.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code  # killed by a signal: 128 + its number
        if self.exit_code is None:
            self.exit_code = code
            if self.stopping_since is None:
                log(f"{name} ended (exit code {code}); stopping the others.")
                self.stop_all()

    def run(self) -> int:
        self.collect_early_ends()
        while self.services:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            if pid in self.services:
                self.ended(pid, status)
            # else: an orphan, or a reload: reaped, nothing else to do
        signal.setitimer(signal.ITIMER_REAL, 0)
        return self.exit_code or 0


def main(argv: list[str]) -> int:
    """argv: NAME=PID for each service, then `--`, then the reload command."""
    split = argv.index("--") if "--" in argv else len(argv)
    services = {}
    for entry in argv[:split]:
        name, _, pid = entry.partition("=")
        services[int(pid)] = name
    supervisor = Supervisor(services, argv[split + 1 :])
    signal.signal(signal.SIGTERM, supervisor.on_stop)
    signal.signal(signal.SIGINT, supervisor.on_stop)
    signal.signal(signal.SIGHUP, supervisor.on_reload)
    signal.signal(signal.SIGALRM, supervisor.on_alarm)
    # A service may have ended before the handlers were in place: found by the first wait.
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

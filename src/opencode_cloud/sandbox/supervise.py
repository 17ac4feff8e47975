"""PID 1 of the sandbox once its root phase is over: the supervisor of the three services.

The entrypoint starts opencode (as the runtime user), the login service and Caddy (as
the edge's own user), then replaces itself with this program, run as the edge's user
with one capability left, CAP_KILL, so that it can pass a stop on to opencode, whose user
it is not. No process of the container keeps root after that, and what this program
starts itself gets no capability (`setpriv` clears the ambient set first).

Being PID 1, it
- reaps every process that ends in the container (an orphaned child of the agent's
  included), as an init must;
- passes SIGTERM and SIGINT (`docker stop`) on to the three services, waits for them and
  exits with the code of the first one that ended;
- ends the container as soon as any of the three ends on its own (the engine's restart
  policy brings it back), stopping the other two first;
- on SIGHUP asks Caddy to load its configuration again, which re-reads the certificate
  files: the tool writes a renewed certificate into the container and sends SIGHUP, and
  the service renews without a restart;
- on SIGUSR1 starts Caddy afresh, which closes every connection through it (an open
  terminal, the event stream): the tool sends it when the password changes, so that
  nothing signed in before goes on working.

Its one argument is a JSON plan from the entrypoint: {"services": {"NAME": PID, ...},
"reload": [argv], "restart": {"NAME": [argv]}}. Only Python's standard library, run as
`python3 -I` (nothing from the environment or a user's site-packages is imported).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

# Seconds the others get to end cleanly once one service has ended or a stop came.
GRACE = 8.0
# What starts a program of ours without the supervisor's capability.
NO_CAPABILITIES = ["/usr/bin/setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--"]


def log(message: str) -> None:
    print(f"opencode-cloud: {message}", file=sys.stderr, flush=True)


def spawn(argv: list[str]) -> int | None:
    """Start `argv` without capabilities; its pid, or None when it cannot start. A child
    of ours: reaped in the main loop like any other process."""
    try:
        return subprocess.Popen([*NO_CAPABILITIES, *argv], stdin=subprocess.DEVNULL).pid
    except OSError as exc:
        log(f"cannot start {argv[0]}: {exc}")
        return None


class Supervisor:
    def __init__(
        self,
        services: dict[int, str],
        reload_argv: list[str],
        restart_argv: dict[str, list[str]],
    ) -> None:
        self.services = dict(services)  # pid -> name, of those still running
        self.reload_argv = reload_argv
        self.restart_argv = restart_argv
        self.restarting: set[int] = set()  # pids stopped on purpose, to start again
        self.exit_code: int | None = None
        self.stopping = False

    # -- signals --------------------------------------------------------------------

    def on_stop(self, signum: int, _frame: object) -> None:
        if not self.stopping:
            self.stop_all(signal.Signals(signum))

    def on_reload(self, _signum: int, _frame: object) -> None:
        spawn(self.reload_argv)

    def on_restart(self, _signum: int, _frame: object) -> None:
        for pid, name in self.services.items():
            if name in self.restart_argv and not self.stopping:
                self.restarting.add(pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)

    def on_alarm(self, _signum: int, _frame: object) -> None:
        self.signal_all(signal.SIGKILL)

    def signal_all(self, how: signal.Signals) -> None:
        for pid in self.services:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, how)

    def stop_all(self, how: signal.Signals = signal.SIGTERM) -> None:
        self.stopping = True
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
        if pid in self.restarting and not self.stopping:
            self.restarting.discard(pid)
            started = spawn(self.restart_argv[name])
            if started is not None:
                self.services[started] = name
                log(f"{name} started again: every connection through it was closed.")
                return
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code  # killed by a signal: 128 + its number
        if self.exit_code is None:
            self.exit_code = code
            if not self.stopping:
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
    plan = json.loads(argv[0])
    services = {int(pid): name for name, pid in plan["services"].items()}
    supervisor = Supervisor(services, plan["reload"], plan.get("restart", {}))
    signal.signal(signal.SIGTERM, supervisor.on_stop)
    signal.signal(signal.SIGINT, supervisor.on_stop)
    signal.signal(signal.SIGHUP, supervisor.on_reload)
    signal.signal(signal.SIGUSR1, supervisor.on_restart)
    signal.signal(signal.SIGALRM, supervisor.on_alarm)
    # A service may have ended before the handlers were in place: found by the first wait.
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

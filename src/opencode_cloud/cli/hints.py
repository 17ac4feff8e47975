"""The `Hint:` line for each error: the command that fixes it.

Errors below the command line carry data (which port, image, container, log lines); the
words that name a command or a flag are written here, in one place, so they always
match the commands that exist, and name the instance and host acted on (`occ`, from
`instance.command_prefix`). The fixes `occ doctor` shows come from here too (`Remedy`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from opencode_cloud.defaults import IMAGE_NAME
from opencode_cloud.docker import errors as engine
from opencode_cloud.docker import ssh
from opencode_cloud.errors import NotConfirmed, OpencodeCloudError

if TYPE_CHECKING:
    from opencode_cloud.doctor.checks import Remedy

START_ENGINE = (
    "Start the Docker engine: `sudo systemctl start docker` "
    "(or `scripts/engine.sh start` on machines without systemd)."
)


def hint_for(error: OpencodeCloudError | Remedy, occ: str = "occ") -> str:
    """The hint to print under `error` (its own, when it brought one), or the words of a
    doctor's `Remedy`; `occ` is the command line of the instance acted on
    (`instance.command_prefix`)."""
    if not isinstance(error, OpencodeCloudError):
        return _remedy(error, occ)
    if error.hint:
        return error.hint
    if isinstance(error, NotConfirmed):
        if error.command:
            return f"Run `{occ} {error.command} --yes` to go ahead."
        return "Run the command again with --yes to go ahead."
    if isinstance(error, (engine.ContainerExited, engine.HealthTimeout)):
        return _with_logs(error, occ)
    if isinstance(error, engine.BuildFailed):
        return _build_hint(error, occ)
    from opencode_cloud.config.errors import ConfigError, EditorFailed

    if isinstance(error, (ConfigError, EditorFailed)):
        return _config_hint(error, occ)
    from opencode_cloud.backup.errors import BackupError, ProgramFailed

    if isinstance(error, BackupError):
        return _backup_hint(error, occ)
    from opencode_cloud.doctor.engine_install import DOCKER_ENGINE_DOCS, EngineInstallFailed

    if isinstance(error, EngineInstallFailed):
        return (
            f"Install and start Docker Engine by hand ({DOCKER_ENGINE_DOCS}), then run "
            f"`{occ} setup` again; `{occ} doctor` says what it sees."
        )
    if isinstance(error, ProgramFailed):  # a restore's is inside its RestoreFailed
        return f"No file was kept and the service runs on. Fix the cause, then `{occ} backup`."
    from opencode_cloud.providers import errors as providers

    if isinstance(error, providers.ProviderError):
        return _provider_hint(error, occ)
    from opencode_cloud.kubernetes import errors as kubernetes

    if isinstance(error, kubernetes.KubernetesError):
        return _kubernetes_hint(error, occ)
    from opencode_cloud.service import errors as service
    from opencode_cloud.team import errors as team

    match error:
        case team.TeamNotEnabled():
            return f"Turn team mode on first: `{occ} team enable` (you become its first person)."
        case team.TeamAlreadyEnabled():
            return f"`{occ} team status` shows the team; `{occ} team disable` turns it off."
        case service.EdgeTooOld():
            return f"`{occ} start --build` makes its image anew (the data is kept)."
        case service.EdgeRefused(message=message) if message.startswith("no such session"):
            return f"`{occ} auth sessions` lists the sessions and their IDs."
        case service.EdgeRefused(message=message) if "TOTP" in message:
            return f"`{occ} auth totp` turns it on."
        case service.EdgeRefused():
            return f"See `{occ} logs`; `{occ} start --build` makes an older image anew."
        case team.DoorNotRunning():
            return f"Start the team with `{occ} start`."
        case team.PersonNotFound():
            return f"`{occ} user list` shows the people of the team."
        case team.PersonExists():
            return f"`{occ} user list` shows them; `{occ} user passwd NAME` gives a new password."
        case team.SsoSettingsError():
            return f"`{occ} team sso set --help` shows every setting; nothing was changed."
        case team.DoorRefused():
            return f"A front door of an earlier release is made again by `{occ} start`."
        case team.NotASwarmManager(state="active"):
            return (
                "Point DOCKER_HOST (or `--host`) at a manager: `docker node ls` on a "
                "manager lists them."
            )
        case team.NotASwarmManager():
            return (
                "Make this engine a manager with `docker swarm init`, or point DOCKER_HOST "
                "(or `--host`) at one; other machines join with `docker swarm join`."
            )
        case team.ImagePushFailed():
            return (
                f"Check that the registry in `{occ} config get cluster` answers from the "
                "manager and that its engine trusts it (TLS, or `insecure-registries`)."
            )
        case team.ClusterNotReady():
            return f"Ready the swarm for the team with `{occ} cluster init` first."
        case team.VolumesNotRemoved():
            return (
                "See `docker service ps` and `docker volume ls` on that node; "
                f"`{occ} user remove` again tries once more."
            )
        case team.NoBackupOnCluster(person=person):
            return (
                f"Back up on that node yourself, then `{occ} user remove {person} --volumes "
                "--no-backup`; or remove them without --volumes (their volumes stay)."
            )
        case team.NodeNotFound():
            return f"`{occ} node list` shows the swarm's nodes."
        case team.NowhereToDrain():
            return (
                "Add a node (`docker swarm join`) or activate one "
                f"(`{occ} node activate NODE`), then drain again."
            )
        case team.DrainFailed(node=node):
            return f"Once that is fixed, `{occ} node drain {node}` again moves the rest."
        case team.VolumesNotCopied():
            return "See `docker service ps` on the manager; the source volumes are untouched."
        case team.NodeNotUsable(node=node, down=True):
            return (
                f"Bring {node} back, or bring its people back elsewhere from their "
                f"backups: `{occ} user restore NAME --from-backup FILE --node OTHER`."
            )
        case team.NodeNotUsable(node=node):
            return (
                f"`{occ} node list` shows which nodes are ready and active; `{occ} node "
                f"activate {node}` lets new instances start on {node}."
            )
        case team.NotOnCluster(person=person):
            return f"`{occ} restore FILE --user {person}` restores a person on this engine."
        case team.PersonDataOnManager(person=person):
            return (
                f"They run on the manager: `{occ} restore FILE --user {person}` restores "
                "there (their data is backed up first)."
            )
        case team.NoRoomInCluster(manager_only=True):
            return (
                "Without a registry only the manager has the image: set one (`"
                f'{occ} config set cluster \'{{"registry": "HOST:PORT"}}\'`, then '
                f"`{occ} cluster init`) to use the other nodes."
            )
        case team.NoRoomInCluster():
            return (
                "Add a node (`docker swarm join`), or give people less memory "
                f"(`{occ} user add NAME --memory SIZE`)."
            )
        case team.PersonNotAnswering(person=person):
            return (
                f"See `{occ} cluster status` and `docker service ps` for {person}'s service "
                "on the manager; its node may still be pulling the image."
            )
        case team.TeamUpdateFailed(person=person, back=[_, *_]):
            return (
                f"Everyone is on the old version again. See `docker service logs` of "
                f"{person}'s service on the manager for why the new one failed; its release "
                "may not read this data."
            )
        case team.TeamUpdateFailed(person=person):
            return (
                f"Everyone not updated stays on the old version. See `{occ} logs --user "
                f"{person}` for why the new one failed; its release may not read this data."
            )
        case service.VersionChange():
            return (
                f"Run `{occ} update` to switch safely: the data is snapshotted first, and "
                "restored if the new version cannot read it."
            )
        case service.UpdateFailed(rolled_back=True):
            return (
                f"The running version is unchanged. See `{occ} logs` for why the new one "
                "failed; its release may not read this data."
            )
        case service.UpdateFailed():
            return f"See `{occ} status` and `{occ} logs`; `{occ} rollback` restores the snapshot."
        case service.NothingToRollBack():
            return f"`{occ} update` keeps a snapshot of each update to go back to."
        case service.NotUpdatable():
            return f"Start it first with `{occ} start`."
        case engine.SessionsFailing():
            return (
                f"See `{occ} logs`. If this began with a version change, go back: `{occ} rollback`."
            )
        case service.NeverCreated(instance=instance) | service.NotRunning(instance=instance) if (
            instance.person is not None
        ):
            return f"It starts when {instance.person} signs in; `{occ} user list` shows its state."
        case service.NeverCreated() | service.NotRunning():
            return f"Start it with `{occ} start`."
        case engine.DockerNotInstalled():
            return (
                "Install Docker Engine (https://docs.docker.com/engine/install/), "
                "or on Debian/Ubuntu run `sudo apt-get install docker.io`."
            )
        case engine.DaemonNotRunning(host=host, chosen_by="DOCKER_HOST"):
            return (
                f"DOCKER_HOST names {host}, where no engine answers: start the engine that "
                "listens there, or `unset DOCKER_HOST` to use the default one."
            )
        case engine.DaemonNotRunning(host=host, chosen_by="DOCKER_CONTEXT", context=context):
            return (
                f"DOCKER_CONTEXT names the context {context!r}, whose engine is {host}: "
                "start that engine, or `unset DOCKER_CONTEXT` to use the default one."
            )
        case engine.DaemonNotRunning(host=host, context=str(context)):
            return (
                f"The current Docker context {context!r} names {host}: start that engine, "
                "or go back to the default one with `docker context use default`."
            )
        case engine.DaemonNotRunning(host=host) if not host.startswith("unix://"):
            return (
                f"Check that an engine runs at {host}, and that DOCKER_HOST or the Docker "
                "context names the right one."
            )
        case engine.DaemonNotRunning():
            return START_ENGINE
        case engine.UnknownContext(chosen_by="DOCKER_CONTEXT"):
            return (
                "Set DOCKER_CONTEXT to one of `docker context ls`, or `unset DOCKER_CONTEXT` "
                "to use the default engine."
            )
        case engine.UnknownContext():
            return (
                "Choose one of `docker context ls` with `docker context use NAME`, or go back "
                "to the default engine with `docker context use default`."
            )
        case engine.DockerPermissionDenied():
            return (
                "Add yourself to the docker group (`sudo usermod -aG docker $USER`, then log "
                "in again) or run with sudo."
            )
        case engine.IncompleteAnswer():
            return (
                "Run the command again; if it keeps happening, the engine's log says why it "
                "drops connections (`journalctl -u docker`)."
            )
        case engine.EngineTooOld():
            return "Upgrade Docker Engine (https://docs.docker.com/engine/install/)."
        case engine.ContainerAlreadyExists(name=name):
            return f"Start it with `{occ} start`, or remove it first with `docker rm -f {name}`."
        case engine.ContainerNotFound():
            return f"Create and start it with `{occ} start`."
        case engine.ContainerRunning():
            return f"Stop it first with `{occ} stop`."
        case engine.ImageNotFound(image=image) if image.startswith(f"{IMAGE_NAME}:"):
            return f"Build it with `{occ} build`, or pull it with `{occ} pull`."
        case engine.ImageNotFound():
            return f"Pull it with `{occ} pull`, or unset the override: `{occ} config unset image`."
        case engine.PortInUse(port=port):
            other = f" (for example `{occ} start --port {port + 1}`)" if port else ""
            return f"Stop what listens there, or choose another port{other}."
        case engine.VolumeInUse(users=[first, *_]):
            return f"Remove the container first: `docker rm -f {first}`."
        case engine.MissingPath():
            return f"Use an image built from opencode-cloud's Dockerfile (`{occ} build`)."
        case engine.PullFailed(failures=[]):
            return (
                f"Add a registry: `{occ} config set registries ghcr.io/OWNER`, "
                f"or build the image locally: `{occ} build`."
            )
        case engine.PullFailed():
            return (
                "Check the registry addresses and your network, or build the image "
                f"locally (`{occ} build`)."
            )
    if isinstance(error, (ssh.SshError, ssh.ForwardFailed)):
        return _ssh_hint(error, occ)
    return _other_hint(error, occ)


def _provider_hint(error: OpencodeCloudError, occ: str) -> str:
    from opencode_cloud.providers import errors as providers

    custom = f"`{occ} provider add NAME --base-url URL --model MODEL --key-file FILE`"
    match error:
        case providers.UnknownProvider(known=known):
            return f"Known providers: {', '.join(known)}; for your own server: {custom}."
        case providers.BadProviderInput(what="base URL" | "models" | "model"):
            return f"A custom OpenAI-compatible provider: {custom}."
        case providers.BadProviderInput():
            return f"For example: `{occ} provider add anthropic --key-file ~/anthropic.key`."
        case providers.KeyNotGiven(path=None):
            return (
                "Give it with --key-file FILE or --key-stdin (it never goes on the command "
                "line), or run the command on a terminal to type it."
            )
        case providers.KeyNotGiven():
            return "Check the path; the file holds the key alone, on one line."
        case providers.ProviderNotSet(stored=stored) if stored:
            return f"Keys are stored for: {', '.join(stored)} (`{occ} provider list`)."
        case providers.ProviderNotSet():
            return f"No key is stored yet: `{occ} provider add NAME`."
        case providers.ProviderStoreFailed():
            return f"See `{occ} status` and `{occ} logs`, then run the command again."
    return ""


def _other_hint(error: OpencodeCloudError, occ: str) -> str:
    """Hints of the errors of hosts, locks and mounts."""
    from opencode_cloud.hosts import HostError
    from opencode_cloud.locking import LockTimeout
    from opencode_cloud.mounts import MountError

    match error:
        case HostError(reason="not-ssh"):
            return "A host is reached over SSH: `occ host add NAME ssh://user@host`."
        case HostError(reason="invalid-name"):
            return "For example: occ host add cloud ssh://me@vm.example.com"
        case HostError(reason="unknown", name=name):
            return (
                f"Add it with `occ host add {name} ssh://user@host` (`occ host list` lists them)."
            )
        case LockTimeout(command=command, holder=None):
            return f"Wait for it to finish and run `{command}` again."
        case LockTimeout(command=command, holder=holder) if holder is not None:
            return (
                f"Wait for it to finish and run `{command}` again, or stop it "
                f"(`kill {holder.pid}`) if it hangs."
            )
        case MountError(reason="remote"):
            return (
                f"Keep the code in the projects volume there (`git clone` in `{occ} shell`), "
                "or remove the `mounts` entries."
            )
    return ""


def _config_hint(error: OpencodeCloudError, occ: str) -> str:
    from opencode_cloud.config import errors as config

    reset = f"go back to the defaults with `{occ} config reset --yes`"
    match error:
        case config.EditNotSaved(draft=draft, needs_yes=needs_yes):
            yes = " --yes" if needs_yes else ""
            return f"Go on with your edits: `{occ} config edit --from {draft}{yes}`."
        case config.EditorFailed(missing=True):
            return f"Name your editor, for example: `EDITOR=nano {occ} config edit`."
        case config.RetiredConfigKey(key=key):
            return f"Leave it out; `{occ} config unset {key}` removes it from the file."
        case config.UnknownConfigKey(key=key) if key.startswith("env."):
            return f"List the variables with `{occ} config env list`."
        case config.UnknownConfigKey():
            from opencode_cloud.config.schema import KEYS, RETIRED_KEYS

            valid = ", ".join(key for key in KEYS if key not in RETIRED_KEYS)
            return f"Valid keys: {valid}. Environment variables: `{occ} config env set NAME=VALUE`."
        case config.ConfigSyntaxError(encoding=True):
            return f"Save the file as UTF-8, or {reset}."
        case config.ConfigSyntaxError():
            return f"Fix the file (comments and trailing commas are fine), or {reset}."
        case config.ConfigValidationError(path=Path() as path):
            return (
                f"Fix it with `{occ} config set {error.first_key} VALUE`, by editing {path}, "
                f"or {reset}."
            )
        case config.ConfigValidationError(document=True):
            return f"Fix the value, or {reset}."
        case config.ConfigValidationError(example="env"):
            return f"For example: {occ} config env set OPENCODE_DISABLE_AUTOUPDATE=1"
        case config.ConfigValidationError(example=str(key)):
            from opencode_cloud.config.schema import EXAMPLES

            return f"For example: {occ} config set {key} {EXAMPLES[key]}"
        case config.ConfigValidationError():
            return f"See the keys and their rules with `{occ} config --help`."
    return ""


def usage_hint(command_path: str) -> str:
    """The hint of a bad command line; `command_path` is the command as typed so far
    (`occ logs`, `occ config set`)."""
    return f"See `{command_path} --help` for what it takes."


def ssh_login(url: str) -> str:
    """The `ssh` command line that logs in where `url` (ssh://[user@]host[:port]) points."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = f"-p {parts.port} " if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"ssh {port}{user}{parts.hostname or url}"


def _ssh_hint(error: ssh.SshError | ssh.ForwardFailed, occ: str) -> str:
    if isinstance(error, ssh.ForwardFailed):
        return f"Choose another local port: `{occ} tunnel --port 8080`."
    login = ssh_login(error.host)
    host = login.rsplit(" ", 1)[-1].rpartition("@")[2]
    match error:
        case ssh.HostKeyChanged():
            return (
                "If that host was re-installed, check its new key's fingerprint, then forget "
                f"the old one with `ssh-keygen -R {host}`. Otherwise do not connect."
            )
        case ssh.HostKeyUnknown():
            return f"Log in once with `{login}` to check and accept its key."
        case ssh.AuthenticationRefused():
            return (
                f"Make `{login} true` work without a prompt: load the key into the agent "
                "(`ssh-add`) or name it with IdentityFile in ~/.ssh/config."
            )
        case ssh.NoRemoteEngine(socket_path=path):
            return (
                "Install Docker there (docs/remote.md), or give the engine's socket: "
                f"`occ host add NAME ADDRESS --socket PATH` (tried {path})."
            )
        case ssh.RemoteEngineSilent():
            return (
                f"Run the command again; if it keeps failing, `{login} docker info` (or "
                "`systemctl status docker` there) shows whether the engine is stuck."
            )
        case ssh.RemoteSocketDenied(user=user):
            who = user or "$USER"
            return (
                f"On that host: `sudo usermod -aG docker {who}`, then log in again; or log in "
                "as a user that may use Docker."
            )
        case ssh.ConnectionDropped():
            return (
                f"Run the command again once `{login} true` works; `{occ} status` shows "
                "where things stand."
            )
        case ssh.SshNotInstalled():
            return "Install the OpenSSH client: `sudo apt-get install openssh-client`."
    return f"Check that `{login} true` works from this machine."


def details_for(error: OpencodeCloudError) -> list[str]:
    """Lines that explain `error`, shown above it: the service's last log lines, or the
    build's last output."""
    if isinstance(error, (engine.ContainerExited, engine.HealthTimeout)) and error.log_tail:
        return ["Last log lines:", *(f"  {line}" for line in error.log_tail)]
    if isinstance(error, engine.BuildFailed) and error.output_tail:
        return ["Last build output:", *(f"  {line}" for line in error.output_tail)]
    from opencode_cloud.doctor.engine_install import EngineInstallFailed

    if isinstance(error, EngineInstallFailed) and error.output:
        return ["Last output:", *(f"  {line}" for line in error.output.splitlines())]
    return []


def _with_logs(error: engine.ContainerExited | engine.HealthTimeout, occ: str) -> str:
    if isinstance(error, engine.HealthTimeout) and error.refused:
        return (
            "The service refused the password: the container holds another one than the "
            f"host's password file. Hand it the current one with `{occ} auth rotate`."
        )
    return f"See the full logs with `{occ} logs`, fix the cause, then start again."


def _build_hint(error: engine.BuildFailed, occ: str) -> str:
    if isinstance(error, engine.InvalidCertificate):
        if error.unreadable:
            return "Name an existing PEM file (for example /etc/ssl/certs/ca-certificates.crt)."
        path = Path(error.path)
        return (
            f"Convert a DER certificate first: openssl x509 -inform der -in {path} "
            f"-out {path.stem}.crt"
        )
    if error.cause == "base-image":
        return (
            f"The base image of `{error.instruction}` is not in the engine and could not be "
            "pulled: run scripts/base-image.sh (or `docker pull debian:bookworm-slim`)."
        )
    if error.cause == "packages":
        return (
            "apt could not install what extra_packages or extra_dockerfile ask for; a "
            "running service keeps its image. Fix the name with `"
            f"{occ} config set extra_packages ...`, then start again."
        )
    if error.cause == "certificate":
        return (
            "A TLS-inspecting proxy is probably in the way: trust its CA certificate with "
            f"`{occ} build --ca-file /etc/ssl/certs/ca-certificates.crt` (or keep it with "
            f"`{occ} config set ca_certificates FILE`)."
        )
    return f"Fix the step that failed, then run `{occ} build` again."


def _backup_hint(error: OpencodeCloudError, occ: str) -> str:
    from opencode_cloud.backup import errors as backup

    match error:
        case backup.BackupExists(path=path):
            return f"Name another file, or replace it: `{occ} backup {path} --force`."
        case backup.BackupWriteFailed(path=path):
            return f"Check that {path.parent} exists, is yours and has room, or name another file."
        case backup.InvalidBackup(kind="version"):
            return (
                "Nothing was changed. Restore it with the opencode-cloud release that made it "
                "(or a newer one): `pip install --upgrade opencode-cloud`."
            )
        case backup.InvalidBackup():
            return "Nothing was changed. Use another backup file."
        case backup.NothingToBackUp():
            return f"Name the instance to back up: `{_for_instance(occ, 'NAME')} backup`."
        case backup.NoHelperImage():
            return f"Build it with `{occ} build`, or pull it with `{occ} pull`."
        case backup.RestoreFailed(safety_backup=Path() as kept):
            return (
                f"Fix the cause, then restore again; to go back instead: "
                f"`{occ} restore {kept} --yes`."
            )
        case backup.RestoreFailed():
            return "Fix the cause, then run the restore again."
        case backup.NoScheduler():
            return (
                "Nothing was written. Install cron (`apt-get install cron`) or use a machine "
                "where systemd runs; on Docker Desktop, see docs/backup.md (launchd, Task "
                f"Scheduler) to run `{occ} backup run` on a schedule."
            )
        case backup.ScheduleFailed():
            return f"Nothing was left changed. Fix the cause, then `{occ} backup schedule` again."
    return ""


def _for_instance(occ: str, name: str) -> str:
    """The command line of instance `name` on the host `occ` acts on."""
    from opencode_cloud.instance import DEFAULT_INSTANCE

    on_host = occ.split(" --instance ", 1)[0]
    return on_host if name == DEFAULT_INSTANCE else f"{on_host} --instance {name}"


def _remedy(remedy: Remedy, occ: str) -> str:
    """The words of a fix `occ doctor` shows (`doctor.Remedy`)."""
    data = remedy.data
    another_port = f"choose another port: `{occ} config set port {data.get('port')}`"
    logs = f"See why with `{occ} logs`, fix the cause, then"
    match remedy.kind:
        case "unknown-keys":
            path = data["path"]
            return f"Correct the key's name in {path}, or remove it with `{occ} config unset KEY`."
        case "password-not-a-file":
            return f"Move it away, then `{occ} auth rotate` writes a new password."
        case "password-unreadable":
            path = data["path"]
            return (
                f"Make it yours and readable: `chmod 600 {path}` (check the owner with "
                f"`ls -l {path}`), or write a new one with `{occ} auth rotate`."
            )
        case "password-empty":
            return f"Write a new password with `{occ} auth rotate`."
        case "port-taken":
            return f"Stop that program, or {another_port}."
        case "port-taken-by-container":
            return f"Stop it (`docker stop {data['container']}`), or {another_port}."
        case "port-taken-by-instance":
            other = _for_instance(occ, str(data["instance"]))
            return f"Stop it (`{other} stop`), or {another_port}."
        case "bind-address-foreign":
            return (
                f"Listen locally with `{occ} config set bind_address 127.0.0.1`, or name one "
                "of this machine's addresses (`ip -brief address`)."
            )
        case "low-port":
            return f"Choose another port: `{occ} config set port 8080`."
        case "rebuild-image":
            return f"Build it again: `{occ} build`."
        case "crash-loop":
            return f"{logs} `{occ} restart` (`{occ} stop` ends the loop)."
        case "crashed":
            return f"{logs} `{occ} start`."
        case "recreate":
            return (
                f"Remove it with `docker rm -f {data['container']}` (the volumes stay), then "
                f"`{occ} start`."
            )
        case "unhealthy":
            return f"See `{occ} logs`; `{occ} restart` starts it afresh."
        case "still-starting":
            return (
                f"Wait a moment and run `{occ} doctor` again; `{occ} logs -f` shows its progress."
            )
        case "sessions-failing":
            return (
                f"See `{occ} logs`. If this began with a version change, go back to the version "
                f"that worked: `{occ} config set opencode_version VERSION`, then `{occ} restart`."
            )
        case "pending-restart":
            return f"Apply it with `{occ} restart`."
        case "check-failed":
            return f"Please report this, with the output of `{occ} doctor --json`."
        case "certificate-make":
            return f"`{occ} start` makes it."
        case "certificate-hand-over":
            return f"`{occ} start` hands the container the certificate again."
        case "certificate-renew":
            return (
                f"`{occ} start` makes new ones (a running service takes them without a "
                "restart; a new CA must be trusted again where you connect from)."
            )
        case "backup-failed":
            return (
                f"See the error now with `{occ} backup run` (into {data['folder']}); once it "
                "works, the next scheduled backup clears this."
            )
        case "backup-overdue":
            where = "`systemctl list-timers`" if data.get("method") == "systemd" else "`crontab -l`"
            return (
                f"Check that the schedule runs ({where}; is the machine asleep?), or set it "
                f"up again with `{occ} backup schedule daily`."
            )
        case "certificate-renew-own":
            return f"Renew your certificate (tls_cert, tls_key), then `{occ} start` hands it over."
    return ""


def _kubernetes_hint(error: OpencodeCloudError, occ: str) -> str:
    from opencode_cloud.kubernetes import errors as kubernetes

    match error:
        case kubernetes.NoHostName():
            return (
                f"Name it: `{occ} kubernetes render --host-name team.example.com`, or save it "
                f"with `{occ} config set host_names team.example.com`."
            )
        case kubernetes.BadClusterValue(option=option):
            flag = "--" + option.replace(" ", "-")
            return f"Give {flag} another value (see `{occ} kubernetes render --help`)."
        case kubernetes.OutFolderNotEmpty():
            return "Give --out a new folder (one is made), or an empty one: nothing was written."
        case kubernetes.OutFolderUnwritable():
            return "Give --out a folder you can write in: nothing was written."
        case _:
            return "docs/kubernetes.md says what each container setting becomes on a cluster."

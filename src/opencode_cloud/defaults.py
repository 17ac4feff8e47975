"""Default values every layer shares. Imports nothing, so reading them loads nothing else.

The configuration schema takes its defaults from here, the engine layer its fixed
container facts: loading the configuration never loads engine code, and the engine
layer never loads the configuration.
"""

from __future__ import annotations

# Where the service answers on the host, unless the configuration says otherwise.
DEFAULT_PORT = 3000
DEFAULT_BIND_ADDRESS = "127.0.0.1"
DEFAULT_USERNAME = "opencode"
# Seconds `occ start` waits for opencode to answer.
DEFAULT_START_TIMEOUT = 120
# Seconds a stop waits for a clean exit before the engine kills the container.
DEFAULT_STOP_TIMEOUT = 10
# The retired `restart_retries` key's default; the service now restarts after any crash
# unless it was stopped (docs/operations.md).
DEFAULT_RESTART_RETRIES = 5
# Resource limits of the container (the `limits` key). Memory covers opencode and what
# the agent builds and runs; processes stop a fork bomb long before the host suffers.
DEFAULT_MEMORY_LIMIT = "4g"
DEFAULT_MEMORY_BYTES = 4 << 30
DEFAULT_PIDS_LIMIT = 4096
MIN_MEMORY_BYTES = 256 << 20  # below this opencode itself does not start
# Snapshots of opencode's data kept from the last updates (the `keep_snapshots` key).
DEFAULT_KEEP_SNAPSHOTS = 3
# Container logs rotate at this size, keeping this many files: months of output stay small.
LOG_MAX_SIZE = "10m"
LOG_MAX_FILES = 3

# The opencode release the embedded Dockerfile installs unless told otherwise.
DEFAULT_OPENCODE_VERSION = "1.18.33"
IMAGE_NAME = "opencode-cloud-sandbox"

# Facts of the sandbox image (src/opencode_cloud/sandbox/Dockerfile).
# Inside the container the edge (Caddy) answers on CONTAINER_PORT, the only port
# published; opencode listens on 127.0.0.1 only (`opencode.INTERNAL_PORT`).
CONTAINER_PORT = 3000
RUNTIME_USER = "opencode"
RUNTIME_UID = 1000
RUNTIME_HOME = "/home/opencode"
# What the runtime user's programs find first: the tools it installed (npm -g, pip --user).
# Given to opencode by the entrypoint and to `occ shell`; never in the image's environment,
# which root's processes share.
RUNTIME_PATH = (
    "/home/opencode/.local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)
# The edge (Caddy and the login service) runs as a user of its own, which owns the files
# the tool writes into the container (the password's hash, the TLS key). The runtime user
# may never have this uid or gid.
EDGE_UID = 61000
# The edge's folder in a container, made afresh at each start (requests of the tool to its
# login service are put there), and the login service's program.
EDGE_DIR = "/run/opencode-cloud/edge"
EDGE_PROGRAM = "/usr/local/lib/opencode-cloud/edge.py"
# The login service's state: sessions, the device key, the sign-in log, a second factor.
# Not a volume: a new container of the same instance gets the old one's (`Service`).
EDGE_STATE_DIR = "/var/lib/opencode-cloud-edge"
# The projects volume, inside the home: opencode's "Open project" dialog lists the home.
WORKING_DIR = "/home/opencode/projects"
HOSTNAME = "opencode-cloud"
# The edge's copy of the password: its bcrypt hash only (the plaintext stays on the host).
PASSWORD_PATH_IN_CONTAINER = "/run/opencode-cloud/password.bcrypt"
# What the edge serves (`off`, `self-signed`, `custom`) and which certificate.
TLS_ENV = "OCC_TLS"
# A digest of the certificate, set by earlier releases: never the user's environment.
TLS_CERT_ENV = "OCC_TLS_CERT_SHA256"
# The entrypoint runs opencode as this uid and gid (the owner of the mounted folders).
UID_ENV = "OCC_UID"
# What the sandbox is (docs/team.md): `single` (today's service), `door` (team mode's
# front door) or `person` (one person's opencode in team mode).
ROLE_ENV = "OCC_ROLE"
# In a person's container: opencode's internal password, known to the front door.
INTERNAL_PASSWORD_PATH = "/run/opencode-cloud/internal.password"
# The people's container names start with this, then `-user-NAME` (the front door's and
# the starter's environment).
TEAM_PREFIX_ENV = "OCC_TEAM_PREFIX"
TEAM_INSTANCE_ENV = "OCC_TEAM_INSTANCE"
TEAM_IDLE_STOP_ENV = "OCC_TEAM_IDLE_STOP"
# "1": the door runs on a swarm, which runs the people's instances (nothing starts one).
TEAM_SWARM_ENV = "OCC_TEAM_SWARM"
GID_ENV = "OCC_GID"

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
# Docker restarts a crashed container this many times (with its own growing delay)
# before giving up; `occ start` resets the count.
DEFAULT_RESTART_RETRIES = 5

# The opencode release the embedded Dockerfile installs unless told otherwise.
DEFAULT_OPENCODE_VERSION = "1.18.33"
IMAGE_NAME = "opencode-cloud-sandbox"

# Facts of the sandbox image (src/opencode_cloud/sandbox/Dockerfile).
CONTAINER_PORT = 3000
RUNTIME_USER = "opencode"
RUNTIME_UID = 1000
RUNTIME_HOME = "/home/opencode"
# The projects volume, inside the home: opencode's "Open project" dialog lists the home.
WORKING_DIR = "/home/opencode/projects"
HOSTNAME = "opencode-cloud"
PASSWORD_PATH_IN_CONTAINER = "/run/opencode-cloud/password"
USERNAME_ENV = "OPENCODE_SERVER_USERNAME"
# The entrypoint runs opencode as this uid and gid (the owner of the mounted folders).
UID_ENV = "OCC_UID"
GID_ENV = "OCC_GID"

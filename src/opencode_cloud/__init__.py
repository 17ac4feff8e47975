"""opencode-cloud: run opencode as a persistent, secure service in a Docker container."""

__version__ = "0.1.0"

"""The edge's certificate: the tool's own CA and server certificate, or the user's.

In `self-signed` mode the tool makes, with the `openssl` command on this machine, a CA
(once per instance: it stays valid for ten years, so a browser or a client told to trust
it keeps trusting it) and a server certificate signed by it for localhost, 127.0.0.1,
::1, the bind address, this machine's name and the configured `host_names`. The server
certificate is made again when that list changes or it nears its end. Everything lives
in the instance's `tls/` folder (0700; keys 0600); the CA's key never leaves it.

In `custom` mode the user's own certificate and key (`tls_cert`, `tls_key`) are read as
they are. Either way the edge gets the certificate chain and key as files written into
the container through the engine's archive API, like the password's hash, and the tool
keeps a copy of the served chain (`served.pem`) to check, when it probes the service,
that it speaks to that very certificate.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from opencode_cloud.config.paths import InstancePaths
from opencode_cloud.errors import OpencodeCloudError

if TYPE_CHECKING:
    import ssl

# Where the edge reads its certificate inside the container (see the entrypoint).
CONTAINER_TLS_DIR = "/run/opencode-cloud/tls"
CONTAINER_CERT = f"{CONTAINER_TLS_DIR}/cert.pem"
CONTAINER_KEY = f"{CONTAINER_TLS_DIR}/key.pem"
CA_DAYS = 3650
# Browsers refuse server certificates valid for more than 398 days.
SERVER_DAYS = 397
RENEW_BEFORE = 30 * 86400
MODES = ("off", "self-signed", "custom")


class TlsError(OpencodeCloudError):
    """The certificate cannot be made or read."""


@dataclass(frozen=True)
class TlsMaterial:
    """What the edge serves: a certificate chain and its key, and what clients trust."""

    mode: str  # self-signed | custom
    cert: bytes
    key: bytes
    ca_file: Path | None  # the CA a client trusts (self-signed mode), else None

    @property
    def fingerprint(self) -> str:
        """A short digest of the served chain: a new certificate re-creates the container."""
        return hashlib.sha256(self.cert).hexdigest()[:16]

    def container_files(self) -> dict[str, bytes]:
        return {CONTAINER_CERT: self.cert, CONTAINER_KEY: self.key}


def tls_dir(paths: InstancePaths) -> Path:
    return paths.root / "tls"


def ca_file(paths: InstancePaths) -> Path:
    return tls_dir(paths) / "ca.pem"


def served_file(paths: InstancePaths) -> Path:
    return tls_dir(paths) / "served.pem"


def server_names(bind_address: str, host_names: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The names and addresses the self-signed certificate covers, in a stable order."""
    import socket

    names = ["localhost", "127.0.0.1", "::1"]
    try:
        if not ipaddress.ip_address(bind_address).is_unspecified:
            names.append(bind_address)
    except ValueError:
        pass
    if bind_address in ("0.0.0.0", "::"):
        # Exposed on every address: this machine's own name is the likely one to type.
        names.append(socket.gethostname())
    names.extend(host_names)
    seen: list[str] = []
    for name in names:
        canonical = _canonical(name)
        if canonical and canonical not in seen:
            seen.append(canonical)
    return seen


def _canonical(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.strip().rstrip(".").lower()


def _subject_alt_names(names: list[str]) -> str:
    parts = []
    for name in names:
        try:
            ipaddress.ip_address(name)
            parts.append(f"IP:{name}")
        except ValueError:
            parts.append(f"DNS:{name}")
    return ",".join(parts)


def _openssl(*args: str, stdin: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(
            ["openssl", *args], input=stdin, capture_output=True, check=False, timeout=60
        )
    except FileNotFoundError:
        raise TlsError(
            "The self-signed certificate needs the `openssl` command, which is not installed.",
            "Install openssl (Debian: apt-get install openssl), or set your own certificate "
            "with `occ config set tls_cert ...` and `tls_key`, or `occ config set tls off`.",
        ) from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise TlsError(f"openssl {args[0]} failed: {message[-1] if message else done.returncode}")
    return done.stdout


def _write_certificate(path: Path, content: bytes) -> None:
    """Replace `path` with a certificate (public: 0644) in one step. The configuration
    store is imported here only: the probes that read this module's other parts run
    without it."""
    from opencode_cloud.config.store import write_atomically

    write_atomically(path, content, 0o644, keep_mode=False)


def _private_dir(paths: InstancePaths) -> Path:
    directory = tls_dir(paths)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    return directory


def ensure_ca(paths: InstancePaths, instance_name: str = "default") -> Path:
    """The instance's CA certificate, made on first use; returns its path."""
    directory = _private_dir(paths)
    cert, key = directory / "ca.pem", directory / "ca.key"
    if cert.exists() and key.exists():
        return cert
    temp_key = directory / f".ca.key.{secrets.token_hex(4)}"
    try:
        _openssl(
            "req", "-x509", "-new", "-nodes",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-keyout", str(temp_key), "-days", str(CA_DAYS), "-sha256",
            "-subj", f"/O=opencode-cloud/CN=opencode-cloud local CA ({instance_name})",
            "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-out", str(directory / ".ca.pem.tmp"),
        )  # fmt: skip
        temp_key.chmod(0o600)
        os.replace(temp_key, key)
        os.replace(directory / ".ca.pem.tmp", cert)
    finally:
        temp_key.unlink(missing_ok=True)
    return cert


def _server_current(directory: Path, names: list[str]) -> bool:
    cert, key, recorded = directory / "server.pem", directory / "server.key", directory / "names"
    if not (cert.exists() and key.exists() and recorded.exists()):
        return False
    if recorded.read_text().split() != names:
        return False
    left = _openssl("x509", "-noout", "-checkend", str(RENEW_BEFORE), "-in", str(cert))
    return b"will not expire" in left


def self_signed(
    paths: InstancePaths, names: list[str], instance_name: str = "default"
) -> TlsMaterial:
    """The tool's CA and a server certificate for `names`, made or renewed as needed.

    Raises:
        TlsError: openssl is missing or fails.
    """
    ca = ensure_ca(paths, instance_name)
    directory = tls_dir(paths)
    if not _server_current(directory, names):
        key = directory / "server.key"
        request = _openssl(
            "req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-keyout", str(directory / ".server.key.tmp"),
            "-subj", "/O=opencode-cloud/CN=" + names[0],
        )  # fmt: skip
        extensions = directory / ".server.ext"
        extensions.write_text(
            f"subjectAltName={_subject_alt_names(names)}\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
        )
        try:
            cert = _openssl(
                "x509", "-req", "-CA", str(ca), "-CAkey", str(directory / "ca.key"),
                "-set_serial", str(int.from_bytes(secrets.token_bytes(15), "big")),
                "-days", str(SERVER_DAYS), "-sha256", "-extfile", str(extensions),
                stdin=request,
            )  # fmt: skip
        finally:
            extensions.unlink(missing_ok=True)
        (directory / ".server.key.tmp").chmod(0o600)
        os.replace(directory / ".server.key.tmp", key)
        _write_certificate(directory / "server.pem", cert)
        (directory / "names").write_text("\n".join(names) + "\n")
    chain = (directory / "server.pem").read_bytes() + ca.read_bytes()
    return TlsMaterial("self-signed", chain, (directory / "server.key").read_bytes(), ca)


def custom(cert_file: str | None, key_file: str | None) -> TlsMaterial:
    """The user's own certificate chain and key, read from their files.

    Raises:
        TlsError: one of the two is not set, or cannot be read, or holds no PEM.
    """
    if not cert_file or not key_file:
        missing = "tls_key" if cert_file else "tls_cert"
        raise TlsError(
            f"Your own certificate needs both tls_cert and tls_key; {missing} is not set.",
            f"Set it with `occ config set {missing} /path/to/file.pem` "
            "(or unset the other one to use the self-signed certificate).",
        )
    contents = []
    for key_name, name, marker in (
        ("tls_cert", cert_file, b"-----BEGIN CERTIFICATE-----"),
        ("tls_key", key_file, b"PRIVATE KEY-----"),
    ):
        path = Path(name).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise TlsError(
                f"Cannot read {key_name} {path}: {exc.strerror or exc}.",
                "Check the path and its permissions (the tool reads it at each start).",
            ) from exc
        if marker not in data:
            raise TlsError(f"{key_name} {path} holds no PEM {marker.decode().strip('-')}.")
        contents.append(data)
    return TlsMaterial("custom", contents[0], contents[1], None)


def remember_served(paths: InstancePaths, material: TlsMaterial) -> None:
    """Keep the chain the container now serves, for the tool's own probes."""
    _private_dir(paths)
    _write_certificate(served_file(paths), material.cert)


def ssl_context(paths: InstancePaths, mode: str) -> ssl.SSLContext:
    """An `ssl.SSLContext` for the tool's probes of an instance served in `mode`.

    Self-signed: the instance's CA, with the host name checked (the certificate covers
    127.0.0.1). Custom: the served chain itself is the trust anchor (its names are the
    public ones, not the loopback address the tool probes).
    """
    import ssl

    if mode == "self-signed" and ca_file(paths).exists():
        return ssl.create_default_context(cafile=str(ca_file(paths)))
    context = ssl.create_default_context()
    if served_file(paths).exists():
        context = ssl.create_default_context(cafile=str(served_file(paths)))
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.check_hostname = False
    return context

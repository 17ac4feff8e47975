"""Certificates for the TLS tests, made and read with the `openssl` command: the tests
check the tool's own reader against it, and age an instance's certificate as time
would."""

from __future__ import annotations

import ipaddress
import secrets
import ssl
import subprocess
import time
from pathlib import Path

DAY = 86400


def openssl(*args: str, stdin: bytes | None = None) -> bytes:
    done = subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def _x509(pem: Path | bytes, *args: str) -> bytes:
    """`openssl x509 -noout ARGS` of the first certificate in a file or in PEM bytes."""
    if isinstance(pem, Path):
        return openssl("x509", "-noout", *args, "-in", str(pem))
    return openssl("x509", "-noout", *args, stdin=pem)


def text(pem: Path | bytes) -> str:
    """`openssl x509 -text` of the first certificate in a file or in PEM bytes."""
    return _x509(pem, "-text").decode()


def seconds_left(pem: Path | bytes) -> float:
    """Seconds until the first certificate in a file or in PEM bytes ends, as openssl
    reads it."""
    end = _x509(pem, "-enddate").decode().strip().removeprefix("notAfter=")
    return ssl.cert_time_to_seconds(end) - time.time()


def days_left(pem: Path | bytes) -> float:
    return seconds_left(pem) / DAY


def permitted(pem: Path | bytes) -> tuple[bool, list[str]]:
    """(whether the name constraints are critical, their permitted subtrees as openssl
    prints them) of a CA certificate."""
    lines = text(pem).splitlines()
    start = next(i for i, line in enumerate(lines) if "X509v3 Name Constraints" in line)
    critical = "critical" in lines[start]
    assert lines[start + 1].strip() == "Permitted:"
    found = []
    for line in lines[start + 2 :]:
        if not line.startswith(" " * 18):
            break
        found.append(line.strip())
    return critical, found


def signed_by(cert: Path, ca: Path) -> bool:
    done = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca), str(cert)], capture_output=True, check=False
    )
    return done.returncode == 0


def _alt_names(names: list[str]) -> str:
    parts = []
    for name in names:
        try:
            parts.append(f"IP:{ipaddress.ip_address(name)}")
        except ValueError:
            parts.append(f"DNS:{name}")
    return ",".join(parts)


def shorten_certificate(tls_dir: Path, days: int) -> bytes:
    """Sign the instance's server key again with its CA, for its names, ending in `days`
    days: the certificate as it is that long before its end. Returns the chain the edge
    would serve (leaf, then the CA)."""
    names = (tls_dir / "names").read_text().split()
    request = openssl(
        "req", "-new", "-key", str(tls_dir / "server.key"), "-subj", f"/CN={names[0]}"
    )
    extensions = tls_dir / "short.ext"
    extensions.write_text(
        f"subjectAltName={_alt_names(names)}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "extendedKeyUsage=serverAuth\n"
    )
    try:
        cert = openssl(
            "x509", "-req", "-CA", str(tls_dir / "ca.pem"), "-CAkey", str(tls_dir / "ca.key"),
            "-set_serial", str(int.from_bytes(secrets.token_bytes(8), "big")),
            "-days", str(days), "-sha256", "-extfile", str(extensions),
            stdin=request,
        )  # fmt: skip
    finally:
        extensions.unlink()
    (tls_dir / "server.pem").write_bytes(cert)
    return cert + (tls_dir / "ca.pem").read_bytes()


def make_ca(tls_dir: Path, days: int, constraints: str | None) -> None:
    """Put a CA of `days` days into the instance's folder, with these nameConstraints
    (openssl's syntax), or none, as releases before them made."""
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    extra = ["-addext", f"nameConstraints={constraints}"] if constraints else []
    openssl(
        "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
        "ec_paramgen_curve:P-256", "-keyout", str(tls_dir / "ca.key"), "-days", str(days),
        "-subj", "/CN=test CA", "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", *extra,
        "-out", str(tls_dir / "ca.pem"),
    )  # fmt: skip


def self_signed_pair(directory: Path, name: str, days: int = 90) -> tuple[Path, Path]:
    """A user's own certificate and key (self-signed, for `name`), as files."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    openssl(
        "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
        "ec_paramgen_curve:P-256", "-keyout", str(key), "-days", str(days),
        "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
        "-out", str(cert),
    )  # fmt: skip
    return cert, key

"""The edge's certificate: the tool's own CA and server certificate, or the user's.

In `self-signed` mode the tool makes, with the `openssl` command on this machine, a CA
for the instance and a server certificate signed by it for localhost, 127.0.0.1, ::1,
the bind address, this machine's name and the configured `host_names`. The CA may sign
for those names only (a critical name constraint: a copy of its key could not make a
certificate a browser trusting it would take for any other site) and lasts three
years; the server certificate lasts 820 days, within the 825 Apple allows a private
CA's. Every `occ start` makes the server certificate again when its names change or
less than `RENEW_WITHIN_DAYS` of it are left, and the CA again when it is that close
to its end, or the names went beyond its constraints: so after any start more than a
year of validity is left, and a service that runs a year without a restart never
serves an expired certificate. A new CA has to be trusted again: the start says so.
Everything lives in the instance's `tls/` folder (0700; keys 0600); the CA's key
never leaves it.

In `custom` mode the user's own certificate and key (`tls_cert`, `tls_key`) are read as
they are. Either way the edge gets the certificate chain and key as files written into
the container through the engine's archive API, like the password's hash, and the tool
keeps a copy of the served chain (`served.pem`): to check, when it probes the service,
that it speaks to that very certificate, and to see at a start whether the container
needs the new one.

Dates and name constraints are read from the certificates themselves with a small DER
reader (`read_certificate`): no process and no import on the start path, where an
`openssl x509` takes about 20 ms and the `cryptography` package about 60 ms to import
(docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opencode_cloud.config.paths import InstancePaths
from opencode_cloud.defaults import EDGE_UID
from opencode_cloud.docker.models import ContainerFile
from opencode_cloud.errors import OpencodeCloudError

if TYPE_CHECKING:
    import ssl

# Where the edge reads its certificate inside the container (see the entrypoint).
CONTAINER_TLS_DIR = "/run/opencode-cloud/tls"
CONTAINER_CERT = f"{CONTAINER_TLS_DIR}/cert.pem"
CONTAINER_KEY = f"{CONTAINER_TLS_DIR}/key.pem"
# The CA: long enough that trusting it is not a chore (a new one every two years, see
# RENEW_WITHIN_DAYS), short enough that a copy of its key from an old backup or disk
# stops being worth anything.
CA_DAYS = 3 * 365
# Apple's systems refuse a server certificate from a CA that a user or an administrator
# added to the trust store when it is valid for more than 825 days (browsers cap public
# CAs' at 398, not those); a little under it.
SERVER_DAYS = 820
# A certificate, or the CA, with less than this left is made anew by the next start, so
# that after any start more than a year is left.
RENEW_WITHIN_DAYS = 380
MODES = ("off", "self-signed", "custom")


class TlsError(OpencodeCloudError):
    """The certificate cannot be made or read."""


@dataclass(frozen=True)
class NewCa:
    """The instance's CA was replaced: clients that trusted the old one must trust this one.

    Attributes:
        ca_file: the new CA certificate (the same path as the old one).
        reason: `names` (the certificate serves names outside the old CA's constraints),
            `expiring` (the old one had less than RENEW_WITHIN_DAYS left), `unconstrained`
            (made by an earlier release without name constraints) or `unreadable`.
        names: for `names`, those the old CA could not sign for.
        not_after: the end of the new CA.
    """

    ca_file: Path
    reason: str
    names: tuple[str, ...]
    not_after: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "ca_file": str(self.ca_file),
            "reason": self.reason,
            "names": list(self.names),
            "not_after": self.not_after.isoformat(),
        }


@dataclass(frozen=True)
class TlsMaterial:
    """What the edge serves: a certificate chain and its key, and what clients trust."""

    mode: str  # self-signed | custom
    cert: bytes
    key: bytes
    ca_file: Path | None  # the CA a client trusts (self-signed mode), else None
    new_ca: NewCa | None = None  # made by this call, replacing one clients may trust
    source: Path | None = None  # the user's certificate file (custom mode)

    def container_files(self) -> dict[str, ContainerFile]:
        """The certificate and key as the edge's own user reads them in the container."""
        return {
            CONTAINER_CERT: ContainerFile(self.cert, 0o644, EDGE_UID),
            CONTAINER_KEY: ContainerFile(self.key, 0o600, EDGE_UID),
        }

    @property
    def not_after(self) -> datetime | None:
        """When the served certificate (the chain's first) ends; None when the tool cannot
        read it (a user's certificate in a form it does not know)."""
        try:
            return read_pem(self.cert)[0].not_after
        except (IndexError, TlsError):
            return None


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class CertificateFacts:
    """What the tool reads from a certificate.

    Attributes:
        not_before, not_after: its validity, in UTC.
        names: its subjectAltName entries, as `DNS:name` and `IP:address`.
        permitted: the name constraints' permitted subtrees (`DNS:name`,
            `IP:network`); None when it has none (an unconstrained CA, or a leaf).
    """

    not_before: datetime
    not_after: datetime
    names: tuple[str, ...] = ()
    permitted: tuple[str, ...] | None = None

    def days_left(self, now: datetime | None = None) -> float:
        left = self.not_after - (now or datetime.now(UTC))
        return left.total_seconds() / 86400


_BEGIN = b"-----BEGIN CERTIFICATE-----"
_END = b"-----END CERTIFICATE-----"
# The extensions' object identifiers, DER-encoded: 2.5.29.17 and 2.5.29.30.
_SUBJECT_ALT_NAME = bytes.fromhex("551d11")
_NAME_CONSTRAINTS = bytes.fromhex("551d1e")


def certificates(pem: bytes) -> list[bytes]:
    """The DER bytes of each PEM certificate in `pem`, in order."""
    import binascii

    found: list[bytes] = []
    position = 0
    while (start := pem.find(_BEGIN, position)) >= 0:
        end = pem.find(_END, start)
        if end < 0:
            break
        with contextlib.suppress(binascii.Error):  # damaged: as if it were not there
            found.append(binascii.a2b_base64(pem[start + len(_BEGIN) : end]))
        position = end + len(_END)
    return found


def _element(der: bytes, position: int) -> tuple[int, int, int]:
    """The DER element at `position`: its tag, where its content starts and ends."""
    tag, length = der[position], der[position + 1]
    position += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(der[position : position + count], "big")
        position += count
    if position + length > len(der):
        raise IndexError("truncated")
    return tag, position, position + length


def _children(der: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    found = []
    while start < end:
        element = _element(der, start)
        found.append(element)
        start = element[2]
    return found


def _time(der: bytes, tag: int, start: int, end: int) -> datetime:
    text = der[start:end].decode("ascii")
    if tag == 0x17:  # UTCTime: YYMMDDHHMMSSZ, years 1950-2049
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    month, day, hour, minute, second = (int(text[i : i + 2]) for i in range(4, 14, 2))
    return datetime(int(text[:4]), month, day, hour, minute, second, tzinfo=UTC)


def _general_name(der: bytes, tag: int, start: int, end: int) -> str | None:
    value = der[start:end]
    if tag == 0x82:  # dNSName
        return "DNS:" + value.decode("ascii", "replace").lower()
    if tag == 0x87 and len(value) in (4, 16):  # iPAddress of a certificate
        return f"IP:{ipaddress.ip_address(value)}"
    if tag == 0x87 and len(value) in (8, 32):  # iPAddress of a constraint: address, mask
        half = len(value) // 2
        prefix = bin(int.from_bytes(value[half:], "big")).count("1")
        address = ipaddress.ip_address(value[:half])
        return f"IP:{ipaddress.ip_network((address, prefix), strict=False)}"
    return None  # e-mail, URI, directory names: nothing the tool serves


def read_certificate(der: bytes) -> CertificateFacts:
    """The validity, names and name constraints of one DER certificate.

    Raises:
        TlsError: it is not a certificate.
    """
    try:
        _tag, start, end = _element(der, 0)
        _tag, start, end = _element(der, start)  # tbsCertificate
        fields = _children(der, start, end)
        if fields[0][0] == 0xA0:  # the version, when not v1
            fields = fields[1:]
        not_before, not_after = (_time(der, *t) for t in _children(der, *fields[3][1:])[:2])
        names: tuple[str, ...] = ()
        permitted: tuple[str, ...] | None = None
        for tag, start, end in fields[6:]:
            if tag != 0xA3:  # the extensions
                continue
            _tag, start, end = _element(der, start)
            for _tag, ext_start, ext_end in _children(der, start, end):
                parts = _children(der, ext_start, ext_end)
                oid, (_tag, value_start, _end) = der[parts[0][1] : parts[0][2]], parts[-1]
                if oid == _SUBJECT_ALT_NAME:
                    _tag, start, end = _element(der, value_start)
                    found = (_general_name(der, *n) for n in _children(der, start, end))
                    names = tuple(n for n in found if n)
                elif oid == _NAME_CONSTRAINTS:
                    permitted = ()
                    _tag, start, end = _element(der, value_start)
                    for subtrees in _children(der, start, end):
                        if subtrees[0] != 0xA0:  # excluded subtrees: the tool makes none
                            continue
                        for _tag, sub_start, sub_end in _children(der, *subtrees[1:]):
                            base = _children(der, sub_start, sub_end)[0]
                            name = _general_name(der, *base)
                            permitted += (name,) if name else ()
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise TlsError(f"Not a certificate the tool can read ({exc}).") from None
    return CertificateFacts(not_before, not_after, names, permitted)


def read_pem(pem: bytes) -> list[CertificateFacts]:
    """`read_certificate` of each certificate in a PEM chain, leaf first."""
    return [read_certificate(der) for der in certificates(pem)]


def outside(permitted: tuple[str, ...] | None, names: list[str]) -> list[str]:
    """The names a CA with these permitted subtrees may not sign for (RFC 5280: a DNS
    name within a permitted name's domain, an address within a permitted network). A CA
    without constraints counts as covering none: the tool replaces it."""
    if permitted is None:
        return list(names)
    networks, domains = [], []
    for entry in permitted:
        kind, _, value = entry.partition(":")
        if kind == "IP":
            networks.append(ipaddress.ip_network(value, strict=False))
        elif kind == "DNS":
            domains.append(value.lower())
    refused = []
    for name in names:
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            if not any(_within(name, domain) for domain in domains):
                refused.append(name)
            continue
        if not any(address in network for network in networks):
            refused.append(name)
    return refused


def _within(name: str, domain: str) -> bool:
    if domain.startswith("."):  # only the names below it
        return name.endswith(domain)
    return name == domain or name.endswith("." + domain)


def _read_file(path: Path) -> CertificateFacts | None:
    """The first certificate in the file; None when it is missing or holds none."""
    try:
        found = read_pem(path.read_bytes())
    except (OSError, TlsError):
        return None
    return found[0] if found else None


# --------------------------------------------------------------------------- making


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
    import subprocess  # here only, as `secrets`: a start that makes nothing needs neither

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


def _name_constraints(names: list[str]) -> str:
    """openssl's nameConstraints value permitting exactly `names` (and, for a DNS name,
    the names below it, as name constraints work)."""
    parts = []
    for name in names:
        try:
            network = ipaddress.ip_network(ipaddress.ip_address(name))
        except ValueError:
            parts.append(f"permitted;DNS:{name}")
            continue
        parts.append(f"permitted;IP:{network.network_address}/{network.netmask}")
    return "critical," + ",".join(parts)


def ensure_ca(
    paths: InstancePaths,
    names: list[str],
    instance_name: str = "default",
    *,
    replace: bool = True,
    now: datetime | None = None,
) -> tuple[Path, NewCa | None]:
    """The instance's CA certificate, made when there is none; returns its path.

    With `replace`, one that cannot sign for `names`, has less than RENEW_WITHIN_DAYS
    left, or has no name constraints is replaced, and the second value says why (None
    when the CA is the one there was, or the first).

    Raises:
        TlsError: openssl is missing or fails.
    """
    _made, new_ca = _ensure_ca(paths, names, instance_name, replace, now or datetime.now(UTC))
    return ca_file(paths), new_ca


def _ensure_ca(
    paths: InstancePaths, names: list[str], instance_name: str, replace: bool, now: datetime
) -> tuple[bool, NewCa | None]:
    """(whether a CA was made, and why when it replaced one)."""
    directory = _private_dir(paths)
    cert, key = directory / "ca.pem", directory / "ca.key"
    reason, refused = "", []
    if cert.exists() and key.exists():
        facts = _read_file(cert)
        if facts is None:
            reason = "unreadable"
        elif not replace:
            return False, None
        elif facts.permitted is None:
            reason = "unconstrained"
        elif refused := outside(facts.permitted, names):
            reason = "names"
        elif facts.days_left(now) < RENEW_WITHIN_DAYS:
            reason = "expiring"
        else:
            return False, None
    elif cert.exists():
        reason = "unreadable"  # its key is gone: it cannot sign anything any more
    import secrets

    token = secrets.token_hex(4)
    temp_key, temp_cert = directory / f".ca.key.{token}", directory / f".ca.pem.{token}"
    try:
        _openssl(
            "req", "-x509", "-new", "-nodes",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-keyout", str(temp_key), "-days", str(CA_DAYS), "-sha256",
            # The date tells this CA from the instance's earlier ones in a trust store.
            "-subj", f"/O=opencode-cloud/CN=opencode-cloud local CA ({instance_name}, "
            f"{now:%Y-%m-%d})",
            "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", "nameConstraints=" + _name_constraints(names),
            "-out", str(temp_cert),
        )  # fmt: skip
        temp_key.chmod(0o600)
        os.replace(temp_key, key)
        temp_cert.chmod(0o644)
        os.replace(temp_cert, cert)
    finally:
        temp_key.unlink(missing_ok=True)
        temp_cert.unlink(missing_ok=True)
    if not reason:
        return True, None
    made = _read_file(cert)
    not_after = made.not_after if made else now + timedelta(days=CA_DAYS)
    return True, NewCa(cert, reason, tuple(refused), not_after)


def _server_current(directory: Path, names: list[str], now: datetime) -> bool:
    cert, key, recorded = directory / "server.pem", directory / "server.key", directory / "names"
    if not (key.exists() and recorded.exists()) or recorded.read_text().split() != names:
        return False
    facts = _read_file(cert)
    return facts is not None and facts.days_left(now) >= RENEW_WITHIN_DAYS


def self_signed(
    paths: InstancePaths,
    names: list[str],
    instance_name: str = "default",
    *,
    now: datetime | None = None,
) -> TlsMaterial:
    """The tool's CA and a server certificate for `names`, made or renewed as needed.

    Raises:
        TlsError: openssl is missing or fails.
    """
    now = now or datetime.now(UTC)
    ca_made, new_ca = _ensure_ca(paths, names, instance_name, True, now)
    ca = ca_file(paths)
    directory = tls_dir(paths)
    if ca_made or not _server_current(directory, names, now):
        import secrets

        ca_facts = _read_file(ca)
        ca_days = int(ca_facts.days_left(now)) if ca_facts else SERVER_DAYS
        temp_key = directory / f".server.key.{secrets.token_hex(4)}"
        request = _openssl(
            "req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-keyout", str(temp_key), "-subj", "/O=opencode-cloud/CN=" + names[0],
        )  # fmt: skip
        extensions = directory / ".server.ext"
        extensions.write_text(
            f"subjectAltName={_subject_alt_names(names)}\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid\n"
        )
        try:
            cert = _openssl(
                "x509", "-req", "-CA", str(ca), "-CAkey", str(directory / "ca.key"),
                "-set_serial", str(int.from_bytes(secrets.token_bytes(15), "big")),
                # Never past the CA's own end.
                "-days", str(max(1, min(SERVER_DAYS, ca_days))), "-sha256",
                "-extfile", str(extensions),
                stdin=request,
            )  # fmt: skip
            temp_key.chmod(0o600)
            os.replace(temp_key, directory / "server.key")
        finally:
            extensions.unlink(missing_ok=True)
            temp_key.unlink(missing_ok=True)
        _write_certificate(directory / "server.pem", cert)
        (directory / "names").write_text("\n".join(names) + "\n")
    chain = (directory / "server.pem").read_bytes() + ca.read_bytes()
    key = (directory / "server.key").read_bytes()
    return TlsMaterial("self-signed", chain, key, ca, new_ca=new_ca)


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
    contents, source = [], Path(cert_file).expanduser()
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
    return TlsMaterial("custom", contents[0], contents[1], None, source=source)


def remember_served(paths: InstancePaths, material: TlsMaterial, container_id: str) -> None:
    """Keep the chain the container `container_id` now serves, for the tool's own probes,
    which container that is, and where a user's certificate came from (`handover_due`)."""
    directory = _private_dir(paths)
    _write_certificate(served_file(paths), material.cert)
    (directory / "served-to").write_text(f"{container_id}\n")
    if material.source is not None:
        (directory / "served-from").write_text(f"{material.source}\n")
    else:
        (directory / "served-from").unlink(missing_ok=True)


def _served_to(paths: InstancePaths, container_id: str) -> bool:
    """Whether `container_id` is the container the tool last handed a chain: one an
    update gave its place back after a failure is not. Releases before this record
    handed a new chain only to a new container, so without the record it is."""
    try:
        return (tls_dir(paths) / "served-to").read_text().strip() == container_id
    except FileNotFoundError:
        return True
    except OSError:
        return False


def serves(paths: InstancePaths, container_id: str, chain: bytes) -> bool:
    """Whether the container `container_id` was last handed `chain`."""
    try:
        return _served_to(paths, container_id) and served_file(paths).read_bytes() == chain
    except OSError:
        return False


def handover_due(
    paths: InstancePaths, mode: str, container_id: str, *, now: datetime | None = None
) -> bool:
    """Whether the container `container_id` should get another certificate than the one
    it serves (for a start that otherwise finds nothing to do, and so reads no
    configuration): when it is not the container the tool last handed one; in
    self-signed mode, when the tool's certificate or CA changed, or either is due for
    renewal, or the CA has no name constraints; in custom mode, when the user's file
    holds another chain (renewed in place). Reads a few small files and no process.
    """
    directory = tls_dir(paths)
    try:
        served = served_file(paths).read_bytes()
        if not _served_to(paths, container_id):
            return True
        if mode == "custom":
            source = Path((directory / "served-from").read_text().strip())
    except OSError:
        return True
    if mode == "custom":
        try:
            return source.read_bytes() != served
        except OSError:
            return False  # gone or unreadable: the container keeps what it has
    try:
        wanted = (directory / "server.pem").read_bytes() + (directory / "ca.pem").read_bytes()
        chain = read_pem(served)
    except (OSError, TlsError):
        return True
    if wanted != served or len(chain) < 2 or chain[1].permitted is None:
        return True
    now = now or datetime.now(UTC)
    return any(facts.days_left(now) < RENEW_WITHIN_DAYS for facts in chain[:2])


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

"""The instance's CA and server certificate (made with the real `openssl` command), and
the tool's own reader of their dates and names, checked against openssl's."""

from __future__ import annotations

import base64
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opencode_cloud.access import tls
from opencode_cloud.config.paths import InstancePaths
from tls_helpers import (
    days_left,
    make_ca,
    openssl,
    permitted,
    seconds_left,
    self_signed_pair,
    shorten_certificate,
    signed_by,
)

NAMES = ["localhost", "127.0.0.1", "::1", "box.lan", "192.168.1.20"]
CID = "c0ffee"  # the container the chain was handed to
APPLE_PRIVATE_CA_LIMIT = 825  # days a server certificate from a user-trusted CA may last


@pytest.fixture
def paths(tmp_path: Path) -> InstancePaths:
    return InstancePaths(tmp_path / "inst")


def tls_dir(paths: InstancePaths) -> Path:
    return paths.root / "tls"


# --------------------------------------------------------------------------- the CA


def test_the_ca_may_sign_for_exactly_the_names_the_certificate_serves(
    paths: InstancePaths,
) -> None:
    material = tls.self_signed(paths, NAMES)
    critical, subtrees = permitted(tls_dir(paths) / "ca.pem")
    assert critical
    assert subtrees == [
        "DNS:localhost",
        "IP:127.0.0.1/255.255.255.255",
        "IP:0:0:0:0:0:0:0:1/FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF",
        "DNS:box.lan",
        "IP:192.168.1.20/255.255.255.255",
    ]
    assert material.new_ca is None  # the first CA replaces none
    assert signed_by(tls_dir(paths) / "server.pem", tls_dir(paths) / "ca.pem")


def test_lifetimes_leave_more_than_a_year_and_stay_within_apples_limit(
    paths: InstancePaths,
) -> None:
    tls.self_signed(paths, NAMES)
    ca_days = days_left(tls_dir(paths) / "ca.pem")
    server_days = days_left(tls_dir(paths) / "server.pem")
    assert 2 * 365 < ca_days <= 3 * 365 + 1
    assert 365 < server_days < APPLE_PRIVATE_CA_LIMIT
    assert tls.RENEW_WITHIN_DAYS > 365  # what is left after any start
    assert tls.SERVER_DAYS < APPLE_PRIVATE_CA_LIMIT
    assert tls.CA_DAYS - tls.RENEW_WITHIN_DAYS >= 365 * 1.8  # a new CA about every 2 years


def test_a_name_outside_the_cas_constraints_gets_a_new_ca(paths: InstancePaths) -> None:
    tls.self_signed(paths, NAMES)
    old_ca = tls_dir(paths) / "old-ca.pem"
    old_ca.write_bytes((tls_dir(paths) / "ca.pem").read_bytes())

    material = tls.self_signed(paths, [*NAMES, "other.example", "10.0.0.7"])

    assert material.new_ca is not None
    assert (material.new_ca.reason, material.new_ca.names) == (
        "names",
        ("other.example", "10.0.0.7"),
    )
    assert material.new_ca.ca_file == tls_dir(paths) / "ca.pem" == material.ca_file
    server = tls_dir(paths) / "server.pem"
    assert not signed_by(server, old_ca)  # never made with the old CA
    assert signed_by(server, tls_dir(paths) / "ca.pem")
    assert "DNS:other.example" in permitted(tls_dir(paths) / "ca.pem")[1]
    assert material.cert.endswith((tls_dir(paths) / "ca.pem").read_bytes())


def test_names_the_ca_covers_keep_it(paths: InstancePaths) -> None:
    """Fewer names, or a name below a permitted domain: the same CA, a new certificate."""
    tls.self_signed(paths, NAMES)
    ca = (tls_dir(paths) / "ca.pem").read_bytes()
    server = (tls_dir(paths) / "server.pem").read_bytes()
    for names in (NAMES[:3], [*NAMES, "web.box.lan"]):
        material = tls.self_signed(paths, names)
        assert material.new_ca is None
        assert (tls_dir(paths) / "ca.pem").read_bytes() == ca
        assert (tls_dir(paths) / "server.pem").read_bytes() != server
        assert signed_by(tls_dir(paths) / "server.pem", tls_dir(paths) / "ca.pem")


def test_a_ca_near_its_end_is_replaced(paths: InstancePaths) -> None:
    make_ca(tls_dir(paths), 300, "critical,permitted;DNS:localhost")
    material = tls.self_signed(paths, ["localhost"])
    assert material.new_ca is not None and material.new_ca.reason == "expiring"
    assert days_left(tls_dir(paths) / "ca.pem") > 2 * 365


def test_an_unconstrained_ca_of_an_earlier_release_is_replaced(paths: InstancePaths) -> None:
    make_ca(tls_dir(paths), 3650, None)
    material = tls.self_signed(paths, ["localhost", "127.0.0.1"])
    assert material.new_ca is not None and material.new_ca.reason == "unconstrained"
    assert permitted(tls_dir(paths) / "ca.pem")[0]


def test_the_server_certificate_never_outlives_its_ca(paths: InstancePaths) -> None:
    make_ca(tls_dir(paths), 500, "critical,permitted;DNS:localhost")
    tls.self_signed(paths, ["localhost"])
    ca_end = seconds_left(tls_dir(paths) / "ca.pem")
    server_end = seconds_left(tls_dir(paths) / "server.pem")
    assert server_end <= ca_end
    assert server_end > tls.RENEW_WITHIN_DAYS * 86400  # still more than a year


def test_auth_shows_the_ca_there_is_without_replacing_it(paths: InstancePaths) -> None:
    tls.self_signed(paths, NAMES)
    ca = (tls_dir(paths) / "ca.pem").read_bytes()
    path, new_ca = tls.ensure_ca(paths, ["elsewhere.example"], replace=False)
    assert (path.read_bytes(), new_ca) == (ca, None)


# --------------------------------------------------------------------------- renewal


@pytest.mark.parametrize("days", [5, 30, tls.RENEW_WITHIN_DAYS - 1])
def test_a_certificate_within_the_renewal_window_is_made_anew(
    paths: InstancePaths, days: int
) -> None:
    tls.self_signed(paths, NAMES)
    ca = (tls_dir(paths) / "ca.pem").read_bytes()
    shorten_certificate(tls_dir(paths), days)
    assert days_left(tls_dir(paths) / "server.pem") < days + 1

    material = tls.self_signed(paths, NAMES)

    assert days_left(tls_dir(paths) / "server.pem") > 365
    assert days_left(material.cert) > 365
    assert (tls_dir(paths) / "ca.pem").read_bytes() == ca and material.new_ca is None


def test_a_certificate_outside_the_window_is_kept(paths: InstancePaths) -> None:
    tls.self_signed(paths, NAMES)
    shorten_certificate(tls_dir(paths), tls.RENEW_WITHIN_DAYS + 2)
    kept = (tls_dir(paths) / "server.pem").read_bytes()
    tls.self_signed(paths, NAMES)
    assert (tls_dir(paths) / "server.pem").read_bytes() == kept


def test_files_and_modes(paths: InstancePaths) -> None:
    tls.self_signed(paths, NAMES)
    directory = tls_dir(paths)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name, mode in (("ca.key", 0o600), ("server.key", 0o600), ("ca.pem", 0o644)):
        assert stat.S_IMODE((directory / name).stat().st_mode) == mode, name
    assert sorted(p.name for p in directory.iterdir()) == [
        "ca.key",
        "ca.pem",
        "names",
        "server.key",
        "server.pem",
    ]


# --------------------------------------------------------------------------- handing over


def test_handover_is_due_when_the_served_chain_is_not_the_one_to_serve(
    paths: InstancePaths,
) -> None:
    assert tls.handover_due(paths, "self-signed", CID)  # nothing served yet
    material = tls.self_signed(paths, NAMES)
    tls.remember_served(paths, material, CID)
    assert not tls.handover_due(paths, "self-signed", CID)
    # Time passes: the served certificate nears its end.
    short = shorten_certificate(tls_dir(paths), 5)
    tls.remember_served(paths, tls.TlsMaterial("self-signed", short, b"", None), CID)
    assert tls.handover_due(paths, "self-signed", CID)
    # The tool made a new one (another start, `occ update`) the container did not get.
    tls.remember_served(paths, tls.self_signed(paths, NAMES), CID)
    assert not tls.handover_due(paths, "self-signed", CID)
    tls.self_signed(paths, [*NAMES, "more.example"])
    assert tls.handover_due(paths, "self-signed", CID)


def test_handover_is_due_for_another_container(paths: InstancePaths) -> None:
    """An update's new container got the chain; the old one, given its place back after a
    failed update, did not."""
    material = tls.self_signed(paths, NAMES)
    tls.remember_served(paths, material, CID)
    assert tls.serves(paths, CID, material.cert)
    assert not tls.handover_due(paths, "self-signed", CID)
    assert tls.handover_due(paths, "self-signed", "another")
    assert not tls.serves(paths, "another", material.cert)
    # Recorded by a release before the record: the container it has is the one.
    (tls_dir(paths) / "served-to").unlink()
    assert tls.serves(paths, "another", material.cert)
    assert not tls.handover_due(paths, "self-signed", "another")


def test_handover_is_due_within_the_window_by_the_served_dates(paths: InstancePaths) -> None:
    tls.remember_served(paths, tls.self_signed(paths, NAMES), CID)
    later = datetime.now(UTC) + timedelta(days=tls.SERVER_DAYS - tls.RENEW_WITHIN_DAYS + 1)
    assert tls.handover_due(paths, "self-signed", CID, now=later)
    assert not tls.handover_due(paths, "self-signed", CID, now=later - timedelta(days=2))


def test_a_users_certificate_renewed_in_place_is_due(paths: InstancePaths, tmp_path: Path) -> None:
    cert, key = self_signed_pair(tmp_path / "mine", "box.example")
    material = tls.custom(str(cert), str(key))
    assert material.source == cert
    tls.remember_served(paths, material, CID)
    assert not tls.handover_due(paths, "custom", CID)
    self_signed_pair(tmp_path / "mine", "box.example")  # renewed at the same paths
    assert tls.handover_due(paths, "custom", CID)
    cert.unlink()  # gone: the container keeps serving what it has
    assert not tls.handover_due(paths, "custom", CID)


def test_container_files_belong_to_the_edges_user(paths: InstancePaths) -> None:
    files = tls.self_signed(paths, NAMES).container_files()
    cert, key = files[tls.CONTAINER_CERT], files[tls.CONTAINER_KEY]
    assert (cert.mode, cert.owner, key.mode, key.owner) == (0o644, 61000, 0o600, 61000)
    assert b"PRIVATE KEY" in key.content and b"PRIVATE KEY" not in cert.content


# --------------------------------------------------------------------------- the reader


def test_the_reader_agrees_with_openssl(paths: InstancePaths) -> None:
    material = tls.self_signed(paths, NAMES)
    leaf, ca = tls.read_pem(material.cert)
    now = time.time()
    assert abs(leaf.not_after.timestamp() - now - seconds_left(material.cert)) < 5
    assert abs(ca.not_after.timestamp() - now - seconds_left(tls_dir(paths) / "ca.pem")) < 5
    assert leaf.not_before <= datetime.now(UTC) < leaf.not_after
    assert leaf.names == (
        "DNS:localhost",
        "IP:127.0.0.1",
        "IP:::1",
        "DNS:box.lan",
        "IP:192.168.1.20",
    )
    assert leaf.permitted is None
    assert ca.permitted == (
        "DNS:localhost",
        "IP:127.0.0.1/32",
        "IP:::1/128",
        "DNS:box.lan",
        "IP:192.168.1.20/32",
    )


def test_the_reader_takes_generalized_time_and_a_v1_certificate(tmp_path: Path) -> None:
    """Dates from 2050 on are GeneralizedTime; a certificate without extensions is v1."""
    key = tmp_path / "k.pem"
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
    request = openssl("req", "-new", "-key", str(key), "-subj", "/CN=far")
    far = openssl("x509", "-req", "-signkey", str(key), "-days", str(40 * 365), stdin=request)
    (facts,) = tls.read_pem(far)
    assert facts.not_after.year in (2066, 2067)
    assert (facts.names, facts.permitted) == ((), None)
    assert abs(facts.not_after.timestamp() - datetime.now(UTC).timestamp() - seconds_left(far)) < 5


def test_the_reader_refuses_what_is_no_certificate() -> None:
    truncated = base64.b64encode(b"\x30\x82\x01\x00\x30\x82" + bytes(10))
    with pytest.raises(tls.TlsError):
        tls.read_pem(b"-----BEGIN CERTIFICATE-----\n" + truncated + b"\n-----END CERTIFICATE-----")
    damaged = b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ\n-----END CERTIFICATE-----\n"
    assert tls.read_pem(damaged) == []  # not even base64: as if it were not there
    assert tls.read_pem(b"no PEM at all") == []


def test_what_a_ca_covers_follows_rfc_5280() -> None:
    constraints = ("DNS:box.lan", "IP:192.168.1.0/24", "IP:::1/128", "DNS:.only-below.example")
    names = [
        "box.lan",
        "web.box.lan",
        "notbox.lan",
        "192.168.1.77",
        "192.168.2.1",
        "::1",
        "::2",
        "only-below.example",
        "a.only-below.example",
    ]
    assert tls.outside(constraints, names) == [
        "notbox.lan",
        "192.168.2.1",
        "::2",
        "only-below.example",
    ]
    assert tls.outside(None, ["localhost"]) == ["localhost"]

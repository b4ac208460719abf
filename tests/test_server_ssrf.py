"""URL searches fetch for strangers: no internal address (after DNS, on every redirect),
the vetted address pinned, redirects bounded, one message for every failure, nothing
from the environment, one deadline per fetch. Real servers on loopback, made here."""

from __future__ import annotations

import io
import ipaddress
import json
import socket
import ssl
import subprocess
import threading
import time

import httpx
import pytest
from typer.testing import CliRunner

import lookalike.fetch
from lookalike import Index, IndexOptions
from lookalike.cli import app as cli_app
from lookalike.fetch import GENERIC, FetchError, fetch, is_public
from lookalike.server import ServerConfig
from tests.conftest import make_photo
from tests.live import Hostile, live_app, redirect, serve_bytes, trickle

PRETEND_PUBLIC = ipaddress.ip_address("127.0.0.2")  # loopback, taken as public by some tests


@pytest.fixture
def photo(photo_dir) -> bytes:
    return (photo_dir / "photo0.jpg").read_bytes()


@pytest.fixture
def pretend_public(monkeypatch):
    """127.0.0.2 counts as a public address (to stand for a stranger's server)."""
    real = lookalike.fetch.is_public
    monkeypatch.setattr(
        lookalike.fetch, "is_public", lambda ip: ip == PRETEND_PUBLIC or real(ip), raising=False
    )


def test_internal_addresses_are_refused(index, photo):
    """Loopback by any spelling, link-local (cloud metadata), private, multicast,
    unspecified: 422 with the one message, at once, and nothing reaches the canary."""
    with Hostile(serve_bytes(photo)) as canary, live_app(ServerConfig(index=index)) as base:
        p = canary.port
        urls = [
            f"http://127.0.0.1:{p}/p.jpg",
            f"http://localhost:{p}/p.jpg",
            f"http://2130706433:{p}/p.jpg",  # 127.0.0.1 as one number
            f"http://0x7f.1:{p}/p.jpg",
            f"http://evil.example@127.0.0.1:{p}/p.jpg",
            f"http://[::ffff:127.0.0.1]:{p}/p.jpg",
            f"http://[::1]:{p}/p.jpg",
            f"http://0.0.0.0:{p}/p.jpg",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/",
            "http://10.0.0.1/",
            "http://192.168.0.1/",
            "http://100.64.0.1/",
            "http://224.0.0.1/",
            "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
            "ftp://example.org/p.jpg",
            "file:///etc/passwd",
        ]
        for url in urls:
            started = time.monotonic()
            r = httpx.post(f"{base}/search", json={"url": url, "k": 1}, timeout=30)
            assert (r.status_code, r.json()["detail"]) == (422, GENERIC), url
            assert time.monotonic() - started < 2, url
        assert canary.seen == []


def test_redirects_are_vetted_and_bounded(index, photo, pretend_public):
    """A 302 from a public server to loopback is refused; a redirect loop stops after
    five redirects (six requests)."""
    with Hostile(serve_bytes(photo)) as canary, live_app(ServerConfig(index=index)) as base:
        to_canary = redirect(lambda _seen: f"{canary.url}/p.jpg")
        with Hostile(to_canary, host="127.0.0.2") as public:
            r = httpx.post(f"{base}/search", json={"url": f"{public.url}/a.jpg"})
            assert (r.status_code, r.json()["detail"]) == (422, GENERIC)
            assert len(public.seen) == 1 and canary.seen == []
        loop = redirect(lambda seen: "/again?" + str(len(seen.head)))  # relative, to itself
        with Hostile(loop, host="127.0.0.2") as public:
            r = httpx.post(f"{base}/search", json={"url": f"{public.url}/a.jpg"})
            assert (r.status_code, r.json()["detail"]) == (422, GENERIC)
            assert len(public.seen) == 1 + lookalike.fetch.MAX_REDIRECTS == 6
        image_host = Hostile(serve_bytes(photo), host="127.0.0.2")
        to_image = redirect(lambda _seen: f"{image_host.url}/p.jpg", 301)
        with image_host, Hostile(to_image, host="127.0.0.2") as public:  # public to public: fine
            r = httpx.post(f"{base}/search", json={"url": f"{public.url}/a.jpg", "k": 1})
            assert r.status_code == 200 and len(image_host.seen) == 1


def _self_signed(tmp_path) -> ssl.SSLContext:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=rebind.test"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def test_the_vetted_address_is_the_one_connected_to(index, photo, pretend_public, monkeypatch, tmp_path):
    """DNS rebinding at fetch time: the name resolves to a public address once, to loopback
    afterwards. One lookup; the connection goes to the vetted address, with the name kept
    in Host (and in TLS SNI)."""
    real_getaddrinfo = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding(host, port, *args, **kwargs):
        if host in ("rebind.test", b"rebind.test"):  # (anyio passes it IDNA-encoded)
            lookups.append("rebind.test")
            ip = "127.0.0.2" if len(lookups) == 1 else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    public = Hostile(serve_bytes(photo), host="127.0.0.2")
    canary = Hostile(serve_bytes(photo), port=public.port)  # where a second lookup would lead
    with public, canary, live_app(ServerConfig(index=index)) as base:
        url = f"http://rebind.test:{public.port}/p.jpg"
        r = httpx.post(f"{base}/search", json={"url": url, "k": 1})
        assert r.status_code == 200, r.text
        assert lookups == ["rebind.test"] and canary.seen == []
        assert [s.host for s in public.seen] == [f"rebind.test:{public.port}"]
    lookups.clear()
    with Hostile(serve_bytes(photo), host="127.0.0.2", tls=_self_signed(tmp_path)) as tls_server:
        with pytest.raises(FetchError, match="CERTIFICATE_VERIFY_FAILED"):  # self-signed: refused
            fetch(f"https://rebind.test:{tls_server.port}/p.jpg", timeout=10)
        seen = tls_server.wait_seen()  # its handshake thread may note it after the client gave up
        assert seen and seen[0].sni == "rebind.test"
        assert lookups == ["rebind.test"]


def test_every_failure_reads_the_same(index, photo):
    """Closed port, an open port that is no image server, an HTTP error, a non-image: the
    same status and message (no port oracle), even with private addresses allowed."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]  # bound, not listening: connection refused
        with (
            Hostile(serve_bytes(b"<html>hello</html>", "text/html")) as html,
            Hostile(lambda conn, _s, _e: conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")) as ssh,
            Hostile(lambda conn, _s, _e: conn.sendall(b"HTTP/1.1 404 Not Found\r\n\r\n")) as missing,
            live_app(ServerConfig(index=index, allow_private_urls=True)) as base,
        ):
            answers = set()
            for url in (f"http://127.0.0.1:{closed_port}/", html.url, ssh.url, f"{missing.url}/x.jpg"):
                r = httpx.post(f"{base}/search", json={"url": url})
                answers.add((r.status_code, r.content))
            assert answers == {(422, json.dumps({"detail": GENERIC}, separators=(",", ":")).encode())}


def test_cli_fetches_your_own_urls_ignoring_proxy_settings(tmp_path, photo_dir, tf2_model, monkeypatch):
    """`lookalike search URL` may fetch private addresses (your own machines), but takes no
    proxy or credentials from the environment."""
    index = tmp_path / "ix"
    Index(index).add([photo_dir], model=str(tf2_model), options=IndexOptions(workers=0))
    with (
        Hostile(serve_bytes((photo_dir / "photo0.jpg").read_bytes())) as server,
        Hostile(serve_bytes(b"", "text/plain")) as proxy,
    ):
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
            monkeypatch.setenv(name, proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        netrc = tmp_path / "netrc"
        netrc.write_text("machine 127.0.0.1 login someone password secret\n")
        monkeypatch.setenv("NETRC", str(netrc))
        res = CliRunner().invoke(
            cli_app, ["search", f"{server.url}/q.jpg", "--json", "-k", "1", "--index", str(index)]
        )
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["results"][0]["path"] == str(photo_dir / "photo0.jpg")
        assert proxy.seen == [] and len(server.seen) == 1
        assert "authorization" not in server.seen[0].head.lower()


@pytest.mark.parametrize("head_too", [False, True])
def test_one_deadline_for_the_whole_fetch(index, head_too):
    """A server trickling a byte every 0.25 s (body, or head too) is cut at the deadline."""
    with Hostile(trickle(0.25, head_too=head_too)) as slow:
        cfg = ServerConfig(index=index, allow_private_urls=True, fetch_timeout_s=1.5)
        with live_app(cfg) as base:
            started = time.monotonic()
            r = httpx.post(f"{base}/search", json={"url": f"{slow.url}/p.jpg"}, timeout=60)
            assert time.monotonic() - started < 2.5 and r.status_code == 422
            assert r.json()["detail"] == GENERIC
        started = time.monotonic()
        with pytest.raises(FetchError, match=r"within 1\.5 s"):  # the CLI's fetch too
            fetch(f"{slow.url}/p.jpg", timeout=1.5, allow_private=True)
        assert 1.4 < time.monotonic() - started < 2.5


def test_trickling_fetches_do_not_starve_searches(index, photo):
    """45 URL searches of a server trickling a byte a second: a few fetch at once (holding
    no thread), the rest get 503 quickly, and an upload search answers meanwhile."""
    buf = io.BytesIO()
    make_photo(3).save(buf, "JPEG")
    cfg = ServerConfig(
        index=index, allow_private_urls=True, max_fetches=4, busy_wait_s=0.5, fetch_timeout_s=6
    )
    with Hostile(trickle(1.0, limit_s=20)) as slow, live_app(cfg) as base:
        answers: list[tuple[int, float]] = []

        def url_search() -> None:
            started = time.monotonic()
            r = httpx.post(f"{base}/search", json={"url": f"{slow.url}/p.jpg"}, timeout=60)
            answers.append((r.status_code, time.monotonic() - started))

        threads = [threading.Thread(target=url_search) for _ in range(45)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        started = time.monotonic()
        r = httpx.post(f"{base}/search", files={"image": ("q.jpg", buf.getvalue())}, timeout=60)
        upload_took = time.monotonic() - started
        for t in threads:
            t.join(timeout=60)
    assert r.status_code == 200 and upload_took < 2.0
    statuses = sorted(s for s, _ in answers)
    assert statuses == [422] * 4 + [503] * 41
    assert max(t for s, t in answers if s == 503) < 5.0 and max(t for _, t in answers) < 10.0


def test_public_address_rules():
    public = ("8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8")
    private = ("127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
               "0.0.0.0", "224.0.0.1", "255.255.255.255", "240.0.0.1", "192.0.0.8", "198.18.0.1",
               "::1", "::", "fe80::1", "fc00::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
               "2002:7f00:1::", "2002:a00:1::", "64:ff9b::a00:1", "2001:db8::1")  # fmt: skip
    assert all(is_public(ipaddress.ip_address(a)) for a in public)
    assert not any(is_public(ipaddress.ip_address(a)) for a in private)

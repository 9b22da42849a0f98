"""The shipped nginx configuration (deploy/nginx/uphooks.conf.template), run for real in front of
a real ingress on loopback: only its listen address and upstream are filled in, as the official
image's envsubst does.

nginx comes from the PATH, else from Debian's package unpacked into var/nginx-deb (``apt-get
download`` + ``dpkg -x``: nothing is installed system-wide and no service starts). Where neither
can be had the tests skip, saying why.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import PATH, ROOT, Stack, wait_for
from tests.debian import unpack
from uphooks_cli import simulate
from uphooks_cli.embedded import free_port

TEMPLATE = ROOT / "deploy" / "nginx" / "uphooks.conf.template"
SECRET = "whsec_" + base64.b64encode(b"p" * 32).decode()
OTHER = "whsec_" + base64.b64encode(b"q" * 32).decode()


def _unpack_debian_nginx() -> Path | str:
    return unpack("nginx", "usr/sbin/nginx")


@pytest.fixture(scope="session")
def nginx() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if found:
        return found
    unpacked = _unpack_debian_nginx()
    if isinstance(unpacked, str):
        print(f"\nnginx tests skipped: {unpacked}")
        pytest.skip(unpacked)
    return str(unpacked)


def render(tmp: Path, listen: str, upstream: str) -> Path:
    """The template as the image renders it, inside a minimal main configuration."""
    conf = TEMPLATE.read_text()
    conf = conf.replace("${UPHOOKS_PROXY_LISTEN}", listen).replace("${UPHOOKS_UPSTREAM}", upstream)
    assert "${" not in conf
    (tmp / "uphooks.conf").write_text(conf)
    user = "user root root;\n" if os.geteuid() == 0 else ""
    main = tmp / "nginx.conf"
    main.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\n"
        f"error_log {tmp}/error.log info;\nevents {{ worker_connections 1024; }}\n"
        f"http {{\n  access_log {tmp}/access.log;\n"
        + "".join(f"  {kind}_temp_path {tmp}/{kind};\n" for kind in ("client_body", "proxy"))
        + "".join(f"  {kind}_temp_path {tmp}/{kind};\n" for kind in ("fastcgi", "uwsgi", "scgi"))
        + f"  include {tmp}/uphooks.conf;\n}}\n"
    )
    return main


def test_nginx_accepts_the_shipped_configuration(nginx: str, tmp_path: Path) -> None:
    main = render(tmp_path, "127.0.0.1:8080", "127.0.0.1:8000")
    checked = subprocess.run(
        [nginx, "-t", "-c", str(main), "-p", str(tmp_path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr


@dataclass
class Proxy:
    url: str
    proc: subprocess.Popen[bytes]


@pytest.fixture
def proxied(nginx: str, stack: Stack, tmp_path: Path) -> Iterator[tuple[Proxy, str]]:
    """A signed-mode ingress that believes 127.0.0.1's X-Forwarded-For, behind our nginx."""
    ingress = stack.ingress(
        UPHOOKS_VERIFY="upload-post",
        UPHOOKS_SECRETS=SECRET,
        UPHOOKS_TRUSTED_PROXIES="127.0.0.1/32",
        UPHOOKS_REFUSAL_BURST="3",
        UPHOOKS_REFUSAL_RATE_PER_SECOND="0.01",
    )
    port = free_port()
    main = render(tmp_path, f"127.0.0.1:{port}", ingress.url.removeprefix("http://"))
    with (tmp_path / "nginx.out").open("wb") as out:
        proc = subprocess.Popen(
            [nginx, "-c", str(main), "-p", str(tmp_path)], stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), timeout=10, what="nginx")
        yield Proxy(url, proc), ingress.admin_url
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _client(source: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=15)


def test_the_proxy_forwards_deliveries_hides_the_rest_and_cuts_a_slow_client(
    proxied: tuple[Proxy, str],
) -> None:
    proxy, admin_url = proxied
    port = int(proxy.url.rsplit(":", 1)[1])
    # A slowloris: one header byte every 2 s, from the start of the test.
    slow = socket.create_connection(("127.0.0.1", port), timeout=2)
    opened = time.monotonic()
    trickle = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nX-Padding: {'p' * 40}".encode()

    [item] = simulate.prepare("upload_completed", 1, secret=SECRET, seed=21)
    with _client("127.0.0.1") as honest:
        kept = honest.post(proxy.url + PATH, content=item.body, headers=item.headers)
        assert kept.status_code == 202, kept.text
        for path in ("/metrics", "/openapi.json", "/readyz"):
            assert honest.get(proxy.url + path).status_code == 404, path
        too_big = honest.post(
            proxy.url + PATH, content=b"x" * (2 * 1024 * 1024), headers=item.headers
        )
        assert too_big.status_code == 413  # nginx's own, before the ingress sees a byte

        # Forgeries from 127.0.0.2 through the proxy: the ingress throttles the client behind
        # the proxy (X-Forwarded-For), not the proxy, so the honest client is not affected.
        forged = b'{"event":"upload_completed","n":1}'
        headers = simulate.headers_for(
            "upload_completed", forged, secret=OTHER, timestamp=int(time.time()), delivery_id="f"
        )
        with _client("127.0.0.2") as forger:
            codes = [
                forger.post(proxy.url + PATH, content=forged, headers=headers).status_code
                for _ in range(6)
            ]
        assert codes == [503, 503, 503, 429, 429, 429]
        [again] = simulate.prepare("upload_completed", 1, secret=SECRET, seed=22)
        assert (
            honest.post(proxy.url + PATH, content=again.body, headers=again.headers).status_code
            == 202
        )

    # The proxy's rate limit per source: GETs never reach the ingress (403 from nginx), and
    # past the burst (200, refilled at 50/s) they are refused 429.
    statuses: list[int] = []
    with _client("127.0.0.3") as flood:
        while 429 not in statuses and len(statuses) < 5000:
            statuses.append(flood.get(proxy.url + PATH).status_code)
    assert statuses[-1] == 429
    assert len(statuses) > 200 and set(statuses[:200]) == {403}

    closed_after = None
    for byte in trickle:
        try:
            slow.sendall(bytes([byte]))
            if slow.recv(100) == b"":
                closed_after = time.monotonic() - opened
                break
        except TimeoutError:
            continue  # nothing to read: the 2 s pause between bytes
        except ConnectionError:
            closed_after = time.monotonic() - opened
            break
    slow.close()
    assert closed_after is not None and closed_after < 10 + 3  # client_header_timeout 10s
    metrics = httpx.get(admin_url + "/metrics").text
    assert 'uphooks_ingress_connections_closed_total{reason="head_timeout"}' not in metrics

"""TLS termination in the service itself (--tls-cert/--tls-key), and the CLI over it."""

from __future__ import annotations

import os
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from support.process import SNAPLEDGER, free_port


def test_https_with_the_cli(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    port = free_port()
    data_dir = tmp_path / "data"
    proc = subprocess.Popen([SNAPLEDGER, "serve", "--data-dir", str(data_dir), "--port", str(port),
                             "--tls-cert", str(cert), "--tls-key", str(key)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"https://127.0.0.1:{port}"
    context = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                assert urllib.request.urlopen(url + "/health", context=context, timeout=1).status == 200
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        env = {**os.environ, "SNAPLEDGER_CREDENTIALS": str(data_dir / "credentials.json")}
        ok = subprocess.run([SNAPLEDGER, "--url", url, "--ca-cert", str(cert), "info"], capture_output=True,
                            text=True, env=env, timeout=30)
        assert ok.returncode == 0, ok.stderr
        untrusted = subprocess.run([SNAPLEDGER, "--url", url, "info"], capture_output=True, text=True, env=env,
                                   timeout=30)
        assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
        plain = subprocess.run([SNAPLEDGER, "--url", f"http://127.0.0.1:{port}", "info"], capture_output=True,
                               text=True, env=env, timeout=30)
        assert plain.returncode == 1  # no plain HTTP on a TLS port
    finally:
        proc.terminate()
        proc.wait(10)


def test_https_by_default_with_its_own_ca(tmp_path: Path) -> None:
    """Issue 17: no flags, HTTPS with a CA made on first start (D/ca.pem for clients);
    the native CLI sharing the data directory trusts it; a restart keeps the CA."""
    from cryptography import x509

    from support.process import Server

    data_dir = tmp_path / "data"
    server = Server(data_dir, tls=True).start()
    try:
        ca = (data_dir / "ca.pem").read_bytes()
        cert = x509.load_pem_x509_certificate((data_dir / "server.pem").read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "localhost" in san.get_values_for_type(x509.DNSName)
        assert "127.0.0.1" in [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        assert (data_dir / "ca-key.pem").stat().st_mode & 0o077 == 0
        assert (data_dir / "server-key.pem").stat().st_mode & 0o077 == 0
        env = {**os.environ, "SNAPLEDGER_CREDENTIALS": str(data_dir / "credentials.json")}
        ok = subprocess.run([SNAPLEDGER, "--url", server.url, "info"], capture_output=True, text=True, env=env,
                            timeout=30)
        assert ok.returncode == 0, ok.stderr
        plain = subprocess.run([SNAPLEDGER, "--url", server.url.replace("https:", "http:"), "info"],
                               capture_output=True, text=True, env=env, timeout=30)
        assert plain.returncode == 1  # plain HTTP only when asked for (--plain-http)
    finally:
        server.stop()
    again = Server(data_dir, tls=True, port=server.port).start()
    try:
        assert (data_dir / "ca.pem").read_bytes() == ca  # clients keep trusting it
        assert urllib.request.urlopen(again.url + "/health", context=again.ssl_context, timeout=5).status == 200
    finally:
        again.stop()


def test_plain_http_and_a_certificate_exclude_each_other(tmp_path: Path) -> None:
    result = subprocess.run([SNAPLEDGER, "serve", "--data-dir", str(tmp_path / "d"), "--port", str(free_port()),
                             "--plain-http", "--tls-cert", __file__, "--tls-key", __file__],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "exclude each other" in result.stderr

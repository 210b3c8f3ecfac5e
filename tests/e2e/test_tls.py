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

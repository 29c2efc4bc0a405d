"""Starting the server as a user does: `python serve.py` and `learner-export serve`, in a child
process on a free loopback port. Refusing to start without a secret, demo mode (its printed curl
line is run as printed), several workers, and HTTPS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from learner_export.demo import demo_rows
from learner_export.processes import free_port, stop_process
from tests.conftest import REQUIRE_POSTGRES, DemoSource
from tests.serve.conftest import SECRET, make_token

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "learner-export"
STARTED = "Uvicorn running on"

pytestmark = pytest.mark.slow


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    """A clean environment: no settings inherited from the test run but what is given."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LEARNER_EXPORT_") and k not in {"DATABASE_URL", "JWT_SECRET"}
    }
    env.update(LEARNER_EXPORT_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", **extra)
    return env


class Transcript(str):
    """What the server printed until it was ready; `rest` gets the remainder once it has exited."""

    rest: str = ""


@contextmanager
def running(
    command: list[str], env: dict[str, str], *, ready: str = STARTED, times: int = 1
) -> Iterator[Transcript]:
    """Run `command` until its output shows `ready` `times` times; yield what it printed so far.

    `times` is the number of worker processes to wait for: each prints its own startup line, and
    a worker still importing would leave all connections to the other.
    """
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    output = ""
    transcript = None
    try:
        deadline = time.monotonic() + 60
        while output.count(ready) < times:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                raise AssertionError(f"the server exited early:\n{output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not start:\n{output}")
            output += line
        transcript = Transcript(output)
        yield transcript
    finally:
        stop_process(process)
        if transcript is not None:
            transcript.rest = process.stdout.read()
        process.stdout.close()


def test_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "serve.py", "--port", str(free_port())],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "JWT_SECRET is not set" in result.stderr
    assert "Uvicorn running" not in result.stderr + result.stdout


def test_demo_refuses_a_real_database(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(CLI), "serve", "--demo", "--port", str(free_port())],
        cwd=ROOT,
        env=_env(tmp_path, DATABASE_URL="postgresql://somewhere/platform"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "--demo serves only the embedded demo database" in result.stderr


def test_demo_mode_then_the_printed_curl(tmp_path: Path) -> None:
    if shutil.which("curl") is None:  # .ci/run installs it: in CI this is a failure
        (pytest.fail if REQUIRE_POSTGRES else pytest.skip)("curl is not installed")
    port = free_port()
    command = [sys.executable, "serve.py", "--demo", "--port", str(port)]
    with running(command, _env(tmp_path / "data")) as output:
        assert "built the demo database" in output
        # No notice configuration: said at start, before any page shows it (issue 13).
        assert "warning: no notice configuration (LEARNER_EXPORT_NOTICE_CONFIG)" in output
        pasted = "\n".join(
            line
            for line in output.splitlines()
            if re.match(r"(ADMIN_TOKEN|PARENT_TOKEN)=|curl ", line)
        )
        assert pasted.count("\n") == 2
        downloads = tmp_path / "downloads"
        downloads.mkdir()
        result = subprocess.run(
            ["bash", "-c", pasted], cwd=downloads, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        (saved,) = downloads.iterdir()
        export_day = orjson.loads(saved.read_bytes())["exportDate"][:10]  # the server's UTC date
        assert saved.name == f"learner-data-3-{export_day}.json"
        assert saved.read_bytes().startswith(b'{"learner":{"id":3,')
        # The tokens are for this process only: the test suite's secret is not it.
        foreign = make_token(SECRET, userId="2", role="ADMIN")
        response = httpx.get(
            f"http://127.0.0.1:{port}/api/export?learnerId=3",
            headers={"Authorization": f"Bearer {foreign}"},
        )
        assert response.status_code == 401
    # The server's own output: no learner's data, no token, no request URL.
    rows = demo_rows()
    logged = output.rest
    assert "Shutting down" in logged
    for user in rows.users:
        for key in ("username", "email", "name"):
            assert not user[key] or user[key] not in logged
    assert "learnerId" not in logged
    assert "eyJ" not in logged


def test_several_workers_share_the_demo_secret(tmp_path: Path) -> None:
    port = free_port()
    command = [str(CLI), "serve", "--demo", "--workers", "2", "--port", str(port)]
    # With workers the parent only binds: the socket listens once a worker has started.
    with running(command, _env(tmp_path), ready="Application startup complete", times=2) as output:
        token = re.search(r"^ADMIN_TOKEN=(\S+)", output, re.MULTILINE)
        assert token is not None
        headers = {"Authorization": f"Bearer {token.group(1)}"}
        url = f"http://127.0.0.1:{port}/api/export?learnerId=3"
        # Fresh connections land on either worker: every one must accept the printed token.
        statuses = [httpx.get(url, headers=headers).status_code for _ in range(8)]
        assert statuses == [200] * 8


def _processes_holding(path: Path) -> set[int]:
    """Ids of the processes that have `path` open (read from /proc)."""
    holders = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(fd.readlink() == path for fd in (entry / "fd").iterdir()):
                holders.add(int(entry.name))
        except OSError:  # a process that ended meanwhile
            continue
    return holders


def test_the_rate_limit_holds_across_workers(tmp_path: Path, sqlite_demo: DemoSource) -> None:
    port = free_port()
    command = [sys.executable, "serve.py", "--workers", "2", "--port", str(port)]
    env = _env(
        tmp_path, JWT_SECRET=SECRET, DATABASE_URL=sqlite_demo.url,
        LEARNER_EXPORT_EXPORTS_PER_MINUTE="2",
    )  # fmt: skip
    store = tmp_path / "export-rate.sqlite3"
    url = f"http://127.0.0.1:{port}/api/export?learnerId=3"
    headers = {"Authorization": f"Bearer {make_token(SECRET, userId='2', role='ADMIN')}"}
    statuses: list[int] = []
    with running(command, env, ready="Application startup complete", times=2):
        # Concurrent requests on fresh connections, until both workers have answered some (each
        # opens the shared store on its first admission): a per-worker limit would admit 4.
        for _ in range(10):
            with ThreadPoolExecutor(max_workers=6) as pool:
                statuses += pool.map(
                    lambda _: httpx.get(url, headers=headers).status_code, range(6)
                )
            if len(_processes_holding(store)) == 2:
                break
        assert len(_processes_holding(store)) == 2
    assert statuses.count(200) == 2
    assert statuses.count(429) == len(statuses) - 2
    audited = [
        orjson.loads(line)["status"]
        for line in (tmp_path / "audit.jsonl").read_bytes().splitlines()
    ]
    assert sorted(audited) == sorted(statuses)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def test_https_with_ssl_options(tmp_path: Path, sqlite_demo: DemoSource) -> None:
    key, cert = _self_signed(tmp_path)
    port = free_port()
    command = [
        sys.executable, "serve.py", "--port", str(port),
        "--ssl-keyfile", str(key), "--ssl-certfile", str(cert),
    ]  # fmt: skip
    env = _env(tmp_path, JWT_SECRET=SECRET, DATABASE_URL=sqlite_demo.url)
    with running(command, env):
        token = make_token(SECRET, userId="2", role="ADMIN")
        with httpx.Client(verify=ssl.create_default_context(cafile=cert)) as client:
            response = client.get(
                f"https://127.0.0.1:{port}/api/export?learnerId=3",
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 200
            assert response.json()["exportedBy"] == 2
            assert client.get(f"https://127.0.0.1:{port}/healthz").status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz")  # plain HTTP is not served


def test_refuses_to_start_when_the_audit_log_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a directory should be")
    result = subprocess.run(
        [sys.executable, "serve.py", "--demo", "--port", str(free_port())],
        cwd=ROOT,
        env=_env(tmp_path, LEARNER_EXPORT_AUDIT_LOG=str(tmp_path / "blocker" / "audit.jsonl")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "audit.jsonl failed" in result.stderr
    assert "Traceback" not in result.stderr


def test_refuses_to_start_with_a_broken_notice_configuration(
    tmp_path: Path,
    sqlite_demo: DemoSource,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In process: the check runs before anything is served, so nothing starts here."""
    import serve
    from learner_export.settings import get_settings

    (tmp_path / "notice.toml").write_text('controler = "a typo"\n')
    monkeypatch.setenv("DATABASE_URL", sqlite_demo.url)
    monkeypatch.setenv("JWT_SECRET", SECRET)
    monkeypatch.setenv("LEARNER_EXPORT_NOTICE_CONFIG", str(tmp_path / "notice.toml"))
    get_settings.cache_clear()
    assert serve.main(["--port", str(free_port())]) == 1
    error = capsys.readouterr().err
    assert "unknown keys: ['controler']" in error
    assert error.count("\n") == 1

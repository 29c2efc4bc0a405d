"""A throwaway S3 API for the test suite: moto's standalone server (`moto_server`, the server s3fs
tests itself against), run as a separate process on 127.0.0.1, like `tests/pg.py`'s PostgreSQL.

The code under test finds it the way it would find a real store: through the standard AWS
variables (`AWS_ENDPOINT_URL_S3`, fake keys, a region), never through the URL. moto keeps every
object in memory and forgets them when the server stops.
"""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from learner_export.processes import free_port, stop_process

MOTO_SERVER = Path(sys.executable).parent / "moto_server"
"""The locked moto's server, from this environment (never a system-wide one)."""

_buckets = itertools.count(1)


class S3Unavailable(RuntimeError):
    """moto's server is not installed here or would not start (the reason says which)."""


class S3Server:
    """One moto server for the whole test session."""

    def __init__(self) -> None:
        if not MOTO_SERVER.exists():
            raise S3Unavailable(f"no {MOTO_SERVER} (the dev extra installs moto[server])")
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._client: Any = None
        self._log = Path(tempfile.mkdtemp(prefix="learner-export-s3-")) / "moto.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        """The variables that point boto3/s3fs at this server: the standard AWS ones."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": "moto-test-key",
            "AWS_SECRET_ACCESS_KEY": "moto-test-secret",  # moto accepts any key
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self) -> None:
        for _ in range(5):  # another process may take the free port before the server does
            self.port = free_port()
            with self._log.open("ab") as log:
                self._process = subprocess.Popen(
                    [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(self.port)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_until_answering():
                return
            self.stop()
        raise S3Unavailable(f"moto_server would not start: {self._log.read_text()[-500:]}")

    def _wait_until_answering(self) -> bool:
        assert self._process is not None
        for _ in range(300):  # polled every 0.1 s; moto imports its backends lazily
            if self._process.poll() is not None:
                return False
            url = f"{self.endpoint}/moto-api/"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2):  # noqa: S310
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
        self._process = None

    def client(self) -> Any:
        """A boto3 S3 client of this server (one, made on first use; boto3's clients may be
        shared between threads): a reader independent of the code under test."""
        if self._client is None:
            import boto3

            env = self.environment()
            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                region_name=env["AWS_DEFAULT_REGION"],
            )
        return self._client

    def new_bucket(self) -> str:
        """A new, empty bucket's name."""
        name = f"archive-{next(_buckets)}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key in `bucket` under `prefix`, sorted (one listing, paged)."""
        paginator = self.client().get_paginator("list_objects_v2")
        return sorted(
            item["Key"]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        )

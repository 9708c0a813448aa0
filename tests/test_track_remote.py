"""Sharing over a real S3-compatible remote: moto's server on 127.0.0.1, dvc-s3 push from clone A, pull in B."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from track_fixtures import VENV_BIN, env, free_port, sh, tiny_project

pytest.importorskip("dvc_s3", reason="dvc-s3 is not installed")
pytest.importorskip("moto.server", reason="moto[server] is not installed")

AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture
def s3_endpoint(tmp_path):
    """moto's S3 server on a free 127.0.0.1 port with one empty bucket `birdclef`; stopped afterwards."""
    port = free_port()
    proc = subprocess.Popen(
        [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        cwd=tmp_path, env=env(AWS), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"moto_server exited {proc.returncode}"
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto_server did not answer in 60 s"
                time.sleep(0.3)
        import boto3

        s3 = boto3.client("s3", endpoint_url=url, **{k.lower(): v for k, v in AWS.items() if "KEY" in k},
                          region_name="us-east-1")  # fmt: skip
        s3.create_bucket(Bucket="birdclef")
        yield url, s3
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


@pytest.mark.integration
def test_push_from_one_clone_and_pull_in_another_reproduces_nothing(tmp_path, s3_endpoint):
    url, s3 = s3_endpoint
    a = tiny_project(tmp_path / "a")
    sh(["dvc", "remote", "add", "-d", "store", "s3://birdclef/dvcstore"], a)
    sh(["dvc", "remote", "modify", "store", "endpointurl", url], a)
    sh(["dvc", "repro", "-q"], a)
    sh(["git", "add", "-A"], a)
    sh(["git", "commit", "-qm", "results and remote"], a)
    sh(["dvc", "push"], a, AWS)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="birdclef").get("Contents", [])]
    assert len(keys) >= 3 and all(k.startswith("dvcstore/files/md5/") for k in keys)  # data dir, raw.txt, prep.txt

    b = tmp_path / "b"
    sh(["git", "clone", "-q", str(a), str(b)], tmp_path)
    assert not (b / "data").exists() and not (b / "build" / "prep.txt").exists()
    sh(["dvc", "pull"], b, AWS)
    assert (b / "data" / "raw.txt").read_text() == (a / "data" / "raw.txt").read_text()
    assert (b / "build" / "prep.txt").read_bytes() == (a / "build" / "prep.txt").read_bytes()
    assert json.loads(sh(["dvc", "status", "--json"], b).stdout) == {}
    repro = sh(["dvc", "repro"], b)
    assert "Running stage" not in repro.stdout
    assert "didn't change, skipping" in repro.stdout and "Data and pipelines are up to date" in repro.stdout

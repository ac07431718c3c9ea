"""The container packaging (issue 20): compose.yaml runs Bastion with PostgreSQL and
Redis; the image builds and answers `bastion --version` when a Docker engine is here."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_compose_runs_bastion_with_postgres_and_redis() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"bastion", "postgres", "redis"}
    bastion = services["bastion"]
    env = bastion["environment"]
    assert env["BASTION_DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in env["BASTION_DATABASE_URL"]
    assert env["BASTION_REDIS_URL"].startswith("redis://redis:")
    assert set(bastion["depends_on"]) == {"postgres", "redis"}
    assert all(s["healthcheck"] for n, s in services.items() if n != "bastion")
    assert any(v.startswith("bastion-data:/data") for v in bastion["volumes"])


def test_the_image_serves_the_installed_cli() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "BASTION_DATA_DIR=/data" in text
    assert "USER bastion" in text  # not root
    assert "bastion init && exec bastion serve" in text


def _engine() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return probe.returncode == 0


def test_the_image_builds() -> None:
    if not _engine():
        pytest.skip("no Docker engine here: start one (dockerd) to build the image")
    tag = "bastion:test-packaging"
    subprocess.run(["docker", "build", "-t", tag, str(ROOT)], check=True, timeout=1800)
    try:
        version = subprocess.run(
            ["docker", "run", "--rm", "--entrypoint", "bastion", tag, "--version"],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        assert version.stdout.startswith("bastion ")
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], check=False, timeout=300)

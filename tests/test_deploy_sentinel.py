"""deploy/ with Sentinel: the compose override and the Kubernetes overlay validate against their
schemas (as tests/test_deploy.py does for the base), and what they configure is a valid
Sentinel set-up for uphooks.settings."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.test_deploy import (
    DEPLOY,
    K8S,
    K8S_VERSIONS,
    _interpolate,
    compose,
    compose_schema,
    config_map,
)
from uphooks.settings import Settings

OVERLAY = K8S / "sentinel"
Doc = dict[str, Any]


def sentinel_compose() -> Doc:
    doc: Doc = yaml.safe_load(_interpolate((DEPLOY / "docker-compose.sentinel.yml").read_text()))
    return doc


def merged(base: Any, override: Any) -> Any:
    """How `docker compose -f a -f b` merges mappings (sequences are replaced, as for command)."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = merged(base[key], value) if key in base else value
        return out
    return copy.deepcopy(override)


def uphooks_services(doc: Doc) -> dict[str, Doc]:
    return {
        name: svc
        for name, svc in doc["services"].items()
        if svc.get("command", [""])[0] == "uphooks"
    }


def test_the_sentinel_compose_override_and_the_merged_file_are_valid_compose() -> None:
    validator = jsonschema.Draft202012Validator(compose_schema())
    validator.validate(sentinel_compose())
    validator.validate(merged(compose(), sentinel_compose()))


def test_every_pipeline_service_follows_the_sentinels_with_acknowledged_replication() -> None:
    doc = merged(compose(), sentinel_compose())
    services = uphooks_services(doc)
    assert {"ingress", "worker", "worker-slow"} <= set(services)
    for name, svc in services.items():
        env = {
            k.removeprefix("UPHOOKS_").lower(): v
            for k, v in svc["environment"].items()
            if v is not None  # ${VAR:-} left empty
        }
        settings = Settings(_env_file=None, **env)  # type: ignore[call-arg]
        target = settings.sentinel()
        assert target is not None, name
        assert len(target.sentinels) == 3 and target.master_name == "uphooks", name
        assert {h for h, _ in target.sentinels} <= set(doc["services"]), name
        assert settings.ack_replicas == 1
    replicas = [s for s in doc["services"].values() if "--replicaof" in s.get("command", [])]
    # ACK_REPLICAS=1 needs a replica left after a failover promoted one.
    assert len(replicas) >= 2
    for replica in replicas:
        command = replica["command"]
        assert command[command.index("--appendonly") + 1] == "yes"
        assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert doc["services"]["flower"]["profiles"] == ["flower"]  # not started by default


def test_a_broken_sentinel_override_is_caught_by_the_schema() -> None:
    broken = sentinel_compose()
    broken["services"]["sentinel-1"]["restrat"] = "always"
    with pytest.raises(jsonschema.ValidationError, match="restrat"):
        jsonschema.Draft202012Validator(compose_schema()).validate(broken)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_kubernetes_sentinel_manifests_are_valid_against_the_strict_schemas(
    version: str,
) -> None:
    docs = [d for d in yaml.safe_load_all((OVERLAY / "redis.yaml").read_text()) if d]
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Service", "StatefulSet"]
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)
    statefulset = next(d for d in docs if d["kind"] == "StatefulSet")
    broken = copy.deepcopy(statefulset)
    broken["spec"]["serviceNme"] = "redis"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_the_overlay_builds_on_the_base_and_its_config_is_a_valid_sentinel_setup() -> None:
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["..", "redis.yaml"]
    patch = yaml.safe_load((OVERLAY / "sentinel-config.yaml").read_text())
    assert patch["metadata"]["name"] == "uphooks-config"
    data = {**config_map(), **patch["data"]}
    values = {k.removeprefix("UPHOOKS_").lower(): v for k, v in data.items() if "UPHOOKS_" in k}
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, redis_url="redis://:pw@redis/0", **values
    )
    target = settings.sentinel()
    assert target is not None
    docs = [d for d in yaml.safe_load_all((OVERLAY / "redis.yaml").read_text()) if d]
    statefulset = next(d for d in docs if d["kind"] == "StatefulSet")
    pods = [f"redis-{i}.{statefulset['spec']['serviceName']}" for i in range(3)]
    assert statefulset["spec"]["replicas"] == 3
    assert [h for h, _ in target.sentinels] == pods
    assert target.password == "pw" and settings.ack_replicas == 1

"""Offline checks of the Kubernetes manifests (deploy/k8s) and systemd units (deploy/systemd).

Nothing here talks to a cluster or starts a service: the manifests are validated against the
OpenAPI schemas bundled in kubernetes-validate (strict: unknown fields fail), rendered with
`kubectl kustomize` when kubectl is installed, and cross-checked against the configuration
templates (deploy/*.example.toml) and quiver/src/config.rs; the units go through
`systemd-analyze verify` when it is installed. `make deploy-test` runs this file.
"""

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SYSTEMD = ROOT / "deploy" / "systemd"
# The oldest and newest releases the manifests promise to fit, and kubectl's here.
K8S_VERSIONS = ["1.28.0", "1.32.0", kubernetes_validate.latest_version()]
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_resources():
    return {(d["kind"], d["metadata"]["name"]): d for p in MANIFESTS for d in docs(p)}


def resource(kind, name):
    return all_resources()[(kind, name)]


def example_keys(path):
    """Every key the commented template names: its TOML keys (tables as `tls.dir`, arrays of
    tables as `initial_members.id`) and the optional keys shown commented out (`#   region = `)."""
    text = path.read_text()
    keys = set(flatten(tomllib.loads(text)))
    keys |= set(re.findall(r"^#\s+([a-z_]+) = ", text, re.M))
    return keys


def flatten(table, prefix=""):
    for key, value in table.items():
        if isinstance(value, dict):
            yield from flatten(value, f"{prefix}{key}.")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                yield from flatten(item, f"{prefix}{key}.")
        else:
            yield prefix + key


def env_keys(struct):
    """ENV_KEYS of CoordinatorConfig / NodeConfig in quiver/src/config.rs."""
    source = (ROOT / "quiver" / "src" / "config.rs").read_text()
    block = re.search(rf"impl {struct} \{{\s*pub const ENV_KEYS[^=]*= &\[(.*?)\];", source, re.S)
    assert block, f"ENV_KEYS of {struct} not found in config.rs"
    return set(re.findall(r'"([a-z_]+)"', block.group(1)))


def expand(value, env):
    """Kubernetes' $(VAR) expansion in env values and args."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def pod_view(statefulset, ordinal):
    """What pod `ordinal` of a StatefulSet sees: its name, expanded env, args and mounts."""
    pod_name = f"{statefulset['metadata']['name']}-{ordinal}"
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    env = {}
    for var in container["env"]:
        if "valueFrom" in var:
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            env[var["name"]] = pod_name
        else:
            env[var["name"]] = expand(var["value"], env)
    args = [expand(a, env) for a in container["args"]]
    return pod_name, container, env, args


def mounted_file(statefulset, container, path, pod_name):
    """The content of file `path` inside the pod, from its ConfigMap or (template) Secret."""
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    for mount in container["volumeMounts"]:
        mount_path = mount["mountPath"]
        if mount.get("subPath") and path == mount_path:
            key = mount["subPath"]
        elif not mount.get("subPath") and path.startswith(mount_path + "/"):
            key = path[len(mount_path) + 1:]
        else:
            continue
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            return resource("ConfigMap", volume["configMap"]["name"])["data"][key]
        if "secret" in volume:
            return resource("Secret", volume["secret"]["secretName"])["stringData"][key]
    raise AssertionError(f"{pod_name}: nothing mounted at {path}")


def effective_config(statefulset, ordinal, struct):
    """The pod's configuration as quiver builds it: --config files in order, later ones
    overriding, then QUIVER_* variables that name a key of ENV_KEYS."""
    pod_name, container, env, args = pod_view(statefulset, ordinal)
    config = {}
    files = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
    for path in files:
        text = mounted_file(statefulset, container, path, pod_name)
        if path.endswith("/join-token.toml") and "<" in text:  # the template's placeholder
            text = 'join_token = "0123456789abcdef0123456789abcdef"\n'
        merge(config, tomllib.loads(text))
    keys = env_keys(struct)
    for name, value in env.items():
        if not name.startswith("QUIVER_"):
            continue
        key = name[len("QUIVER_"):].lower()
        assert key in keys, f"{pod_name}: {name} is not read by quiver (ENV_KEYS of {struct})"
        table, _, leaf = key.rpartition("__")
        (config.setdefault(table, {}) if table else config)[leaf] = value
    return pod_name, container, config


def merge(into, layer):
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


def port(addr):
    return int(addr.rsplit(":", 1)[1])


def container_port(container, name):
    (p,) = [p for p in container["ports"] if p["name"] == name]
    return p["containerPort"], p["protocol"]


def service_ports(name):
    return {(p["port"], p["protocol"]) for p in resource("Service", name)["spec"]["ports"]}


# --- schemas ---------------------------------------------------------------------------------

@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_passes_strict_schema_validation(path, version):
    for doc in docs(path):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']} on {version}: {e.message} at {list(e.path)}")


def test_strict_validation_rejects_an_unknown_field():
    # The validator itself: a misspelt field must fail, or the test above proves nothing.
    statefulset = resource("StatefulSet", "quiver-node")
    broken = {**statefulset, "spec": {**statefulset["spec"], "serviceNam": "quiver-node"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_kustomization_renders_every_manifest_but_the_secret_template():
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not installed: `kubectl kustomize deploy/k8s` not checked")
    out = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
    for doc in rendered:
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
    names = {(d["kind"], d["metadata"]["name"]) for d in rendered}
    assert names == set(all_resources()) - {("Secret", "quiver-tls")}
    assert all("namespace" not in d["metadata"] for d in rendered), "the set is namespace-agnostic"


# --- the shape the issue asks for ------------------------------------------------------------

def test_services_statefulsets_and_budgets():
    for role in ("coordinator", "node"):
        name = f"quiver-{role}"
        service = resource("Service", name)["spec"]
        assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is True
        statefulset = resource("StatefulSet", name)["spec"]
        assert statefulset["serviceName"] == name and statefulset["replicas"] == 3
        assert statefulset["podManagementPolicy"] == "Parallel"
        assert statefulset["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
        assert resource("PodDisruptionBudget", name)["spec"]["maxUnavailable"] == 1
        assert resource("PodDisruptionBudget", name)["spec"]["selector"] == statefulset["selector"]
        pod = statefulset["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert set(container["resources"]) == {"requests", "limits"}
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    client = resource("Service", "quiver")["spec"]
    assert client["selector"] == resource("StatefulSet", "quiver-coordinator")["spec"]["selector"]["matchLabels"]
    assert [(p["port"], p["protocol"]) for p in client["ports"]] == [(8277, "TCP")]


def test_image_ports_and_probes_match_the_compose_deployment():
    compose = yaml.safe_load((ROOT / "deploy" / "compose" / "docker-compose.yml").read_text())
    health = {
        role: compose[f"x-{role}"]["healthcheck"]["test"][-1] for role in ("coordinator", "node")
    }
    for role in ("coordinator", "node"):
        _, container, config = effective_config(resource("StatefulSet", f"quiver-{role}"), 0,
                                                "CoordinatorConfig" if role == "coordinator" else "NodeConfig")
        assert container["image"].split(":")[0] == compose["x-quiver"]["image"].split(":")[0]
        url = f"http://127.0.0.1:{container_port(container, 'http')[0]}/ready"
        assert url == health[role], "readiness probe differs from the compose health check"
        assert container["args"][0] == compose[f"x-{role}"]["command"][0]


# --- the configuration the pods actually get -------------------------------------------------

@pytest.mark.parametrize("role,example", [("coordinator", "coordinator.example.toml"), ("node", "node.example.toml")])
def test_configmap_toml_parses_and_names_only_known_keys(role, example):
    data = resource("ConfigMap", "quiver-config")["data"]
    keys = set(flatten(tomllib.loads(data[f"{role}.toml"])))
    known = example_keys(ROOT / "deploy" / example)
    assert keys <= known, f"{role}.toml names keys the template does not: {sorted(keys - known)}"
    # The keys the config structs have must all appear in the templates, too (both come from
    # config.rs, whose structs deny unknown fields).
    struct = "CoordinatorConfig" if role == "coordinator" else "NodeConfig"
    assert {k.replace("__", ".") for k in env_keys(struct)} <= known


def test_coordinator_pods_get_distinct_positive_ids_matching_initial_members():
    statefulset = resource("StatefulSet", "quiver-coordinator")
    ids_map = resource("ConfigMap", "quiver-coordinator-ids")["data"]
    seen = {}
    for ordinal in range(statefulset["spec"]["replicas"]):
        pod_name, container, config = effective_config(statefulset, ordinal, "CoordinatorConfig")
        assert set(tomllib.loads(ids_map[f"{pod_name}.toml"])) == {"id"}
        assert config["id"] == ordinal + 1
        seen[config["id"]] = pod_name
        members = {m["id"]: m for m in config["initial_members"]}
        assert members[config["id"]]["cluster_addr"] == config["advertise"], pod_name
        assert config["advertise"] == f"{pod_name}.quiver-coordinator:{port(config['cluster_listen'])}"
        assert members[config["id"]]["http_addr"] == f"{pod_name}.quiver-coordinator:{port(config['http_listen'])}"
        assert config["tls"]["name"] == pod_name
        assert len(config["join_token"]) >= 16
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert config["data_dir"] in mounts and config["tls"]["dir"] in mounts
        assert container_port(container, "cluster") == (port(config["cluster_listen"]), "UDP")
        assert container_port(container, "http") == (port(config["http_listen"]), "TCP")
        assert set(container["ports"][i]["containerPort"] for i in range(2)) <= {p for p, _ in service_ports("quiver-coordinator")}
    assert sorted(seen) == sorted(members), "every initial member is a pod and every pod a member"
    assert set(ids_map) == {f"{p}.toml" for p in seen.values()}


def test_node_pods_reach_every_coordinator_and_advertise_their_stable_names():
    coordinators = resource("StatefulSet", "quiver-coordinator")
    _, _, coordinator = effective_config(coordinators, 0, "CoordinatorConfig")
    statefulset = resource("StatefulSet", "quiver-node")
    names = set()
    for ordinal in range(statefulset["spec"]["replicas"]):
        pod_name, container, config = effective_config(statefulset, ordinal, "NodeConfig")
        names.add(config["id"])
        assert config["id"] == pod_name == config["tls"]["name"]
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", config["id"])
        assert config["advertise"] == f"{pod_name}.quiver-node:{port(config['listen'])}"
        assert config["coordinators"] == [m["cluster_addr"] for m in coordinator["initial_members"]]
        assert container_port(container, "rpc") == (port(config["listen"]), "UDP")
        assert container_port(container, "http") == (port(config["http_listen"]), "TCP")
        assert {(port(config["listen"]), "UDP"), (port(config["http_listen"]), "TCP")} == service_ports("quiver-node")
        assert len(config["join_token"]) >= 16
    assert len(names) == statefulset["spec"]["replicas"]


def test_secret_template_holds_a_certificate_for_every_pod():
    secret = resource("Secret", "quiver-tls")["stringData"]
    pods = [f"quiver-{role}-{i}" for role in ("coordinator", "node") for i in range(3)] + ["admin"]
    expected = {"ca.pem", "join-token.toml"} | {f"{p}.{ext}" for p in pods for ext in ("pem", "key")}
    assert set(secret) == expected
    assert "ca.key" not in secret, "the CA key stays offline"
    text = (K8S / "secret.example.yaml").read_text()
    assert "kubectl -n quiver create secret generic quiver-tls" in text
    assert "quiver cert init" in text


# --- systemd ---------------------------------------------------------------------------------

UNITS = {
    "quiver-coordinator.service": "/usr/local/bin/quiver coordinator --config /etc/quiver/coordinator.toml",
    "quiver-node.service": "/usr/local/bin/quiver node --config /etc/quiver/node.toml",
}


def unit_settings(path):
    settings = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_unit_settings(name):
    settings = unit_settings(SYSTEMD / name)
    assert settings["ExecStart"] == [UNITS[name]]
    for key, value in {
        "User": "quiver", "Restart": "on-failure", "StateDirectory": "quiver",
        "ReadWritePaths": "/var/lib/quiver", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "LimitNOFILE": "65536",
    }.items():
        assert settings.get(key) == [value], f"{name}: {key}"
    # The example's data_dir must be writable under ProtectSystem=strict.
    example = tomllib.loads((ROOT / "deploy" / (name.split("-")[1].split(".")[0] + ".example.toml")).read_text())
    assert example["data_dir"].startswith("/var/lib/quiver/")


def test_systemd_units_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed: the unit files were not verified")
    # verify insists that ExecStart's binary exists: point copies of the units at a stub.
    stub = tmp_path / "quiver"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    copies = []
    for name in sorted(UNITS):
        copy = tmp_path / name
        copy.write_text((SYSTEMD / name).read_text().replace("/usr/local/bin/quiver", str(stub)))
        copies.append(str(copy))
    out = subprocess.run([analyze, "verify", *copies], capture_output=True, text=True, timeout=60)
    # Unknown or misspelt settings are only warnings (exit 0): any line about our units fails.
    complaints = [l for l in (out.stdout + out.stderr).splitlines() if "quiver" in l]
    assert out.returncode == 0 and not complaints, out.stdout + out.stderr


def test_systemd_analyze_verify_catches_a_misspelt_setting(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "quiver-typo.service"
    unit.write_text("[Service]\nExecStart=/bin/true\nProtectSytem=strict\n")
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "ProtectSytem" in out.stdout + out.stderr

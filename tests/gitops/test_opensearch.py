"""OpenSearch: the retention of the log indices is a policy in Git, tied to what Fluent Bit writes; its
security is its own (no demo configuration), Fluent Bit verifies its certificate and may only write logs."""

from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess

import yaml

from tests.gitops.rendered import PLATFORM, fluent_bit_pipeline, render, values
from tests.gitops.upstream import vendored
from tests.kube.manifests import one

POLICY = PLATFORM / "opensearch" / "ism-policy-kube.json"


def test_every_daily_index_fluent_bit_writes_is_deleted_after_14_days():
    policy = json.loads(POLICY.read_text(encoding="utf-8"))["policy"]
    (output,) = fluent_bit_pipeline()["pipeline"]["outputs"]
    index = f"{output['logstash_prefix']}-2026.12.06"  # logstash_format: <prefix>-YYYY.MM.DD
    (template,) = policy["ism_template"]
    assert any(fnmatch.fnmatchcase(index, pattern) for pattern in template["index_patterns"])

    states = {state["name"]: state for state in policy["states"]}
    state, age = policy["default_state"], None
    for _ in range(len(states)):
        (transition, *_) = states[state]["transitions"] or [None]
        if transition is None:
            break
        age = transition["conditions"]["min_index_age"]
        state = transition["state_name"]
    assert states[state]["actions"] == [{"delete": {}}]
    assert age == "14d"


# ---- Security: no demo configuration, certificates from the platform's CA, Fluent Bit a writer only.

WRITER_ACTIONS = {"create_index", "write", "indices:data/write/bulk"}


def opensearch_values() -> dict:
    merged: dict = {}
    for layer in values("opensearch", "ha"):
        merged.update(layer)
    return merged


def security_files(name: str) -> dict:
    return yaml.safe_load((PLATFORM / "opensearch" / "security" / name).read_text(encoding="utf-8"))


def certificates(folder: str) -> dict[str, dict]:
    """secretName -> Certificate, for the Certificates a kustomization folder renders."""
    return {c["spec"]["secretName"]: c for c in render(folder) if c["kind"] == "Certificate"}


def opensearch_yml() -> dict:
    return yaml.safe_load(opensearch_values()["config"]["opensearch.yml"])


def test_opensearch_installs_no_demo_security_configuration():
    settings = opensearch_values()
    env = {e["name"]: e for e in settings["extraEnvs"]}
    assert env["DISABLE_INSTALL_DEMO_CONFIG"]["value"] == "true"
    assert "OPENSEARCH_INITIAL_ADMIN_PASSWORD" not in env  # read by the demo installer only
    config = opensearch_yml()
    assert config.get("plugins.security.allow_unsafe_democertificates") is not True
    assert config["plugins.security.ssl.http.enabled"] is True
    assert config["plugins.security.authcz.admin_dn"] != ["CN=kirk,OU=client,O=client,L=test,C=de"]


def test_every_key_of_the_opensearch_values_is_one_the_pinned_chart_reads():
    chart = yaml.safe_load(vendored("opensearch", "values.yaml"))
    for layer in values("opensearch", "ha"):
        assert set(layer) <= set(chart), set(layer) - set(chart)
    security = opensearch_values()["securityConfig"]
    assert set(security) <= set(chart["securityConfig"])
    for mount in opensearch_values()["secretMounts"]:
        assert set(mount) <= {"name", "secretName", "path", "subPath", "defaultMode"}


def test_opensearch_serves_the_certificates_of_the_platform_ca_on_http_and_transport():
    config = opensearch_yml()
    mounts = {m["path"]: m["secretName"] for m in opensearch_values()["secretMounts"]}
    issued = certificates("platform/opensearch/security")
    home = "/usr/share/opensearch/config"
    for layer in ("http", "transport"):
        for key in ("pemcert_filepath", "pemkey_filepath", "pemtrustedcas_filepath"):
            folder, _, name = f"{home}/{config[f'plugins.security.ssl.{layer}.{key}']}".rpartition("/")
            assert name in {"tls.crt", "tls.key", "ca.crt"}  # the keys cert-manager writes
            assert mounts[folder] in issued, (layer, key)
    node = issued[mounts[f"{home}/certs/node"]]["spec"]
    assert node["privateKey"]["encoding"] == "PKCS8"  # the security plugin reads no other key format
    assert config["plugins.security.nodes_dn"] == [f"CN={node['commonName']}"]
    admin = issued[mounts[f"{home}/certs/admin"]]["spec"]
    assert config["plugins.security.authcz.admin_dn"] == [f"CN={admin['commonName']}"]
    assert node["issuerRef"]["name"] == admin["issuerRef"]["name"] == "platform-ca"


def test_fluent_bit_verifies_the_certificate_of_the_host_it_writes_to():
    (output,) = fluent_bit_pipeline()["pipeline"]["outputs"]
    assert output["tls"] is True
    assert output["tls.verify"] is True
    (settings,) = values("fluent-bit")
    mounts = {m["name"]: m["mountPath"] for m in settings["daemonSetVolumeMounts"]}
    by_mount = {
        f"{mounts[v['name']]}/{item['path']}": (v["secret"]["secretName"], item["key"])
        for v in settings["daemonSetVolumes"]
        if "secret" in v
        for item in v["secret"]["items"]
    }
    secret, key = by_mount[output["tls.ca_file"]]
    assert key == "ca.crt"
    fluent_bit_certificate = certificates("logging")[secret]["spec"]
    served = {m["path"]: m["secretName"] for m in opensearch_values()["secretMounts"]}
    node = certificates("platform/opensearch/security")[served["/usr/share/opensearch/config/certs/node"]]
    # Same CA on both sides, and OpenSearch's certificate names the host Fluent Bit connects to.
    assert fluent_bit_certificate["issuerRef"] == node["spec"]["issuerRef"]
    assert output["host"] in node["spec"]["dnsNames"]


def test_the_fluent_bit_user_may_only_create_and_write_its_log_indices(platform_secrets):
    user = platform_secrets["logging", "opensearch-credentials"]["OPENSEARCH_USER"]
    mapping = security_files("roles_mapping.yml")
    roles = {name for name, entry in mapping.items() if user in entry.get("users", [])}
    assert roles == {"fluent_bit_writer"}
    assert user not in mapping["all_access"].get("users", [])
    role = security_files("roles.yml")["fluent_bit_writer"]
    assert set(role.get("cluster_permissions", [])) <= WRITER_ACTIONS
    (output,) = fluent_bit_pipeline()["pipeline"]["outputs"]
    index = f"{output['logstash_prefix']}-2026.12.06"
    for permission in role["index_permissions"]:
        assert set(permission["allowed_actions"]) <= WRITER_ACTIONS
        assert all(fnmatch.fnmatchcase(index, p) for p in permission["index_patterns"])
        assert not any(fnmatch.fnmatchcase(".opendistro_security", p) for p in permission["index_patterns"])


def test_the_users_file_holds_the_hashes_of_the_passwords_the_script_made(platform_secrets, tmp_path):
    users = yaml.safe_load(platform_secrets["opensearch", "opensearch-internal-users"]["internal_users.yml"])
    login = platform_secrets["logging", "opensearch-credentials"]
    passwords = {
        "admin": platform_secrets["opensearch", "opensearch-admin"]["password"],
        login["OPENSEARCH_USER"]: login["OPENSEARCH_PASSWORD"],
    }
    assert set(users) == {"_meta", *passwords}
    htpasswd = shutil.which("htpasswd")
    assert htpasswd, "htpasswd (apache2-utils) is needed by create-secrets-platform.sh"
    for name, password in passwords.items():
        assert users[name]["hash"].startswith("$2")  # bcrypt, what the security plugin checks
        (tmp_path / "users").write_text(f"{name}:{users[name]['hash']}\n")
        right = subprocess.run(
            [htpasswd, "-vi", str(tmp_path / "users"), name],
            input=password,
            text=True,
            capture_output=True,
            check=False,
        )
        wrong = subprocess.run(
            [htpasswd, "-vi", str(tmp_path / "users"), name],
            input=password + "x",
            text=True,
            capture_output=True,
            check=False,
        )
        assert (right.returncode, wrong.returncode) == (0, 3), right.stderr


def test_every_secret_opensearch_and_fluent_bit_read_is_rendered_issued_or_made_by_the_script(
    platform_secrets,
):
    def made(namespace: str, folder: str) -> set[str]:
        rendered = render(folder)
        return (
            {o["metadata"]["name"] for o in rendered if o["kind"] == "Secret"}
            | set(certificates(folder))
            | {name for ns, name in platform_secrets if ns == namespace}
        )

    settings = opensearch_values()
    security = settings["securityConfig"]
    read = {m["secretName"] for m in settings["secretMounts"]}
    read |= {security[k] for k in ("internalUsersSecret", "rolesSecret", "rolesMappingSecret")}
    assert read <= made("opensearch", "platform/opensearch/security")
    (bit,) = values("fluent-bit")
    read = {v["secret"]["secretName"] for v in bit["daemonSetVolumes"] if "secret" in v}
    read |= {e["secretRef"]["name"] for e in bit["envFrom"]}
    assert read <= made("logging", "logging")
    # The files the chart mounts from the roles Secret are in it.
    config = one(render("platform/opensearch/security"), "Secret", security["rolesSecret"])
    assert {"roles.yml", "roles_mapping.yml"} <= set(config["data"])

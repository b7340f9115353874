"""Fluent Bit's pipeline (kube_config/logging/fluent-bit.yaml) over log lines of a real gunicorn run.

Fluent Bit itself cannot run here. What is reproduced in Python, from the committed configuration:
- the container runtime's CRI line format and the split the built-in `cri` parser makes of it (its documented
  regular expression: time, stream, partial flag, log);
- the tag the tail input gives a file and the `match` pattern that sends the API's namespace to the parser;
- the `flask-api-json` parser: JSON object, `time_key`, `time_format` (Fluent Bit's %L is the fraction of a
  second), `time_keep`, and the parser filter's `reserve_data` (other keys kept beside the parsed ones).
Not reproduced: the kubernetes filter (it asks the API server for pod metadata), the joining of partial (P)
lines, environment variable substitution, the OpenSearch output, and whether Fluent Bit 5.1 accepts every
key of the file (no Fluent Bit binary is installable from the registries reachable here).
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import re

import requests

from tests.conftest import FAST_ARGON2
from tests.gitops.rendered import LOGGING, fluent_bit_pipeline, values
from tests.gitops.upstream import vendored
from tests.kube.manifests import load_documents

# Fluent Bit's built-in `cri` parser, read from its source at the pinned version (tests/gitops/upstream).
CRI_SOURCE = vendored("fluent-bit", "flb_ml_parser_cri.c")
CRI_LINE = re.compile(
    re.search(r'#define FLB_ML_CRI_REGEX\s*\\\s*"(.*)"', CRI_SOURCE).group(1).replace("(?<", "(?P<")
)
CRI_TIME_KEY = re.search(r'"(\w+)",\s*/\* time key \*/', CRI_SOURCE).group(1)
CRI_TIME_KEEP = re.search(r"FLB_(TRUE|FALSE),\s*/\* time keep \*/", CRI_SOURCE).group(1) == "TRUE"
API_LOG_FILE = (
    "/var/log/containers/flask-api-7c9d8f6b5d-x2x4k_flask-api_flask-api-"
    "4f1c2b3a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708.log"
)
UNSET = dict.fromkeys(
    ("DATABASE_URL", "SECRET_KEY", "METRICS_PORT", "PROMETHEUS_MULTIPROC_DIR", "CORS_ORIGINS")
)


def api_parser() -> dict:
    (parser_filter,) = [f for f in fluent_bit_pipeline()["pipeline"]["filters"] if f["name"] == "parser"]
    (parser,) = [p for p in fluent_bit_pipeline()["parsers"] if p["name"] == parser_filter["parser"]]
    return parser_filter | {"rule": parser}


def tail_tag(path: str) -> str:
    """The tag of a tailed file: the input's tag with its * replaced by the path, slashes turned to dots."""
    (tail,) = fluent_bit_pipeline()["pipeline"]["inputs"]
    return tail["tag"].replace("*", path.replace("/", ".").lstrip("."))


def strptime_fluent_bit(value: str, time_format: str) -> datetime.datetime:
    """Fluent Bit's strptime, where %L is the fraction of a second (Python's %f)."""
    # The format ends in a literal Z: the time is UTC, which Fluent Bit assumes as well.
    return datetime.datetime.strptime(value, time_format.replace("%L", "%f")).replace(tzinfo=datetime.UTC)


Record = list[tuple[str, object]]


def cri_record(line: str) -> tuple[datetime.datetime, Record]:
    """One stdout line as the kubelet writes it, split by the `cri` parser: (time, key-value pairs)."""
    cri = f"2026-11-30T12:00:00.123456789Z stdout F {line}"
    pairs: Record = list(CRI_LINE.fullmatch(cri).groupdict().items())
    runtime_time = datetime.datetime.fromisoformat(dict(pairs)[CRI_TIME_KEY][:26] + "+00:00")
    if not CRI_TIME_KEEP:
        pairs = [(k, v) for k, v in pairs if k != CRI_TIME_KEY]
    # The kubernetes filter (merge_log off) appends one key, the pod's metadata.
    return runtime_time, [*pairs, ("kubernetes", {"namespace_name": "flask-api"})]


def parser_filter(timestamp: datetime.datetime, record: Record) -> tuple[datetime.datetime, Record]:
    """The parser filter over one record, as plugins/filter_parser/filter_parser.c and src/flb_parser_json.c
    of Fluent Bit 5.1.1 do it: the JSON object's keys in their order (the time key dropped unless time_keep,
    and only when its time parsed), then with reserve_data every original key but key_name (kept too with
    preserve_key), appended without looking for the same key among the parsed ones. A value that is not a
    JSON object leaves the record as it was."""
    settings = api_parser()
    rule = settings["rule"]
    value = dict(record).get(settings["key_name"])
    try:
        parsed = json.loads(value, object_pairs_hook=list) if isinstance(value, str) else None
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, list):
        return timestamp, record
    times = [v for k, v in parsed if k == rule["time_key"]]
    if times:
        try:
            timestamp = strptime_fluent_bit(times[0], rule["time_format"])
        except ValueError:
            pass
        else:
            if rule.get("time_keep") is not True:
                at = [k for k, _ in parsed].index(rule["time_key"])
                parsed = parsed[:at] + parsed[at + 1 :]
    kept: Record = []
    if settings.get("reserve_data") is True:
        preserve = settings.get("preserve_key") is True
        kept = [(k, v) for k, v in record if k != settings["key_name"] or preserve]
    return timestamp, parsed + kept


def through_pipeline_pairs(line: str) -> tuple[datetime.datetime, Record]:
    """One stdout line of the API through the cri parser, the kubernetes filter and the parser filter."""
    return parser_filter(*cri_record(line))


def through_pipeline(line: str) -> dict:
    """The record of one line as a document, its time as @timestamp; a key twice fails the test (OpenSearch
    refuses such a document and the output retries, then drops, the whole chunk)."""
    timestamp, pairs = through_pipeline_pairs(line)
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"keys twice in one record: {keys}"
    return {**dict(pairs), "@timestamp": timestamp}


def api_log_lines(gunicorn_server, tmp_path) -> list[str]:
    """The JSON lines of a real gunicorn run of the API: startup, access lines of a 200 and a 404."""
    env = {**UNSET, **FAST_ARGON2, "DATA_FILE_PATH": str(tmp_path / "data.json")}
    server = gunicorn_server(env, workers=1)
    assert requests.get(f"{server.url}/healthz", timeout=30).status_code == 200
    assert requests.get(f"{server.url}/nowhere", timeout=30).status_code == 404
    assert server.stop() == 0
    return [line for line in server.output().splitlines() if line.startswith("{")]


def test_every_record_of_a_real_run_has_exactly_one_time_key(gunicorn_server, tmp_path):
    lines = api_log_lines(gunicorn_server, tmp_path)
    assert any('"logger": "access"' in line or '"logger":"access"' in line for line in lines)
    for line in [*lines, "LOG:  database system is ready to accept connections"]:
        _, pairs = through_pipeline_pairs(line)
        assert [k for k, _ in pairs].count("time") == 1, pairs


def test_a_json_line_takes_the_time_the_api_wrote_not_the_runtimes(gunicorn_server, tmp_path):
    (line, *_) = api_log_lines(gunicorn_server, tmp_path)
    runtime_time, _ = cri_record(line)
    timestamp, _ = through_pipeline_pairs(line)
    assert timestamp != runtime_time
    assert timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z") == json.loads(line)["time"]


def test_the_api_containers_tag_reaches_the_json_parser_and_other_namespaces_do_not():
    match = api_parser()["match"]
    assert fnmatch.fnmatchcase(tail_tag(API_LOG_FILE), match)
    other = API_LOG_FILE.replace("_flask-api_", "_kube-system_")
    assert not fnmatch.fnmatchcase(tail_tag(other), match)


def test_real_access_lines_keep_request_id_level_route_and_status_as_fields(gunicorn_server, tmp_path):
    env = {**UNSET, **FAST_ARGON2, "DATA_FILE_PATH": str(tmp_path / "data.json")}
    server = gunicorn_server(env, workers=2)
    assert (
        requests.get(f"{server.url}/healthz", headers={"X-Request-ID": "trace-0001"}, timeout=30).status_code
        == 200
    )
    assert (
        requests.get(f"{server.url}/nowhere", headers={"X-Request-ID": "trace-0002"}, timeout=30).status_code
        == 404
    )
    assert server.stop() == 0

    lines = [line for line in server.output().splitlines() if line.startswith("{")]
    records = [through_pipeline(line) for line in lines]
    by_id = {r.get("request_id"): r for r in records if r.get("logger") == "access"}

    healthz, missing = by_id["trace-0001"], by_id["trace-0002"]
    assert (healthz["level"], healthz["route"], healthz["status"], healthz["method"]) == (
        "info",
        "/healthz",
        200,
        "GET",
    )
    assert (missing["level"], missing["status"], missing["path"]) == ("info", 404, "/nowhere")
    assert healthz["stream"] == "stdout"
    assert healthz["@timestamp"].year >= 2026


def test_every_json_line_of_a_real_run_parses_with_its_own_time(gunicorn_server, tmp_path):
    env = {**UNSET, **FAST_ARGON2, "DATA_FILE_PATH": str(tmp_path / "data.json")}
    server = gunicorn_server(env, workers=1)
    requests.get(f"{server.url}/readyz", timeout=30)
    assert server.stop() == 0

    lines = [line for line in server.output().splitlines() if line.startswith("{")]
    assert len(lines) >= 2
    for line in lines:
        record = through_pipeline(line)
        assert record["level"] in {"debug", "info", "warning", "error", "critical"}
        assert record["@timestamp"].tzinfo is datetime.UTC


def test_the_chart_runs_the_committed_yaml_configuration():
    (settings,) = values("fluent-bit")
    (config_map,) = load_documents(LOGGING / "kustomization.yaml")[0]["configMapGenerator"]
    assert settings["existingConfigMap"] == config_map["name"] == "fluent-bit-config"
    assert config_map["files"] == ["fluent-bit.yaml"]
    assert "--config=/fluent-bit/etc/conf/fluent-bit.yaml" in settings["args"]


def test_fluent_bit_runs_without_capabilities_and_reads_the_node_logs_read_only():
    (settings,) = values("fluent-bit")
    context = settings["securityContext"]
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert settings["podSecurityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    mounts = {m["name"]: m for m in settings["daemonSetVolumeMounts"]}
    assert mounts["varlog"]["readOnly"] is True
    (tail,) = fluent_bit_pipeline()["pipeline"]["inputs"]
    assert tail["db"].startswith(mounts["state"]["mountPath"] + "/")


def test_logs_go_to_the_opensearch_service_of_the_chart_with_a_login_from_the_environment(platform_secrets):
    (output,) = fluent_bit_pipeline()["pipeline"]["outputs"]
    assert output["name"] == "opensearch"
    assert output["host"] == "opensearch-cluster-master.opensearch.svc"
    assert output["port"] == 9200
    assert output["tls"] is True
    assert (output["http_user"], output["http_passwd"]) == ("${OPENSEARCH_USER}", "${OPENSEARCH_PASSWORD}")
    (settings,) = values("fluent-bit")
    assert settings["envFrom"] == [{"secretRef": {"name": "opensearch-credentials"}}]
    login = platform_secrets["logging", "opensearch-credentials"]
    # Its own user, not OpenSearch's administrator, with a password of its own.
    assert login["OPENSEARCH_USER"] == "fluentbit"
    assert login["OPENSEARCH_PASSWORD"] != platform_secrets["opensearch", "opensearch-admin"]["password"]

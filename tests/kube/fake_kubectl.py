#!/usr/bin/env python3
"""A stand-in for ``kubectl`` keeping Secrets as JSON files: runs the secret scripts without a cluster.

No Kubernetes API server runs here, so this stands in for one: it implements only what
kube_config/scripts/*.sh call (namespaces, ``get``/``create``/``apply``/``label`` of Secrets) with kubectl's
exit codes and its refusal to create a Secret that exists. State lives in $FAKE_KUBECTL_STATE.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

STATE = Path(os.environ["FAKE_KUBECTL_STATE"])


def secret_path(namespace: str, name: str) -> Path:
    return STATE / namespace / f"{name}.json"


def fail(message: str) -> int:
    print(f"Error from server: {message}", file=sys.stderr)
    return 1


def namespace_command(verb: str, name: str) -> int:
    folder = STATE / name
    if verb == "get":
        return 0 if folder.is_dir() else fail(f'namespaces "{name}" not found')
    folder.mkdir(parents=True)
    return 0


def get_secrets(namespace: str, rest: list[str]) -> int:
    """``get secret NAME...`` (fails when any is missing) or ``get secret NAME -o jsonpath={.data.KEY}``."""
    if "-o" in rest:
        name, key = rest[0], rest[rest.index("-o") + 1].removeprefix("jsonpath={.data.").removesuffix("}")
        if not secret_path(namespace, name).is_file():
            return fail(f'secrets "{name}" not found')
        print(json.loads(secret_path(namespace, name).read_text()).get(key, ""), end="")
        return 0
    missing = [name for name in rest if not secret_path(namespace, name).is_file()]
    return fail(f'secrets "{missing[0]}" not found') if missing else 0


def create_secret(namespace: str, name: str, options: list[str]) -> int:
    data = {}
    for option in options:
        for prefix in ("--from-literal=", "--from-file="):
            if option.startswith(prefix):
                key, _, value = option.removeprefix(prefix).partition("=")
                raw = value.encode() if prefix == "--from-literal=" else Path(value).read_bytes()
                data[key] = base64.b64encode(raw).decode()
    if "--dry-run=client" in options:
        print(
            json.dumps({"kind": "Secret", "metadata": {"name": name, "namespace": namespace}, "data": data})
        )
        return 0
    if secret_path(namespace, name).is_file():
        return fail(f'secrets "{name}" already exists')
    secret_path(namespace, name).write_text(json.dumps(data))
    return 0


def apply(namespace: str) -> int:
    manifest = json.loads(sys.stdin.read())
    metadata = manifest["metadata"]
    secret_path(metadata.get("namespace", namespace), metadata["name"]).write_text(
        json.dumps(manifest["data"])
    )
    return 0


def main(argv: list[str]) -> int:
    namespace, args = "default", []
    words = iter(argv)
    for word in words:
        if word in ("-n", "--namespace"):
            namespace = next(words)
        else:
            args.append(word)
    verb, rest = args[0], args[1:]
    if verb in ("get", "create") and rest[0] == "namespace":
        return namespace_command(verb, rest[1])
    if verb == "get" and rest[0] == "secret":
        return get_secrets(namespace, rest[1:])
    if verb == "create" and rest[:2] == ["secret", "generic"]:
        return create_secret(namespace, rest[2], rest[3:])
    if verb == "apply":
        return apply(namespace)
    if verb == "label" and "secret" in rest:
        names = [a for a in rest[rest.index("secret") + 1 :] if "=" not in a and not a.startswith("-")]
        return get_secrets(namespace, names)
    return fail(f"fake kubectl: unsupported command {argv}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

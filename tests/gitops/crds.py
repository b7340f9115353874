"""Custom resources checked against their CustomResourceDefinition, as the API server checks them.

A CRD's openAPIV3Schema validates with jsonschema; most CRDs do not set ``additionalProperties: false``, so a
misspelled field passes that validation and the API server then drops it silently. ``undeclared_fields``
walks the object for the names the schema does not declare, which the API server's strict field validation
(``kubectl apply --validate=strict``, the default) refuses.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import jsonschema

# The ObjectMeta fields a manifest may set; the others (uid, resourceVersion, creationTimestamp...) are
# written by the API server. A CRD's schema says only `metadata: {type: object}`.
OBJECT_META_FIELDS = {
    "name",
    "generateName",
    "namespace",
    "labels",
    "annotations",
    "finalizers",
    "ownerReferences",
}


def crd_schemas(objects: Iterable[dict]) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema, for every served version of every CRD among objects."""
    schemas = {}
    for crd in objects:
        if crd["kind"] != "CustomResourceDefinition":
            continue
        spec = crd["spec"]
        for version in spec["versions"]:
            if version.get("served"):
                api_version = f"{spec['group']}/{version['name']}"
                schemas[api_version, spec["names"]["kind"]] = version["schema"]["openAPIV3Schema"]
    return schemas


def schema_errors(obj: dict, schema: dict) -> list[str]:
    """What the CRD's schema refuses in obj, then every field it does not declare."""
    validator = jsonschema.Draft7Validator(schema)
    errors = [
        f"{'.'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in validator.iter_errors(obj)
    ]
    # apiVersion, kind and metadata belong to every object: the API server takes them at the root whether the
    # CRD's schema names them or not (policy-controller's declares spec and status only).
    body = {key: value for key, value in obj.items() if key not in ("apiVersion", "kind", "metadata")}
    errors += [f"{path}: not declared by the CRD" for path in undeclared_fields(body, schema)]
    errors += [
        f"metadata.{key}: not an ObjectMeta field"
        for key in obj.get("metadata", {})
        if key not in OBJECT_META_FIELDS
    ]
    return errors


def undeclared_fields(value: object, schema: dict, path: str = "") -> Iterator[str]:
    """The paths of the keys of value that schema neither declares nor leaves open."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if properties is not None and key in properties:
                yield from undeclared_fields(item, properties[key], where)
            elif isinstance(additional, dict):
                yield from undeclared_fields(item, additional, where)
            elif properties is not None and additional is not True:
                yield where
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from undeclared_fields(item, schema["items"], f"{path}[{index}]")

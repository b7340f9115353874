"""Kustomize overlays: k3d is kube_config/ as it is; EKS drops the in-cluster PostgreSQL and uses the ALB."""

from .manifests import (
    KUBE_CONFIG,
    OVERLAYS,
    base_objects,
    kustomization,
    load_documents,
    one,
    overlay_patch,
    overlay_resources,
    pod_spec,
    top_level_files,
)


def test_k3d_overlay_takes_every_top_level_manifest():
    resources = overlay_resources("k3d")
    shared = [
        p for p in resources if p.parent != (KUBE_CONFIG / "overlays" / "k3d").resolve() and p.is_file()
    ]
    assert sorted(shared) == [p.resolve() for p in top_level_files()]
    # Traefik's own settings, which Argo CD deploys with the platform instead (Application "traefik").
    assert [p for p in resources if p.is_dir()] == [(KUBE_CONFIG / "platform" / "traefik").resolve()]


def test_k3d_ingress_buffers_whole_requests_up_to_the_body_limit_in_traefik():
    traefik = load_documents(KUBE_CONFIG / "overlays" / "k3d" / "traefik.yaml")
    middleware = one(traefik, "Middleware", "buffering")
    ingress = overlay_patch("k3d", "Ingress", "flask-api")
    settings = load_documents(KUBE_CONFIG / "platform" / "traefik" / "helmchartconfig.yaml")
    arguments = one(settings, "HelmChartConfig", "traefik")["spec"]["valuesContent"]

    assert middleware["metadata"]["namespace"] == "flask-api"
    # The application's MAX_CONTENT_LENGTH default, which the ConfigMap leaves as it is.
    assert middleware["spec"]["buffering"]["maxRequestBodyBytes"] == 1048576
    assert "MAX_CONTENT_LENGTH" not in one(base_objects(), "ConfigMap", "flask-api-config")["data"]
    annotation = ingress["metadata"]["annotations"]["traefik.ingress.kubernetes.io/router.middlewares"]
    assert annotation == "flask-api-buffering@kubernetescrd"
    assert "--entryPoints.web.transport.respondingTimeouts.readTimeout=15s" in arguments


def test_eks_overlay_takes_every_top_level_manifest_but_postgresql():
    expected = [p.resolve() for p in top_level_files() if p.name != "30-postgres.yaml"]
    taken = overlay_resources("eks")
    assert sorted(p for p in taken if p.parent == KUBE_CONFIG) == expected
    assert [p.name for p in taken if p.parent != KUBE_CONFIG] == ["external-secrets.yaml", "migration.yaml"]


def test_postgresql_file_holds_every_object_of_the_database_and_nothing_else():
    objects = load_documents(KUBE_CONFIG / "30-postgres.yaml")
    assert {o["metadata"]["labels"]["app.kubernetes.io/component"] for o in objects} == {"database"}


def test_no_other_file_holds_database_objects():
    others = [p for p in top_level_files() if p.name != "30-postgres.yaml"]
    components = {
        o["metadata"]["labels"].get("app.kubernetes.io/component") for p in others for o in load_documents(p)
    }
    assert "database" not in components


def test_k3d_overlay_keeps_the_image_repository_and_pins_a_version_tag():
    (image,) = kustomization("k3d")["images"]
    assert image["name"] == "ghcr.io/flask-api/flask-api"
    assert image["newTag"] not in {"latest", ""}


def test_eks_ingress_is_an_internet_facing_alb_sending_to_pod_ips_and_checking_readyz():
    ingress = overlay_patch("eks", "Ingress", "flask-api")
    annotations = ingress["metadata"]["annotations"]
    assert ingress["spec"]["ingressClassName"] == "alb"
    assert annotations["alb.ingress.kubernetes.io/scheme"] == "internet-facing"
    assert annotations["alb.ingress.kubernetes.io/target-type"] == "ip"
    assert annotations["alb.ingress.kubernetes.io/healthcheck-path"] == "/readyz"


def test_no_ingress_rewrites_paths_to_the_root():
    ingresses = [one(base_objects(), "Ingress", "flask-api"), overlay_patch("eks", "Ingress", "flask-api")]
    for ingress in ingresses:
        assert not any("rewrite-target" in key for key in ingress["metadata"].get("annotations", {}))


def test_eks_prestop_still_fits_in_the_termination_grace_with_gunicorn_drain():
    base = pod_spec(one(base_objects(), "Deployment", "flask-api"))
    settings = one(base_objects(), "ConfigMap", "flask-api-config")["data"]
    (patched,) = pod_spec(overlay_patch("eks", "Deployment", "flask-api"))["containers"]
    pre_stop = patched["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert base["terminationGracePeriodSeconds"] > pre_stop + int(settings["GUNICORN_GRACEFUL_TIMEOUT"])


def test_eks_overlay_pulls_the_image_on_every_start():
    spec = pod_spec(overlay_patch("eks", "Deployment", "flask-api"))
    (job,) = [o for o in load_documents(OVERLAYS / "eks" / "migration.yaml") if o["kind"] == "Job"]
    containers = [*spec["containers"], *pod_spec(job)["containers"]]
    assert {c["imagePullPolicy"] for c in containers} == {"Always"}

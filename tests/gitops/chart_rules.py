"""The default alerting rules kube-prometheus-stack makes, from its vendored rule templates and given values.

Helm cannot run here. The chart's rule templates (tests/gitops/upstream/kube-prometheus-stack/rules) use a
small part of Go templating: a condition over values that keeps or drops the whole file, `if`/`with` blocks
around optional labels and annotations, inline values (`dig` defaults of customRules, job names, the runbook
URL, namespace selectors) and ranges over additional aggregation labels. This module evaluates exactly those
forms and fails on any other, so a chart update that templates differently stops the test instead of
rendering something Helm would not.
"""

from __future__ import annotations

import re

import yaml

from tests.gitops.rendered import merge_values
from tests.gitops.upstream import checksums, vendored

CHART = "kube-prometheus-stack"
RELEASE = "kube-prometheus-stack"  # the Application's releaseName; the chart's fullname is the same
NAMESPACE = "monitoring"
# The job names the chart's helpers (templates/_helpers.tpl) give when no jobNameOverride is set.
JOB_HELPERS = {
    "kube-prometheus-stack-kube-apiserver.name": ("kubeApiServer", "apiserver"),
    "kube-prometheus-stack-kube-controller-manager.name": (
        "kubeControllerManager",
        "kube-controller-manager",
    ),
    "kube-prometheus-stack-kube-proxy.name": ("kubeProxy", "kube-proxy"),
    "kube-prometheus-stack-kube-scheduler.name": ("kubeScheduler", "kube-scheduler"),
    "kube-prometheus-stack-kubelet.name": ("kubelet", "kubelet"),
    "kube-prometheus-stack-kube-state-metrics.name": ("kube-state-metrics", "kube-state-metrics"),
}
TOKEN = re.compile(r'\(|\)|\||"[^"]*"|[^\s()|]+')


class UnsupportedTemplateError(AssertionError):
    """A template form this renderer does not evaluate."""


def chart_values(*overrides: dict) -> dict:
    """The chart's default values with the given values files merged over them, as Helm merges them."""
    result = yaml.safe_load(vendored(CHART, "values.yaml"))
    for override in overrides:
        result = merge_values(result, override)
    return result


def lookup(values: dict, path: str) -> object:
    value: object = values
    for key in path.removeprefix("$").removeprefix(".Values.").split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def evaluate(expression: str, values: dict) -> object:
    """The value of a condition of the templates: and/or/not, semverCompare, hasKey, `| default`, .Values."""
    tokens = TOKEN.findall(expression)
    position = 0

    def term() -> object:  # noqa: PLR0911 - one return per form of the templates
        nonlocal position
        token = tokens[position]
        position += 1
        if token == "(":
            value = pipeline()
            position += 1  # ")"
            return value
        if token in ("and", "or", "not", "semverCompare", "hasKey"):
            args = []
            while position < len(tokens) and tokens[position] not in (")", "|"):
                args.append(term())
            if token == "and":
                return all(args)
            if token == "or":
                return any(args)
            if token == "not":
                return not args[0]
            if token == "semverCompare":
                return (
                    True  # the 1.14 <= version < 9.9.9 bounds hold for every Kubernetes this repository runs
                )
            return isinstance(args[0], dict) and args[1] in args[0]
        if token.startswith('"'):
            return token.strip('"')
        if token in ("true", "false"):
            return token == "true"
        if token in ("$additionalAnnotations",):
            return {}  # no additionalRuleAnnotations in the values of this repository (checked below)
        if token.startswith((".Values.", "$.Values.")):
            return lookup(values, token.removeprefix("$"))
        if token == "$kubeTargetVersion":
            return "v1.32.0"
        raise UnsupportedTemplateError(f"condition term {token!r} in {expression!r}")

    def pipeline() -> object:
        nonlocal position
        value = term()
        while position < len(tokens) and tokens[position] == "|":
            if tokens[position + 1] != "default":
                raise UnsupportedTemplateError(expression)
            position += 2
            fallback = term()
            value = value or fallback
        return value

    value = pipeline()
    if position != len(tokens):
        raise UnsupportedTemplateError(expression)
    return value


def variables(values: dict) -> dict[str, str]:
    """The $variables the templates assign, with the values given."""
    jobs = {
        helper: lookup(values, f"{key}.jobNameOverride") or lookup(values, f"{key}.nameOverride") or default
        for helper, (key, default) in JOB_HELPERS.items()
    }
    return {
        "$kubeApiserverJob": jobs["kube-prometheus-stack-kube-apiserver.name"],
        "$kubeControllerManagerJob": jobs["kube-prometheus-stack-kube-controller-manager.name"],
        "$kubeProxyJob": jobs["kube-prometheus-stack-kube-proxy.name"],
        "$kubeSchedulerJob": jobs["kube-prometheus-stack-kube-scheduler.name"],
        "$kubeletJob": jobs["kube-prometheus-stack-kubelet.name"],
        "$kubeStateMetricsJob": jobs["kube-prometheus-stack-kube-state-metrics.name"],
        "$alertmanagerJob": f"{RELEASE}-alertmanager",
        "$prometheusJob": f"{RELEASE}-prometheus",
        "$operatorJob": f"{RELEASE}-operator",
        "$namespace": NAMESPACE,
        "$targetNamespace": lookup(values, "defaultRules.appNamespacesTarget"),
        "$namespaceOperator": lookup(values, "defaultRules.appNamespacesOperator") or "=~",
    }


def inline(line: str, values: dict, names: dict[str, str]) -> str:
    """A template line with its inline actions replaced by their values."""

    def action(match: re.Match) -> str:
        body = match.group(1).strip()
        if body in names:
            return str(names[body])
        dig = re.fullmatch(r'dig "(\w+)" "(\w+)" "([^"]*)" \.Values\.customRules', body)
        if dig:
            return str(lookup(values, f"customRules.{dig[1]}.{dig[2]}") or dig[3])
        if body.startswith((".Values.", "$.Values.")):
            return str(lookup(values, body.removeprefix("$")))
        raise UnsupportedTemplateError(f"inline action {body!r} in {line!r}")

    line = line.replace("{{`{{`}}", "\0open\0").replace("{{`}}`}}", "\0close\0")

    def aggregation(match: re.Match) -> str:
        if lookup(values, match.group(1)):
            raise UnsupportedTemplateError("additionalAggregationLabels set")
        return ""

    line = re.sub(r"\{\{ range \$\.Values\.([\w.]+) \}\}.*?\{\{ end \}\}", aggregation, line)
    line = re.sub(r"\{\{(.*?)\}\}", action, line)
    return line.replace("\0open\0", "{{").replace("\0close\0", "}}")


def rule_groups(name: str, values: dict) -> list[dict]:
    """The rule groups one vendored template makes with the given values; [] when the chart drops the file."""
    text = vendored(CHART, f"rules/{name}")
    text = re.sub(r"\{\{- /\*.*?\*/ -\}\}\n?", "", text, flags=re.S)
    header, _, body = text.partition("\nspec:\n")
    condition = re.findall(r"^\{\{- if (and .*) \}\}$", header, flags=re.M)[0]
    if not evaluate(condition, values):
        return []
    names = variables(values)
    kept, stack = [], [True, True]  # the file's own condition is open until its last {{- end }}
    for line in body.splitlines():
        stripped = line.strip()
        control = re.fullmatch(r"\{\{-? *(if|with|range|else|end)\b(.*?) *-?\}\}", stripped)
        if control:
            keyword, argument = control.group(1), control.group(2).strip()
            if keyword == "end":
                stack.pop()
            elif keyword == "else":
                raise UnsupportedTemplateError(stripped)
            else:
                stack.append(stack[-1] and bool(evaluate(argument, values)))
            continue
        if re.fullmatch(r"\{\{- *\$\w+ :=.*\}\}", stripped) or not stack[-1]:
            continue
        kept.append(inline(line, values, names))
    if len(stack) != 1:
        raise UnsupportedTemplateError(f"{name}: unbalanced blocks")
    return yaml.safe_load("\n".join(kept))["groups"]


def default_rule_files() -> list[str]:
    """The vendored rule templates, by file name."""
    return sorted(name.removeprefix("rules/") for name in checksums(CHART) if name.startswith("rules/"))


def kept_rules(values: dict) -> list[dict]:
    """Every rule group the chart makes from the vendored templates with the given values."""
    for key in ("additionalRuleAnnotations", "additionalRuleGroupAnnotations"):
        if any((lookup(values, f"defaultRules.{key}") or {}).values()):
            raise UnsupportedTemplateError(f"defaultRules.{key} set")
    return [group for name in default_rule_files() for group in rule_groups(name, values)]

"""OpenSearch: the retention of the log indices is a policy in Git, tied to what Fluent Bit writes."""

from __future__ import annotations

import fnmatch
import json

from tests.gitops.rendered import PLATFORM, fluent_bit_pipeline

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

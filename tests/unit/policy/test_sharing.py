"""ModelPool: policies that share parts hold them once, and read exactly as parsed."""

from __future__ import annotations

import gc
from pathlib import Path

from canaryd.daemon.policies import PolicySet
from canaryd.policy.loader import load_policies_text
from canaryd.policy.sharing import ModelPool
from canaryd.state.document import Fingerprint

from .support import BASE, POLICIES


def _variant(name: str, alpha: str = "0.01") -> str:
    return (
        BASE.replace("name: demo", f"name: {name}")
        .replace("inferenceService: demo", f"inferenceService: {name}")
        .replace("alpha: 0.01", f"alpha: {alpha}")
    )


def test_shared_policies_read_dump_and_fingerprint_as_parsed() -> None:
    pool = ModelPool()
    texts = [_variant(f"m{i}") for i in range(5)] + [_variant("other", alpha="0.05")]
    texts += [p.read_text() for p in sorted(POLICIES.glob("*.yaml"))]
    shared, fresh = [], []
    for i, text in enumerate(texts):
        for lp in load_policies_text(text, f"p{i}.yaml"):
            shared.append(pool.share(lp.policy))
        fresh += [lp.policy for lp in load_policies_text(text, f"p{i}.yaml")]
    assert len(shared) == len(fresh) > 6
    for s, f in zip(shared, fresh, strict=True):
        assert s == f
        assert s.model_dump_json() == f.model_dump_json()
        assert s.model_dump_json(exclude_unset=True) == f.model_dump_json(exclude_unset=True)
        assert Fingerprint.of(s) == Fingerprint.of(f)
    # Equal parts are one object; a part that differs (alpha) is not shared.
    assert all(s.spec.router is shared[0].spec.router for s in shared[:6])
    assert all(s.spec.analysis is shared[0].spec.analysis for s in shared[:5])
    assert shared[5].spec.analysis is not shared[0].spec.analysis
    assert shared[5].spec.analysis.metrics[0] is shared[0].spec.analysis.metrics[0]
    # The policies' own identities are never merged.
    assert len({id(s) for s in shared}) == len(shared)
    assert len({id(s.spec.target) for s in shared[:6]}) == 6


def test_the_pool_forgets_parts_no_policy_holds(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"m{i}.yaml").write_text(_variant(f"m{i}"))
    policies = PolicySet([tmp_path])
    loaded = policies.load()
    assert loaded[0].policy.spec.steps is loaded[2].policy.spec.steps
    held = len(policies._pool)
    for i in range(3):
        (tmp_path / f"m{i}.yaml").unlink()
    policies.load()
    del loaded
    gc.collect()
    assert held > 0 and len(policies._pool) == 0

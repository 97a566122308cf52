"""The keep policy as properties: on the pure ``select``, and through forget + gc on real stores.

The pure properties pin down what each rule means (newest always kept,
keep-last keeps exactly the newest N beyond the other rules' picks, best-k
the k best, adding a rule never drops a checkpoint, every kept checkpoint is
kept by a rule).  The store properties check what forget and gc do with that
answer: every kept checkpoint still loads bit-exactly (its delta bases
survived), the log joins kept checkpoints to their nearest kept ancestor,
forgotten ones are gone, and something was freed whenever something went.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import deltastore
from deltastore import retention
from deltastore.errors import RefNotFoundError
from deltastore.retention import Candidate, KeepPolicy, parse_best, rank_best, select

from .conftest import assert_same
from .test_gc import catalog_rows_with_missing_files

# -- the pure policy ----------------------------------------------------------------------------

histories = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(min_value=0, max_value=1000)),  # step
        st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),  # loss
        st.booleans(),  # tagged
    ),
    max_size=30,
)
policies = st.builds(
    KeepPolicy,
    last=st.one_of(st.none(), st.integers(1, 10)),
    every_n_steps=st.one_of(st.none(), st.integers(1, 50)),
    best=st.one_of(st.none(), st.integers(1, 5)),
    monitor=st.just("loss"),
    mode=st.sampled_from(["min", "max"]),
    tagged=st.booleans(),
)


def candidates_of(history: list[tuple[int | None, float | None, bool]]) -> list[Candidate]:
    return [
        Candidate(f"{n:064x}", step, {} if loss is None else {"loss": loss}, tagged)
        for n, (step, loss, tagged) in enumerate(history)
    ]


def k_best(policy: KeepPolicy, history: list[Candidate], k: int) -> set[str]:
    """The k best by the metric, ties to the earlier: an independent statement of best-k."""
    scored = [
        (c.metrics["loss"], age, c.id)
        for age, c in enumerate(history)
        if "loss" in c.metrics and not math.isnan(c.metrics["loss"])
    ]
    sign = 1 if policy.mode == "min" else -1
    scored.sort(key=lambda t: (sign * t[0], -t[1]))
    return {cid for *_, cid in scored[:k]}


@settings(max_examples=400, deadline=None)
@given(policies, histories)
def test_every_kept_checkpoint_is_kept_by_a_rule_that_holds(
    policy: KeepPolicy, history: list[Any]
) -> None:
    candidates = candidates_of(history)
    result = select(policy, candidates)
    assert result.kept == set(result.reasons)
    ranked = rank_best(policy, candidates)[: policy.best or 0]
    for age, c in enumerate(candidates):
        for reason in result.reasons.get(c.id, ()):
            assert {
                retention.NEWEST: age == 0,
                retention.LAST: policy.last is not None and age < policy.last,
                retention.EVERY: policy.every_n_steps is not None
                and c.step is not None
                and c.step % policy.every_n_steps == 0,
                retention.BEST: c.id in ranked,
                retention.TAGGED: policy.tagged and c.tagged,
                retention.ALL: policy.keeps_everything,
            }[reason], (reason, age)


@settings(max_examples=400, deadline=None)
@given(policies, histories)
def test_each_rule_keeps_what_it_says(policy: KeepPolicy, history: list[Any]) -> None:
    candidates = candidates_of(history)
    kept = select(policy, candidates).kept
    ids = [c.id for c in candidates]
    if ids:
        assert ids[0] in kept  # the head: where a run resumes, what the next save deltas against
    if policy.last is not None:
        assert set(ids[: policy.last]) <= kept
    if policy.every_n_steps is not None:
        assert {
            c.id for c in candidates if c.step is not None and c.step % policy.every_n_steps == 0
        } <= kept
    if policy.best is not None:
        assert k_best(policy, candidates, policy.best) <= kept
        assert {
            cid for cid, why in select(policy, candidates).reasons.items() if "best" in why
        } == (k_best(policy, candidates, policy.best))
    if policy.tagged:
        assert {c.id for c in candidates if c.tagged} <= kept


@settings(max_examples=300, deadline=None)
@given(policies, histories)
def test_keep_last_keeps_exactly_the_newest_n_beyond_the_other_rules(
    policy: KeepPolicy, history: list[Any]
) -> None:
    candidates = candidates_of(history)
    n = policy.last or 3
    with_last = select(dataclasses.replace(policy, last=n), candidates).kept
    others = dataclasses.replace(policy, last=None)
    if others.keeps_everything:  # no other rule: only the head is kept besides the newest N
        without_last = {c.id for c in candidates[:1]}
    else:
        without_last = select(others, candidates).kept
    newest = {c.id for c in candidates[:n]}
    assert with_last == without_last | newest


@settings(max_examples=300, deadline=None)
@given(policies, histories, st.sampled_from(["last", "every_n_steps", "best", "tagged"]))
def test_adding_a_rule_never_drops_a_kept_checkpoint(
    policy: KeepPolicy, history: list[Any], rule: str
) -> None:
    """(A policy with no rule keeps everything, so "adding" starts from one rule.)"""
    if policy.keeps_everything:
        policy = dataclasses.replace(policy, last=1)
    value = True if rule == "tagged" else 2
    if getattr(policy, rule) not in (None, False):
        return
    candidates = candidates_of(history)
    before = select(policy, candidates).kept
    after = select(dataclasses.replace(policy, **{rule: value}), candidates).kept
    assert before <= after


def test_a_policy_without_rules_keeps_everything() -> None:
    candidates = candidates_of([(1, 0.5, False), (2, None, False), (None, 1.0, True)])
    assert select(KeepPolicy(), candidates).kept == {c.id for c in candidates}
    assert not KeepPolicy(tagged=True).keeps_everything


def test_the_training_package_still_exports_the_policy() -> None:
    from deltastore.training import retention as old

    assert old.KeepPolicy is KeepPolicy and old.select is select


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("loss:min:3", ("loss", "min", 3)), ("eval:acc:max:1", ("eval:acc", "max", 1))],
)
def test_keep_best_specs_parse(spec: str, expected: tuple[str, str, int]) -> None:
    assert parse_best(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("loss", "expected METRIC:min|max:K"),
        (":min:3", "expected METRIC:min|max:K"),
        ("loss:low:3", "must be 'min' or 'max'"),
        ("loss:min:0", "must be a positive integer"),
        ("loss:min:x", "must be a positive integer"),
    ],
)
def test_bad_keep_best_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_best(spec)


# -- the policy applied to real stores ----------------------------------------------------------

#: Small chunks so that a 16 KiB tensor is 4 chunks, stored as deltas against its parent's.
CHUNK = 4096


def state_at(n: int) -> dict[str, Any]:
    """A weight that drifts a little per save (deltas), a constant (shared chunks), scalars."""
    g = torch.Generator().manual_seed(n)
    base = torch.randn(64, 64, generator=torch.Generator().manual_seed(99))
    return {
        "model": {"w": base + 1e-3 * n * torch.randn(64, 64, generator=g)},
        "const": torch.arange(2048, dtype=torch.float32),
        "n": n,
    }


store_histories = st.fixed_dictionaries(
    {
        "main": st.integers(1, 7),
        "fork_at": st.integers(0, 6),
        "side": st.integers(0, 3),
        "losses": st.lists(st.floats(0, 10, allow_nan=False), min_size=10, max_size=10),
        "tags": st.sets(st.integers(0, 9), max_size=3),
    }
)
store_policies = policies.filter(lambda p: not p.keeps_everything)


def build(root: Path, shape: dict[str, Any]) -> tuple[deltastore.Store, dict[str, int]]:
    """Save ``main`` checkpoints, then a ``side`` branch forked at one of them; tag some."""
    store = deltastore.open(root, create=True, progress=False, durable=False, chunk_size=CHUNK)
    numbers: dict[str, int] = {}
    ids = []
    for n in range(shape["main"]):
        cid = store.save(state_at(n), step=10 * n, metrics={"loss": shape["losses"][n]})
        ids.append(cid)
        numbers[cid] = n
    if shape["side"]:
        store.branch("side", ids[min(shape["fork_at"], len(ids) - 1)])
        for n in range(shape["main"], shape["main"] + shape["side"]):
            cid = store.save(
                state_at(n), step=10 * n, metrics={"loss": shape["losses"][n]}, branch="side"
            )
            numbers[cid] = n
    by_number = {n: cid for cid, n in numbers.items()}
    for n in shape["tags"]:
        if n in by_number:
            store.tag(f"t{n}", by_number[n])
    return store, numbers


def expected_kept(store: deltastore.Store, policy: KeepPolicy) -> set[str]:
    """The model: per branch, select over its log; a checkpoint stays if any branch keeps it."""
    named = store.refs()
    tagged = {cid for kind, cid in named.values() if kind == "tag"}
    kept: set[str] = set()
    for name, (kind, _) in named.items():
        if kind == "branch":
            log = [Candidate(c.id, c.step, c.metrics, c.id in tagged) for c in store.log(name)]
            kept |= select(policy, log).kept
    return kept | (tagged if policy.tagged else set())


@settings(max_examples=25, deadline=None)
@given(store_histories, store_policies)
def test_forget_and_gc_keep_what_the_policy_keeps_and_it_all_loads(
    tmp_path_factory: pytest.TempPathFactory, shape: dict[str, Any], policy: KeepPolicy
) -> None:
    # A folder per example, left to pytest's clean-up: removing a store's 256 fan-out
    # folders after every example cost ~0.9 s each on ext4 here, more than the example.
    store, numbers = build(tmp_path_factory.mktemp("example") / "s", shape)
    with store:
        parents = {c.id: c.parent for c in store.stats().checkpoints}
        tags_before = store.refs()
        want = expected_kept(store, policy)
        report = store.forget(policy)
        gone = set(numbers) - want
        assert {c.id for c in report.forgotten} == gone
        assert set(report.kept) == want
        collected = store.gc()
        if gone:
            assert report.freed_bytes > 0
            assert collected.freed_bytes == report.freed_bytes  # the forecast was exact
        # What stays loads bit-exactly (its delta bases survived the sweep) ...
        for cid in want:
            assert_same(store.load(cid), state_at(numbers[cid]))
        # ... and its parent is its nearest kept ancestor.
        for cid in want:
            ancestor = parents[cid]
            while ancestor is not None and ancestor not in want:
                ancestor = parents[ancestor]
            assert store.info(cid).parent == ancestor
        for cid in gone:
            with pytest.raises(RefNotFoundError):
                store.load(cid)
        # Tags on forgotten checkpoints went with them; branches all stayed.
        assert store.refs() == {name: ref for name, ref in tags_before.items() if ref[1] in want}
        assert catalog_rows_with_missing_files(store) == set()

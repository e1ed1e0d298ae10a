"""Variant assignment: shares hold, the same user gets the same variant everywhere, and changing
shares moves as few users as possible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from app.experiments.assignment import (
    BASIS_POINTS,
    RunningExperiment,
    VariantPlan,
    assign_many,
    bucket,
)

ROOT = Path(__file__).resolve().parents[2]
USERS = [f"user-{i}" for i in range(100_000)]


def experiment(salt: str, shares: list[int]) -> RunningExperiment:
    return RunningExperiment(
        id=1,
        name="exp",
        salt=salt,
        variants=tuple(VariantPlan(f"v{i}", share) for i, share in enumerate(shares)),
        attribution_window=timedelta(minutes=30),
    )


@pytest.mark.parametrize("shares", [[5000, 5000], [5000, 3000, 2000], [100, 9900]])
def test_shares_hold_over_100000_users(shares: list[int]) -> None:
    """Each variant's count of 100,000 users is within 4 standard errors of its share, and a
    chi-square test finds no departure."""
    counts = np.bincount(assign_many("salt-1", shares, USERS), minlength=len(shares))
    p = np.array(shares) / BASIS_POINTS
    expected = len(USERS) * p
    standard_error = np.sqrt(len(USERS) * p * (1 - p))
    assert np.all(np.abs(counts - expected) < 4 * standard_error), counts
    assert stats.chisquare(counts, expected).pvalue > 0.001


def test_assign_many_matches_the_serving_path() -> None:
    running = experiment("salt-1", [5000, 3000, 2000])
    indices = assign_many("salt-1", [5000, 3000, 2000], USERS[:5000])
    assert [running.assign(u).name for u in USERS[:5000]] == [f"v{i}" for i in indices]


def test_buckets_are_pinned() -> None:
    """The hash is part of the contract: a change would reshuffle every running experiment's
    users on deploy. These values must never change."""
    assert bucket("salt-1", "user-42") == 9234
    assert bucket("salt-1", "user-43") == 1158
    assert bucket("other", "user-42") == 4849


def test_assignment_is_the_same_in_other_processes() -> None:
    """Fresh interpreters with different hash seeds assign every user as this one does."""
    code = (
        "import json; from app.experiments.assignment import assign_many; "
        "print(json.dumps(assign_many('salt-1', [5000, 3000, 2000], "
        "[f'user-{i}' for i in range(3000)])))"
    )
    here = assign_many("salt-1", [5000, 3000, 2000], USERS[:3000])
    for seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, check=True
        )
        assert json.loads(done.stdout) == here


def test_changing_shares_moves_only_the_users_whose_bucket_changes_owner() -> None:
    """50/50 to 60/40 moves 10% of users, all from the shrinking variant to the growing one."""
    before = np.array(assign_many("salt-1", [5000, 5000], USERS))
    after = np.array(assign_many("salt-1", [6000, 4000], USERS))
    moved = before != after
    assert 0.09 < moved.mean() < 0.11
    assert np.all(before[moved] == 1)
    assert np.all(after[moved] == 0)


def test_adding_a_variant_at_the_end_moves_only_the_users_it_takes() -> None:
    before = np.array(assign_many("salt-1", [5000, 5000], USERS))
    after = np.array(assign_many("salt-1", [5000, 4000, 1000], USERS))
    moved = before != after
    assert 0.09 < moved.mean() < 0.11
    assert np.all(after[moved] == 2)


def test_another_salt_reshuffles_users() -> None:
    """Two experiments with different salts split users independently: about half of a 50/50
    split's users land on the same side."""
    first = np.array(assign_many("salt-1", [5000, 5000], USERS))
    second = np.array(assign_many("salt-2", [5000, 5000], USERS))
    assert 0.49 < (first == second).mean() < 0.51


def test_shares_must_cover_every_bucket() -> None:
    with pytest.raises(ValueError, match="sum to 9000 basis points"):
        experiment("salt-1", [5000, 4000])

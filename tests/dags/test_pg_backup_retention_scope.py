"""The nightly `retention` task of pg_backup prunes only the configured targets' backups.

One real pg_backup run (dump, upload, verify, manifest, record, then retention) into a bucket that
already holds 60 days of glimpse's backups and 120 of a target this config does not have (another
deployment sharing the prefix, or a removed target).
"""

from __future__ import annotations

import pytest

from tests.support import retention as data

from .conftest import files_under

pytestmark = pytest.mark.dagrun


def test_nightly_retention_keeps_other_targets_backups(run_pg_backup, s3, bucket, tmp_path):
    ours, now = data.recent_history(60)
    theirs, _ = data.recent_history(120, target="legacy")
    new = "glimpse_daily_20261125_020000.dump"  # what this run writes (its logical date below)
    ours = [s for s in ours if s.file != new]
    client = s3.client()
    data.upload(client, bucket, ours + theirs)
    root = tmp_path / "backups"
    data.write_tree(root, ours + theirs)

    run = run_pg_backup(bucket=bucket, logical_date="2026-11-25T02:00:00+09:00", local_root=root)
    assert run.state == "success", run.output[-4000:]

    survivors = data.expected_survivors(ours, now)
    assert 0 < len(ours) - len(survivors) and len(data.expected_survivors(theirs, now)) < len(theirs)
    suffixes = data.SUFFIXES
    new_keys = {f"database/daily/{new}{x}" for x in suffixes}
    assert data.all_keys(client, bucket) == ({s.key + x for s in ours if s.file in survivors for x in suffixes}
                                             | {s.key + x for s in theirs for x in suffixes} | new_keys
                                             | set(data.NOT_BACKUPS))
    assert set(files_under(root)) == ({s.local_rel + x for s in ours if s.file in survivors for x in suffixes}
                                      | {s.local_rel + x for s in theirs for x in suffixes}
                                      | {f"daily/2026/11/{new}{x}" for x in suffixes})
    # The task's report lists the other target's backups as not ours, and the new backup (named for a
    # logical date days before its snapshot) as kept and flagged.
    assert run.output.count("NOT OURS       legacy ") == 2 * len(theirs)
    assert f"daily/{new}  manifest timestamp " in run.output

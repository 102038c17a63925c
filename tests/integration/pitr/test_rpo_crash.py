"""The RPO a host crash costs, measured: archive under a steady write load, SIGKILL the primary, delete its data
directory, recover to the end of the archive from S3 alone, count the committed transactions lost.

A real PostgreSQL 15 whose archive_command is barman-cloud-wal-archive shipping to moto, archive_timeout 10 s
(the shipped default is 60 s; 10 keeps the test short and the bound tight). The load commits one numbered row
every 50 ms and notes when each COMMIT returned; the recovery is pg_pitr_drill's core (newest base backup,
pg_verifybackup, replay to the end of the archive with barman-cloud-wal-restore). What is lost must be the
last commits only (no hole), and cover no more than archive_timeout plus one segment's upload.
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.support.pitr_drill import crash_and_recover

pytestmark = pytest.mark.integration

ARCHIVE_TIMEOUT = 10
LOAD_SECONDS = 25
# One forced switch may be in flight at the kill: the segment closed up to archive_timeout ago is still being
# gzipped and uploaded by barman-cloud-wal-archive (a Python process start, ~0.6 s idle; more on a busy host).
UPLOAD_MARGIN = 5.0


def test_sigkill_loses_at_most_archive_timeout_of_commits(s3, tmp_path):
    bucket = f"rpo-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=bucket)

    m = crash_and_recover(s3, bucket, tmp_path, archive_timeout=ARCHIVE_TIMEOUT, load_seconds=LOAD_SECONDS)
    print(f"\nRPO crash test: {m.summary()}; recovery {json.dumps(m.timings)}")
    (tmp_path / "rpo.json").write_text(json.dumps({"summary": m.summary(), "lost": m.lost,
                                                    "loss_window_seconds": m.loss_window_seconds}))

    # The load ran the whole time and was cut by the kill.
    assert m.committed_before_kill >= LOAD_SECONDS / 0.05 * 0.8, m.summary()
    assert m.kill["killed_after_grace"] == 0, m.kill  # the server's processes ended with the postmaster
    # Recovered from S3 alone: archived segments replayed, the newest reached (drill.replay checks it).
    assert m.segments_restored >= 2 and m.last_restored_segment is not None
    # Recovery is a prefix of the history: every commit up to the newest recovered one is there.
    assert m.holes == [], m.summary()
    # Most of the load survived: the loss is a tail.
    assert m.recovered >= m.committed_before_kill - (ARCHIVE_TIMEOUT + UPLOAD_MARGIN) / 0.05, m.summary()
    # The bound: at most archive_timeout (plus one upload) of commits before the kill.
    assert m.loss_window_seconds <= ARCHIVE_TIMEOUT + UPLOAD_MARGIN, m.summary()
    assert m.lost_span_seconds <= m.loss_window_seconds
    # Nothing was committed after the kill except what was in flight at it.
    assert m.committed_after_kill <= 1 and m.recovered_unconfirmed <= 1, m.summary()

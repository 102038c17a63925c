"""PITR retention against moto over HTTP: a real base backup and real archived WAL of a cluster whose
archive_command is barman-cloud-wal-archive, beside base backups planted as if taken 12 and 9 days ago.

The old backup outside the window goes with the WAL only it needed; the one covering the window's start, the
real one, the WAL from the covering backup's start on, history files and young incomplete folders stay.
Refusals (clock skew, an empty listing, too large a fraction) delete nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import pytest
from pg_dataops.common import wal
from pg_dataops.pitr import inventory
from pg_dataops.pitr.basebackup import take_base_backup
from pg_dataops.pitr.retention import apply_pitr_retention
from pg_dataops.retention.plan import RetentionRefused

from tests.support.pitr import TARGET, archiving_cluster, connect, pitr_config, switch_and_wait
from tests.support.pitr_basebackup import folder_keys, plant_base_backup, plant_wal

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def setup(s3, tmp_path_factory):
    """A bucket with: real WAL segments 1.. (several switches), two planted old base backups starting at
    segments 1 and 2, a real base backup after them, a planted history file and two incomplete folders."""
    bucket = f"ret-{uuid.uuid4().hex[:12]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    cluster = archiving_cluster(s3, bucket, users=100)
    try:
        for _ in range(4):
            switch_and_wait(cluster)
        cfg = pitr_config(bucket, PGBACKUP_MULTIPART_CHUNK_MB="5")
        with connect(cluster, "postgres") as pg:
            now = pg.execute("SELECT now()").fetchone()[0]
        old = plant_base_backup(client, cfg, TARGET, now - dt.timedelta(days=12), "000000010000000000000001")
        covering = plant_base_backup(client, cfg, TARGET, now - dt.timedelta(days=9), "000000010000000000000002")
        real = take_base_backup(cfg, TARGET, cluster.conn("glimpse"), client, recipients=(),
                                spool_dir=str(tmp_path_factory.mktemp("spool")))
        switch_and_wait(cluster)  # the real backup's .backup file and stop segment are archived
        history = plant_wal(client, cfg, TARGET, "00000002.history")
        stale = plant_base_backup(client, cfg, TARGET, now - dt.timedelta(days=3), "000000010000000000000003",
                                  manifest=False)
        running = plant_base_backup(client, cfg, TARGET, now - dt.timedelta(minutes=5), "000000010000000000000004",
                                    manifest=False)
        yield {"client": client, "cfg": cfg, "old": old, "covering": covering, "real": real, "history": history,
               "stale": stale, "running": running}
    finally:
        cluster.stop()


def _state(client, cfg):
    base = folder_keys(client, cfg.bucket, wal.base_backup_prefix(cfg, TARGET))
    wals = folder_keys(client, cfg.bucket, wal.archive_prefix(cfg, TARGET))
    return base, wals


def test_refusals_delete_nothing(setup):
    client, cfg = setup["client"], setup["cfg"]
    before = _state(client, cfg)
    # This worker's clock two hours off S3's (retention.max_future_skew_minutes is 60).
    with pytest.raises(RetentionRefused, match="PITR retention refused: this worker's clock .* ahead of the "
                                               "clock of S3 at http"):
        apply_pitr_retention(cfg, client, TARGET, dry_run=False, now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=2))
    # A target with nothing listed.
    with pytest.raises(RetentionRefused, match="no complete base backup of other listed in s3://"):
        apply_pitr_retention(cfg, client, "other", dry_run=False)
    # Deleting 1 of 3 base backups is more than a fraction of 0.2.
    strict = dataclasses.replace(cfg, retention=dataclasses.replace(cfg.retention, max_delete_fraction=0.2))
    with pytest.raises(RetentionRefused, match=r"would delete 1 of 3 base backups of glimpse \(33%\)"):
        apply_pitr_retention(strict, client, TARGET, dry_run=False)
    # The backup just made must be in the listing.
    with pytest.raises(RetentionRefused, match="the base backup just made, glimpse_base_20991231T000000Z, is not"):
        apply_pitr_retention(cfg, client, TARGET, dry_run=False, must_keep="glimpse_base_20991231T000000Z")
    assert _state(client, cfg) == before


def test_old_backups_and_their_wal_go_needed_wal_stays(setup):
    client, cfg = setup["client"], setup["cfg"]
    real = setup["real"]
    base_before, wal_before = _state(client, cfg)
    names_before = {k.rsplit("/", 1)[-1] for k in wal_before}
    assert "000000010000000000000001.gz" in names_before  # real archived WAL, older than every kept backup

    dry = apply_pitr_retention(cfg, client, TARGET, dry_run=True, must_keep=real["backup_id"])
    assert _state(client, cfg) == (base_before, wal_before)
    assert list(dry["delete"]) == [setup["old"]]
    assert dry["wal_keep_from"] == "000000010000000000000002" and dry["wal_delete_count"] == 1

    done = apply_pitr_retention(cfg, client, TARGET, dry_run=False, must_keep=real["backup_id"])
    base_after, wal_after = _state(client, cfg)
    prefix = wal.base_backup_prefix(cfg, TARGET)
    folders_after = sorted({k[len(prefix):].split("/", 1)[0] for k in base_after})
    assert done["deleted_backups"] == [setup["old"]]
    assert done["deleted_folders"] == [inventory.backup_folder(cfg, TARGET, setup["stale"])]
    assert folders_after == sorted([setup["covering"], real["backup_id"], setup["running"]])
    assert set(done["kept"]) == {setup["covering"], real["backup_id"]}
    # WAL: exactly segment 1 went; everything from the covering backup's start on stays, with history and
    # the real backup's .backup file.
    names_after = {k.rsplit("/", 1)[-1] for k in wal_after}
    assert names_before - names_after == {"000000010000000000000001.gz"}
    assert done["deleted_wal_count"] == 1
    assert setup["history"] in wal_after
    assert any(n.startswith(real["start_wal"]) and ".backup" in n for n in names_after)
    for w in wal.segments(wal.list_archive(client, cfg.bucket, wal.archive_prefix(cfg, TARGET))):
        assert w.segment.segno >= wal.Segment.parse("000000010000000000000002").segno
    # Every segment the real backup needs is still there, and the inventory lists the kept backups whole.
    present = {w.segment for w in wal.segments(wal.list_archive(client, cfg.bucket, wal.archive_prefix(cfg, TARGET)))}
    assert wal.find_gaps(present, wal.Segment.parse(real["start_wal"]), wal.Segment.parse(real["stop_wal"])) == []
    listing = inventory.list_base_backups(client, cfg, TARGET)
    assert [b.backup_id for b in listing.backups] == [setup["covering"], real["backup_id"]]

    # A second run deletes nothing more.
    again = apply_pitr_retention(cfg, client, TARGET, dry_run=False, must_keep=real["backup_id"])
    assert again["deleted_backups"] == [] and again["deleted_wal_count"] == 0
    assert _state(client, cfg) == (base_after, wal_after)

"""The pure parts of the base backup: the tar scanner on synthetic tars, backup_label and backup_manifest
parsing, the manifest document, the preflight's refusals and the command lines."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import struct
import tarfile

import pytest
from pg_dataops.common.config import load_config
from pg_dataops.common.pg import PgConn
from pg_dataops.pitr import basebackup, inventory
from pg_dataops.pitr.basebackup import (
    BaseBackupFailed,
    PreflightRefused,
    ServerFacts,
    TarScanner,
    TarStreamError,
)

LABEL = (
    "START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\n"
    "CHECKPOINT LOCATION: 0/5000060\n"
    "BACKUP METHOD: streamed\n"
    "BACKUP FROM: primary\n"
    "START TIME: 2026-12-01 02:45:35 UTC\n"
    "LABEL: glimpse_base_20261201T024535Z\n"
    "START TIMELINE: 1\n"
)


def backup_manifest(files: int = 3, ranges=(("1", "0/5000028", "0/5000100"),), tamper: bool = False) -> bytes:
    """A backup_manifest shaped like pg_basebackup's, with a correct Manifest-Checksum."""
    lines = ['{ "PostgreSQL-Backup-Manifest-Version": 1,', '"Files": [']
    lines.append(",\n".join(f'{{ "Path": "base/1/{i}", "Size": {100 * (i + 1)}, "Last-Modified": "2026-12-01 '
                            f'02:45:35 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "00000000" }}'
                            for i in range(files)))
    lines.append("],")
    lines.append('"WAL-Ranges": [')
    lines.append(",\n".join(f'{{ "Timeline": {t}, "Start-LSN": "{s}", "End-LSN": "{e}" }}' for t, s, e in ranges))
    lines.append("],")
    body = ("\n".join(lines) + "\n").encode()
    checksum = hashlib.sha256(body).hexdigest()
    if tamper:
        body = body.replace(b"base/1/0", b"base/1/9")
    return body + f'"Manifest-Checksum": "{checksum}"}}\n'.encode()


def make_tar(members: list[tuple[str, bytes]], fmt=tarfile.USTAR_FORMAT, dirs: tuple[str, ...] = ()) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def scan(data: bytes, chunk: int, limits=None) -> TarScanner:
    scanner = TarScanner(limits or basebackup.CAPTURE_LIMITS)
    for i in range(0, len(data), chunk):
        scanner.feed(data[i:i + chunk])
    scanner.close()
    return scanner


# --- the tar scanner -------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 7, 511, 512, 513, 4096, 10**7])
@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_scanner_captures_members_in_any_chunking_and_format(chunk, fmt):
    manifest = backup_manifest()
    control = struct.pack("<Q", 7714161270382865465) + bytes(8184)
    data = make_tar([("backup_label", LABEL.encode()), ("base/1/1259", b"x" * 70000), ("global/pg_control", control),
                     ("pg_wal/000000010000000000000005", bytes(3000)), ("backup_manifest", manifest)], fmt,
                    dirs=("base", "pg_wal"))
    s = scan(data, chunk)
    assert s.captured == {"backup_label": LABEL.encode(), "global/pg_control": control, "backup_manifest": manifest}
    assert s.members == 5 and s.size == len(data) and s.ended


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_scanner_follows_long_names_to_the_member_they_name(fmt):
    long_dir = "base/" + "d" * 120 + "/"
    data = make_tar([(long_dir + "backup_manifest", b"not me"), ("backup_manifest", b"me")], fmt)
    s = scan(data, 1000, {"backup_manifest": 100})
    assert s.captured == {"backup_manifest": b"me"}
    assert s.members == 2


def test_scanner_accepts_base256_sizes():
    header = bytearray(make_tar([("big", b"y" * 600)])[:512])
    header[124:136] = b"\x80" + (600).to_bytes(11, "big")  # GNU base-256, as tar writes sizes >= 8 GiB
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}\0 ".encode()
    data = bytes(header) + b"y" * 600 + bytes(424) + bytes(1024)
    s = scan(data, 100, {"big": 1000})
    assert s.captured == {"big": b"y" * 600}


def test_scanner_refuses_damage_truncation_and_oversized_members():
    data = make_tar([("backup_label", LABEL.encode()), ("base/1/1", b"z" * 2000)])
    damaged = bytearray(data)
    damaged[512 + 512 + 10] ^= 0xFF  # inside the second header (backup_label's data is one block)
    with pytest.raises(TarStreamError, match="header checksum mismatch after 1 members"):
        scan(bytes(damaged), 4096)
    with pytest.raises(TarStreamError, match="cut off inside member 'base/1/1'"):
        scan(data[:2000], 4096)
    with pytest.raises(TarStreamError, match="no end-of-archive marker"):
        scan(data[:512 * 2 + 512 + 2048], 4096)  # every member whole, the zero blocks missing
    too_large = f"backup_label in pg_basebackup's tar is {len(LABEL)} bytes, more than the 100"
    with pytest.raises(TarStreamError, match=too_large):
        scan(data, 4096, {"backup_label": 100})
    with pytest.raises(TarStreamError, match="damaged or not a tar"):
        scan(b"PGDMP" + bytes(507) + bytes(1024), 512)
    with pytest.raises(TarStreamError, match="not a tar header: number field"):
        scan(b"x" * 512, 512)


# --- what the backup says about itself -------------------------------------------------------------


def test_backup_label_and_manifest_parsing():
    label = basebackup.parse_backup_label(LABEL)
    assert label == {"start_lsn": "0/5000028", "start_wal": "000000010000000000000005", "checkpoint_lsn": "0/5000060",
                     "start_time": "2026-12-01 02:45:35 UTC", "label": "glimpse_base_20261201T024535Z", "timeline": 1}
    with pytest.raises(BaseBackupFailed, match="backup_label lacks start_lsn, start_wal"):
        basebackup.parse_backup_label("START TIMELINE: 1\n")

    raw = backup_manifest(files=4)
    facts = basebackup.read_backup_manifest(raw)
    assert facts["checksum"] == json.loads(raw)["Manifest-Checksum"]
    assert facts["files"] == 4 and facts["size"] == 100 + 200 + 300 + 400 and facts["bytes"] == len(raw)
    assert facts["wal_ranges"] == [{"timeline": 1, "start_lsn": "0/5000028", "end_lsn": "0/5000100"}]
    with pytest.raises(BaseBackupFailed, match="Manifest-Checksum does not match its contents"):
        basebackup.read_backup_manifest(backup_manifest(tamper=True))
    with pytest.raises(BaseBackupFailed, match="no Manifest-Checksum line"):
        basebackup.read_backup_manifest(b'{"Files": []}\n')


def test_pg_basebackup_log_and_pg_control():
    said = basebackup.parse_pg_basebackup_log([
        "pg_basebackup: initiating base backup, waiting for checkpoint to complete",
        "pg_basebackup: write-ahead log start point: 0/3000028 on timeline 1",
        "pg_basebackup: write-ahead log end point: 0/3000100",
    ])
    assert said == {"start_lsn": "0/3000028", "timeline": 1, "stop_lsn": "0/3000100"}
    assert basebackup.control_system_identifier(struct.pack("<Q", 2**63 + 5) + bytes(100)) == str(2**63 + 5)
    with pytest.raises(BaseBackupFailed, match="too short"):
        basebackup.control_system_identifier(b"abc")


def facts(**kw) -> ServerFacts:
    base = dict(server_version="15.20", server_version_num=150020, wal_level="replica", archive_mode="on",
                max_wal_senders=10, wal_segment_size=16 * 1024 * 1024, superuser=False, replication=True,
                role_name="backup", system_identifier=None, database_size=123456,
                server_now=dt.datetime(2026, 12, 1, 2, 45, tzinfo=dt.UTC), tablespaces=[])
    return ServerFacts(**{**base, **kw})


def doc_for(ranges, label_text=LABEL, seg=16 * 1024 * 1024) -> dict:
    cfg = load_config(environ={"PGBACKUP_BUCKET": "unit-bucket"})
    bid = "glimpse_base_20261201T024535Z"
    archive = {"key": f"database/base/glimpse/{bid}/base.tar.zst", "file": "base.tar.zst", "size": 10,
               "sha256": "0" * 64}
    return basebackup.build_manifest(
        cfg=cfg, target="glimpse", bid=bid, facts=facts(wal_segment_size=seg),
        label=basebackup.parse_backup_label(label_text), bmanifest=basebackup.read_backup_manifest(
            backup_manifest(ranges=ranges)), system_identifier="42",
        start_time=dt.datetime(2026, 12, 1, 11, 45, 35, tzinfo=dt.timezone(dt.timedelta(hours=9))),
        stop_time=dt.datetime(2026, 12, 1, 2, 45, 40, tzinfo=dt.UTC), archive=archive, argv=["pg_basebackup", "-v"],
        recipients=(), pg_basebackup_version="pg_basebackup (PostgreSQL) 15.20", timings={"duration_seconds": 5.0})


def test_manifest_document_follows_the_inventory_contract():
    doc = doc_for((("1", "0/5000028", "0/7000100"),))
    assert doc["kind"] == inventory.KIND and doc["version"] == 1
    assert (doc["start_lsn"], doc["stop_lsn"], doc["start_wal"], doc["stop_wal"], doc["timeline"]) == (
        "0/5000028", "0/7000100", "000000010000000000000005", "000000010000000000000007", 1)
    assert doc["start_time"] == "2026-12-01T02:45:35Z" and doc["stop_time"] == "2026-12-01T02:45:40Z"
    assert doc["backup_manifest"]["files"] == 3 and doc["encryption"] is None
    assert doc["database_size"] == 123456 and doc["system_identifier"] == "42"
    # A listing reads it back as a base backup with these segments.
    b = inventory.BaseBackup(doc["backup_id"], "f/", doc)
    assert b.start_segment.name() == "000000010000000000000005" and b.stop_segment.name() == "000000010000000000000007"


def test_manifest_document_with_a_timeline_switch_and_other_segment_sizes():
    doc = doc_for((("1", "0/5000028", "0/6000000"), ("2", "0/6000000", "0/6000100")))
    assert doc["stop_wal"] == "000000020000000000000006" and doc["timeline"] == 1
    label_64 = LABEL.replace("(file 000000010000000000000005)", "(file 000000010000000000000001)")
    doc = doc_for((("1", "0/5000028", "0/5000100"),), label_64, seg=64 * 1024 * 1024)
    assert doc["start_wal"] == "000000010000000000000001" and doc["wal_segment_size"] == 64 * 1024 * 1024


def test_manifest_document_refuses_a_label_that_contradicts_the_manifest():
    with pytest.raises(BaseBackupFailed, match="backup_label starts at 0/5000028 but backup_manifest at 0/6000028"):
        doc_for((("1", "0/6000028", "0/6000100"),))


# --- preflight -------------------------------------------------------------------------------------

CONN = PgConn("db.example", 5432, "backup", "glimpse", "s3cret-pw")


@pytest.mark.parametrize(("change", "message"), [
    ({"tablespaces": [("fast", "/ssd/pg")]}, r"user tablespaces \(fast \(/ssd/pg\)\).*one tablespace only"),
    ({"wal_level": "minimal"}, "wal_level is 'minimal' on db.example:5432.*need 'replica'"),
    ({"archive_mode": "off"}, "archive_mode is 'off' on db.example:5432: a base backup without archived WAL"),
    ({"replication": False}, "role 'backup' on db.example:5432 is neither superuser nor has the REPLICATION"),
    ({"max_wal_senders": 0}, "max_wal_senders is 0"),
])
def test_preflight_refusals_name_the_cause(change, message):
    with pytest.raises(PreflightRefused, match=message) as exc:
        basebackup.check_server(facts(**change), CONN)
    assert exc.value.phase == "preflight"


def test_preflight_accepts_a_fit_server():
    basebackup.check_server(facts(), CONN)
    basebackup.check_server(facts(replication=False, superuser=True, wal_level="logical", archive_mode="always"), CONN)


def test_preflight_needs_the_servers_major_client(tmp_path):
    with pytest.raises(PreflightRefused, match=r"the server is PostgreSQL 15 but .*/15/bin/pg_basebackup is missing"):
        basebackup.check_client(facts(), str(tmp_path))


def test_command_lines_hold_no_secret():
    argv = basebackup.pg_basebackup_argv("/usr/lib/postgresql/15/bin/pg_basebackup", CONN, "glimpse_base_x")
    assert argv == ["/usr/lib/postgresql/15/bin/pg_basebackup", "-h", "db.example", "-p", "5432", "-U", "backup",
                    "--no-password", "-D", "-", "-Ft", "-X", "fetch", "-c", "fast", "--label", "glimpse_base_x", "-v"]
    assert "s3cret-pw" not in " ".join(argv)
    assert basebackup.zstd_argv("/usr/bin/zstd", 3, 2) == ["/usr/bin/zstd", "-q", "-3", "-T2", "-c"]


def test_stale_spool_files_of_the_target_are_removed(tmp_path):
    import os
    import time

    stale = tmp_path / "glimpse_base_20261130T033000Z.base.tar.zst.partial"
    fresh = tmp_path / "glimpse_base_20261201T033000Z.base.tar.zst.partial"
    other = tmp_path / "orders_base_20261130T033000Z.base.tar.zst.partial"
    unrelated = tmp_path / "notes.txt"
    for p in (stale, fresh, other, unrelated):
        p.write_bytes(b"x")
    old = time.time() - basebackup.STALE_SPOOL - 60
    for p in (stale, other, unrelated):
        os.utime(p, (old, old))
    assert basebackup._remove_stale_spool(str(tmp_path), "glimpse") == [str(stale)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, other.name, unrelated.name])


def test_catalog_rows_for_success_and_failure():
    doc = doc_for((("1", "0/5000028", "0/7000100"),))
    doc["timings"]["pg_basebackup_seconds"] = 3.5
    ok = basebackup.catalog_row(target="glimpse", doc=doc, error=None, phase=None, bucket="b", dag_id="d", run_id="r")
    assert ok["status"] == "SUCCESS" and ok["error_message"] is None and ok["failed_step"] is None
    assert (ok["backup_id"], ok["start_lsn"], ok["stop_wal"], ok["s3_key"], ok["encrypted"]) == (
        doc["backup_id"], "0/5000028", "000000010000000000000007", doc["archive"]["key"], False)
    assert ok["pg_basebackup_seconds"] == 3.5 and ok["backup_size_bytes"] == 600
    sql = basebackup.sqlfiles.text("pitr/base_record.sql")
    assert all(f"%({column})s" in sql for column in ok)

    failed = basebackup.catalog_row(target="glimpse", doc=None, error="base_backup: password=hunter22 refused",
                                    phase="preflight", bucket="b", dag_id="d", run_id="r")
    assert (failed["status"], failed["failed_step"], failed["backup_id"], failed["encrypted"]) == (
        "FAILED", "base_backup (preflight)", None, None)
    assert "hunter22" not in failed["error_message"]
    killed = basebackup.catalog_row(target="glimpse", doc=None, error=None, phase=None, bucket="b", dag_id="d",
                                    run_id="r")
    assert killed["failed_step"] == "base_backup" and "did not complete" in killed["error_message"]


def test_success_text_is_short_and_names_what_was_made():
    doc = doc_for((("1", "0/5000028", "0/7000100"),))
    text = basebackup.success_text(doc, "Asia/Seoul", "retention: kept 2 base backup(s), pruned 1 ...")
    lines = text.splitlines()
    assert lines[0] == ":white_check_mark: Base backup SUCCESS: glimpse glimpse_base_20261201T024535Z"
    assert "not client-side encrypted" in lines[1] and "in 5.0 s" in lines[1]
    assert lines[2] == "WAL 0/5000028..0/7000100 (timeline 1), consistent from 2026-12-01 11:45:40 KST"
    assert lines[3].startswith("retention: kept 2") and len(lines) == 4


@pytest.mark.parametrize("splice", [True, False] if basebackup.SPLICE else [False])
def test_feeder_passes_every_byte_and_captures_through_real_pipes(splice):
    """The feeder between two OS pipes, as between pg_basebackup and zstd: what comes out is exactly what went
    in (spliced or copied), and the members it keeps are captured on the way."""
    import os
    import threading

    manifest = backup_manifest(files=50)
    data = make_tar([("backup_label", LABEL.encode()), ("base/1/1259", os.urandom(3 * 1024 * 1024 + 7)),
                     ("pg_wal/000000010000000000000005", bytes(2 * 1024 * 1024)), ("backup_manifest", manifest)],
                    tarfile.PAX_FORMAT)
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    scanner = TarScanner(basebackup.CAPTURE_LIMITS)
    with open(in_r, "rb", buffering=0) as source, open(out_w, "wb", buffering=0) as sink:
        feeder = basebackup._Feeder(source, sink, scanner, splice=splice)
        received = bytearray()

        def write_all():
            with open(in_w, "wb", buffering=0) as w:
                for i in range(0, len(data), 100_000):
                    w.write(data[i:i + 100_000])

        def read_all():
            with open(out_r, "rb", buffering=0) as r:
                while chunk := r.read(65536):
                    received.extend(chunk)

        threads = [threading.Thread(target=write_all), threading.Thread(target=read_all)]
        for t in threads:
            t.start()
        feeder.start()
        feeder.join(30)
        for t in threads:
            t.join(30)
    assert feeder.error is None and feeder.eof_at is not None
    assert bytes(received) == data and feeder.bytes == len(data)
    scanner.close()
    assert scanner.captured == {"backup_label": LABEL.encode(), "backup_manifest": manifest}
    assert scanner.members == 4 and scanner.size == len(data)

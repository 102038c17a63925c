import base64
import hashlib
import io
import os

import pytest
from pg_dataops.backup.dump import artifact_name
from pg_dataops.backup.manifest import sha256_line
from pg_dataops.common.s3 import expected_composite
from pg_dataops.common.stream import HashingWriter


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 4321])
def test_parts_and_whole_match_hashlib(size):
    data = os.urandom(size)
    sink = io.BytesIO()
    w = HashingWriter(sink, part_size=1000)
    for i in range(0, size, 333):  # writes that straddle part boundaries
        w.write(data[i : i + 333])
    whole, parts = w.finish()
    assert sink.getvalue() == data
    assert whole == hashlib.sha256(data).hexdigest()
    chunks = [data[i : i + 1000] for i in range(0, size, 1000)] or [b""]
    assert parts == [hashlib.sha256(c).hexdigest() for c in chunks]
    assert w.size == size


def test_composite_checksum_as_s3_computes_it():
    data = os.urandom(2500)
    parts = [hashlib.sha256(data[i : i + 1000]).hexdigest() for i in range(0, 2500, 1000)]
    joined = b"".join(bytes.fromhex(p) for p in parts)
    assert expected_composite(hashlib.sha256(data).hexdigest(), parts, 2500, 1000) == base64.b64encode(
        hashlib.sha256(joined).digest()
    ).decode()
    # Below the part size boto3 sends a single PUT: S3's checksum is the whole object's.
    small = os.urandom(10)
    h = hashlib.sha256(small).hexdigest()
    assert expected_composite(h, [h], 10, 1000) == base64.b64encode(hashlib.sha256(small).digest()).decode()


def test_sha256_line_is_sha256sum_format():
    assert sha256_line("ab" * 32, "x.dump") == "ab" * 32 + "  x.dump\n"


def test_artifact_names():
    assert artifact_name("g_daily_1", "custom", 1) == "g_daily_1.dump"
    assert artifact_name("g_daily_1", "plain", 0) == "g_daily_1.sql"
    assert artifact_name("g_daily_1", "plain", 6) == "g_daily_1.sql.gz"
    assert artifact_name("g_daily_1", "directory", 1) == "g_daily_1.tar"

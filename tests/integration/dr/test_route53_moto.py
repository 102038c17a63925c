"""pg_failover's DNS step against moto in server mode (real HTTP, the Route53 API): the database's record UPSERTed
to the new primary and read back; a second UPSERT to the same value sends no change batch; A and CNAME."""

from __future__ import annotations

import uuid

import boto3
import pytest
from pg_dataops.common.config import Route53Record
from pg_dataops.dr import repoint
from pg_dataops.dr.repoint import RepointError

pytestmark = pytest.mark.integration


def route53(s3):
    return boto3.client("route53", endpoint_url=s3.endpoint, aws_access_key_id=s3.access_key,
                        aws_secret_access_key=s3.secret_key, region_name=s3.region)


@pytest.fixture
def zone(s3):
    """A fresh hosted zone (the session's moto server is shared): its id and name."""
    name = f"glimpse-{uuid.uuid4().hex[:8]}.example."
    zone = route53(s3).create_hosted_zone(Name=name, CallerReference=uuid.uuid4().hex)["HostedZone"]
    return zone["Id"], name


def records(client, zone_id: str) -> dict[tuple[str, str], tuple[int, list[str]]]:
    """Every record of the zone but the SOA/NS that come with it: (name, type) -> (TTL, values)."""
    sets = client.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    return {(s["Name"], s["Type"]): (s["TTL"], [r["Value"] for r in s["ResourceRecords"]])
            for s in sets if s["Type"] not in ("SOA", "NS")}


def test_cname_upserted_to_the_new_primary_then_a_noop(s3, zone):
    client = route53(s3)
    zone_id, zone_name = zone
    db = f"db.{zone_name}"
    client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [
        {"Action": "CREATE", "ResourceRecordSet": {"Name": db, "Type": "CNAME", "TTL": 300,
                                                   "ResourceRecords": [{"Value": "db-primary.internal"}]}},
        # a record whose name sorts right after ours, and another type of the same name: never read as ours
        {"Action": "CREATE", "ResourceRecordSet": {"Name": f"db2.{zone_name}", "Type": "CNAME", "TTL": 300,
                                                   "ResourceRecords": [{"Value": "other.internal"}]}},
        {"Action": "CREATE", "ResourceRecordSet": {"Name": f"db.{zone_name}", "Type": "TXT", "TTL": 300,
                                                   "ResourceRecords": [{"Value": '"owner=dba"'}]}}]})
    record = Route53Record(zone_id=zone_id, record_name=db, record_type="CNAME", ttl=60, conn_id="aws_route53")
    assert repoint.record_value(client, record) == "db-primary.internal"

    first = repoint.upsert_record(client, record, "db-standby.internal")
    assert first["change_id"].startswith("/change/")
    assert {k: v for k, v in first.items() if k not in ("change_id", "waited_seconds")} == {
        "record": db, "type": "CNAME", "before": "db-primary.internal", "after": "db-standby.internal",
        "changed": True, "status": "INSYNC"}
    assert repoint.record_value(client, record) == "db-standby.internal"
    assert records(client, zone_id) == {
        (db, "CNAME"): (60, ["db-standby.internal"]),  # the TTL from the config
        (f"db2.{zone_name}", "CNAME"): (300, ["other.internal"]),
        (db, "TXT"): (300, ['"owner=dba"'])}

    # a rerun: already pointing there (a final dot or capitals make no difference): no change batch
    second = repoint.upsert_record(client, record, "DB-Standby.internal.")
    assert second == {"record": db, "type": "CNAME", "before": "db-standby.internal", "after": "db-standby.internal",
                      "changed": False, "change_id": None, "status": None, "waited_seconds": 0.0}
    assert records(client, zone_id)[(db, "CNAME")] == (60, ["db-standby.internal"])


def test_a_record_created_when_missing_then_changed(s3, zone):
    client = route53(s3)
    zone_id, zone_name = zone
    record = Route53Record(zone_id=zone_id, record_name=f"primary.{zone_name}", record_type="A", ttl=30)
    assert repoint.record_value(client, record) is None  # no such record yet: the UPSERT creates it

    created = repoint.upsert_record(client, record, "10.0.0.5")
    assert (created["before"], created["after"], created["changed"], created["status"]) == \
        (None, "10.0.0.5", True, "INSYNC")
    moved = repoint.upsert_record(client, record, "10.0.1.7")
    assert (moved["before"], moved["after"], moved["changed"]) == ("10.0.0.5", "10.0.1.7", True)
    assert records(client, zone_id) == {(f"primary.{zone_name}", "A"): (30, ["10.0.1.7"])}
    assert repoint.upsert_record(client, record, "10.0.1.7")["changed"] is False


def test_bad_values_and_a_missing_zone_are_refused(s3, zone):
    client = route53(s3)
    zone_id, zone_name = zone
    a = Route53Record(zone_id=zone_id, record_name=f"primary.{zone_name}", record_type="A")
    cname = Route53Record(zone_id=zone_id, record_name=f"db.{zone_name}", record_type="CNAME")
    with pytest.raises(RepointError) as err:
        repoint.upsert_record(client, a, "db-standby.internal")
    assert str(err.value) == (f"Route53 record primary.{zone_name} (dr.failover.route53): an A record needs an IPv4 "
                              "address, not 'db-standby.internal' (the standby's dns_value); use record_type CNAME "
                              "for a host name")
    with pytest.raises(RepointError) as err:
        repoint.upsert_record(client, cname, "10.0.0.5")
    assert str(err.value) == (f"Route53 record db.{zone_name} (dr.failover.route53): a CNAME record needs a host "
                              "name, not '10.0.0.5' (the standby's dns_value); use record_type A for an address")
    assert records(client, zone_id) == {}

    gone = Route53Record(zone_id="/hostedzone/ZNOSUCHZONE1", record_name=f"db.{zone_name}", record_type="CNAME")
    with pytest.raises(RepointError, match=r"^reading Route53 record db\..* in zone /hostedzone/ZNOSUCHZONE1: "
                                           r"NoSuchHostedZone: "):
        repoint.upsert_record(client, gone, "db-standby.internal")


class SlowPropagation:
    """The moto client, except that Route53 reports the change PENDING for its first ``pending`` polls (moto
    answers INSYNC at once; the real Route53 takes up to a minute)."""

    def __init__(self, client, pending: int):
        self.client, self.pending, self.polls = client, pending, 0

    def __getattr__(self, name):
        return getattr(self.client, name)

    def change_resource_record_sets(self, **kwargs):
        answer = self.client.change_resource_record_sets(**kwargs)
        return {**answer, "ChangeInfo": {**answer["ChangeInfo"], "Status": "PENDING"}}

    def get_change(self, Id):  # noqa: N803 - boto3's argument name
        self.polls += 1
        answer = self.client.get_change(Id=Id)
        if self.polls <= self.pending:
            return {**answer, "ChangeInfo": {**answer["ChangeInfo"], "Status": "PENDING"}}
        return answer


def test_the_wait_for_insync_is_bounded(s3, zone):
    zone_id, zone_name = zone
    record = Route53Record(zone_id=zone_id, record_name=f"db.{zone_name}", record_type="CNAME")
    slept: list[float] = []

    slow = SlowPropagation(route53(s3), pending=2)
    result = repoint.upsert_record(slow, record, "db-standby.internal", wait_seconds=10, interval=2,
                                   sleep=slept.append)
    assert (result["status"], slow.polls, slept) == ("INSYNC", 3, [2, 2, 2])

    # still PENDING when the wait is over: the change is made (it propagates by itself), the status says so
    slept.clear()
    stuck = SlowPropagation(route53(s3), pending=1000)
    result = repoint.upsert_record(stuck, record, "db-standby-2.internal", wait_seconds=5, interval=2,
                                   sleep=slept.append)
    assert (result["changed"], result["status"], stuck.polls, slept) == (True, "PENDING", 2, [2, 2])
    assert repoint.record_value(route53(s3), record) == "db-standby-2.internal"

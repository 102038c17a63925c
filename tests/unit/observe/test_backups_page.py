"""The Backups page drawn from synthetic data: every section, its exact numbers and labels, the SVG charts, no
external resource, and names and error texts HTML-escaped. Plus the page's pure helpers."""

from __future__ import annotations

import copy
import datetime as dt
import re
from html.parser import HTMLParser

import pytest
from pg_dataops.observe import backups_page
from pg_dataops.observe.backups_page import alert_parts, render, replication_facts, run_path

MiB, GiB = 1024**2, 1024**3
HOSTILE = "o'<b>\"&x"  # not a valid target name: proves every place a name lands is escaped
HOSTILE_ID = "o&#x27;&lt;b&gt;&quot;&amp;x"
DAYS = [(dt.date(2026, 10, 27) + dt.timedelta(days=i)).isoformat() for i in range(30)]  # 30 days up to 11-25
DAILY_SIZES = [None if i in (5, 12, 19, 26) else (100 + 10 * (i % 8)) * MiB for i in range(30)]
DAILY_SECONDS = [None if v is None else 60.0 for v in DAILY_SIZES]
WEEKLY_SIZES = [500 * MiB if i == 12 else 700 * MiB if i == 26 else None for i in range(30)]
WEEKLY_SECONDS = [120.0 if i == 12 else 180.0 if i == 26 else None for i in range(30)]
NONE_30 = [None] * 30


def forms(target: str, key: str, pitr: bool) -> list[dict]:
    out = [{"dag_id": "pg_full_recovery", "params": {"target": target, "backup_key": key}, "label": "Full recovery",
            "url": "/dags/pg_full_recovery"},
           {"dag_id": "pg_table_restore", "params": {"target": target, "backup_key": key}, "label": "Table restore",
            "url": "/dags/pg_table_restore"}]
    if pitr:
        out.append({"dag_id": "pg_pitr_restore", "params": {"target": target}, "label": "Point-in-time restore",
                    "url": "/dags/pg_pitr_restore"})
    return out


GLIMPSE = {
    "name": "glimpse",
    "newest": {"tiers": [
        {"tier": "daily", "failed_after": None, "backup": {
            "backup_date": "2026-11-24T17:00:00+00:00", "age_seconds": 25200.0,
            "file_name": "glimpse_daily_20261125_020000.dump", "size_bytes": 150 * MiB, "duration_seconds": 60.0,
            "verified": True, "verified_at": "2026-11-24T17:03:00+00:00", "s3_uploaded": True,
            "s3_key": "database/daily/glimpse_daily_20261125_020000.dump", "dag_id": "pg_backup",
            "run_id": "scheduled__2026-11-24T17:00:00+00:00",
            "run_url": "/dags/pg_backup/runs/scheduled__2026-11-24T17:00:00+00:00"}},
        {"tier": "weekly", "failed_after": None, "backup": {
            "backup_date": "2026-11-21T17:00:00+00:00", "age_seconds": 284400.0,
            "file_name": "glimpse_weekly_20261122_020000.dump", "size_bytes": 700 * MiB, "duration_seconds": 180.0,
            "verified": False, "verified_at": None, "s3_uploaded": True,
            "s3_key": "database/weekly/glimpse_weekly_20261122_020000.dump", "dag_id": None, "run_id": None,
            "run_url": None}},
        {"tier": "monthly", "backup": None, "failed_after": {
            "at": "2026-10-31T17:00:00+00:00", "failed_step": "dump", "error": "dump: cannot reach <primary> & co",
            "dag_id": "pg_backup", "run_id": "scheduled__2026-10-31T17:00:00+00:00",
            "run_url": "/dags/pg_backup/runs/scheduled__2026-10-31T17:00:00+00:00"}},
    ]},
    "trend": {"days": DAYS, "tiers": {
        "daily": {"size_bytes": DAILY_SIZES, "duration_seconds": DAILY_SECONDS},
        "weekly": {"size_bytes": WEEKLY_SIZES, "duration_seconds": WEEKLY_SECONDS},
        "monthly": {"size_bytes": NONE_30, "duration_seconds": NONE_30}}},
    "drills": {"objective_seconds": 14400.0, "since": "2026-05-29T00:00:00+00:00",
               "until": "2026-11-25T00:00:00+00:00", "kinds": {
                   "restore_drill": {"label": "restore drill", "points": [
                       {"at": "2026-11-13T18:00:00+00:00", "status": "SUCCESS", "seconds": 3600.0, "error": None,
                        "backup": "glimpse_daily_20261113_020000.dump", "run_url": None},
                       {"at": "2026-11-19T18:00:00+00:00", "status": "SUCCESS", "seconds": 3720.0, "error": None,
                        "backup": "glimpse_daily_20261119_020000.dump",
                        "run_url": "/dags/pg_restore_drill/runs/scheduled__2026-11-19T18:00:00+00:00"},
                       {"at": "2026-11-21T18:00:00+00:00", "status": "FAILED", "seconds": None,
                        "error": "pg_restore: error: out of memory", "backup": None,
                        "run_url": "/dags/pg_restore_drill/runs/manual__2026-11-21T18:00:00+00:00"}],
                       "latest": None, "verdict": {
                           "status": "ok", "message": "measured RTO 1 h 2 min is within the objective 4 h (25.8%)",
                           "measured_seconds": 3720.0, "measured_at": "2026-11-19T18:00:00+00:00"}},
                   "pitr_drill": {"label": "PITR drill", "points": [], "latest": None, "verdict": None},
                   "rehearsal": {"label": "full recovery rehearsal", "points": [
                       {"at": "2026-11-01T19:00:00+00:00", "status": "SUCCESS", "seconds": 16200.0, "error": None,
                        "backup": "database/daily/glimpse_daily_20261031_020000.dump", "run_url": None}],
                       "latest": None, "verdict": {
                           "status": "exceeded",
                           "message": "measured RTO 4 h 30 min exceeds the objective 4 h (112%)",
                           "measured_seconds": 16200.0, "measured_at": "2026-11-01T19:00:00+00:00"}}}},
    "pitr": {"configured": True, "window_days": 7, "window_start": "2026-11-18T18:30:41+00:00",
             "window_end": "2026-11-24T23:53:00+00:00", "recoverable": True, "base_backups": 7,
             "oldest_base_backup": {"backup_id": "glimpse_base_20261118T183011Z",
                                    "stop_time": "2026-11-18T18:30:41+00:00", "encrypted": False},
             "newest_base_backup": {"backup_id": "glimpse_base_20261124T183010Z",
                                    "stop_time": "2026-11-24T18:30:40+00:00", "encrypted": False},
             "incomplete_base_backups": 0, "problems": [], "archived_segments": 66,
             "newest_segment": "000000010000000000000042", "newest_segment_at": "2026-11-24T23:53:00+00:00",
             "rpo_seconds": 420.0, "rpo_objective_seconds": 3600, "within_rpo": True, "gaps": [],
             "missing_segments": 0, "retention": {
                 "at": "2026-11-25T18:30:00+00:00", "refused": None, "planned": True,
                 "delete_base_backups": ["glimpse_base_20261116T183011Z"],
                 "delete_folders": ["database/base/glimpse/glimpse_base_20261120T183000Z/"], "delete_wal": 12,
                 "wal_keep_from": "000000010000000000000030"}},
    "replication": {"configured": True, "standby": "glimpse-standby", "slot": "glimpse_standby", "warn_seconds": 60,
                    "page_seconds": 300, "page_bytes": 1024 * MiB, "slot_page_bytes": 20 * GiB, "facts": {
                        "state": "streaming", "lag_seconds": 2.5, "lag_bytes": 16384, "slot_exists": True,
                        "slot_active": True, "slot_retained_bytes": 50 * MiB, "wal_status": "reserved",
                        "replay_paused": False, "errors": []}},
    "alerts": {"open": [{"dedup_key": "pg_wal_archive_check/glimpse/rpo_at_risk", "source": "pg_wal_archive_check",
                         "check": "rpo_at_risk", "severity": "page",
                         "message": "RPO at risk: newest segment is 70 min old", "since": "2026-11-24T22:00:00+00:00",
                         "last_seen": "2026-11-24T23:05:00+00:00"}]},
    "retention": {"refused": [], "planned": True, "delete": {"daily": 2, "weekly": 0, "monthly": 1},
                  "delete_total": 3, "keep": 40, "attention": 1,
                  "first_keys": ["database/monthly/glimpse_monthly_20251101_020000.dump",
                                 "database/daily/glimpse_daily_20261024_020000.dump",
                                 "database/daily/glimpse_daily_20261025_020000.dump"], "more": 0},
    "restore": {"backup": {"key": "database/daily/glimpse_daily_20261125_020000.dump", "tier": "daily",
                           "taken_at": "2026-11-24T17:00:01+00:00", "verified": True}, "backup_source": "s3",
                "forms": forms("glimpse", "database/daily/glimpse_daily_20261125_020000.dump", pitr=True)},
}
CATALOG_DOWN = "catalog: cannot reach PostgreSQL at 127.0.0.1:1 <script>alert(1)</script>"
BROKEN = {
    "name": HOSTILE,
    "newest": {"error": CATALOG_DOWN}, "trend": {"error": CATALOG_DOWN}, "drills": {"error": CATALOG_DOWN},
    "pitr": {"configured": False}, "replication": {"configured": False}, "alerts": {"error": CATALOG_DOWN},
    "retention": {"error": "listing s3://glimpse-backups/database: NoSuchBucket: The specified bucket does not exist"},
    "restore": {"backup": None, "backup_source": None, "forms": forms(HOSTILE, "", pitr=False)},
}
DATA = {
    "generated_at": "2026-11-25T00:00:00+00:00", "timezone": "Asia/Seoul", "rto_objective_seconds": 14400.0,
    "location": "s3://glimpse-backups/database", "prefill_supported": False,
    "retention": {"as_of": "2026-11-25T00:00:00+00:00", "source": "s3://glimpse-backups/database",
                  "policy": {"daily": "30 days", "weekly": "12 weeks", "monthly": "12 months"},
                  "max_delete_fraction": 0.5, "refused": []},
    "other_alerts": {"open": [{"dedup_key": "pg_backup_monitor/local_free_space//backup/postgres",
                               "source": "pg_backup_monitor", "check": "local_free_space", "severity": "warn",
                               "message": "free space under /backup/postgres is 3.5 GiB",
                               "since": "2026-11-24T20:00:00+00:00", "last_seen": "2026-11-24T23:00:00+00:00"}]},
    "targets": [GLIMPSE, BROKEN],
}
for _kind in GLIMPSE["drills"]["kinds"].values():
    _kind["latest"] = _kind["points"][-1] if _kind["points"] else None


BLOCKS = {"section", "div", "p", "h2", "h3", "table", "tr", "td", "th", "dl", "dt", "dd", "ul", "li", "figure",
          "figcaption", "svg"}


class Elements(HTMLParser):
    """Every element's attributes, and the text inside the element whose ``attr`` is ``value`` (block elements
    separated by a space, as a browser shows them)."""

    def __init__(self, page: str, attr: str = "", value: str = ""):
        super().__init__(convert_charrefs=True)
        self.attr, self.value, self.depth, self.found = attr, value, 0, 0
        self.parts: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if self.depth:
            self.depth += 1
        elif self.attr and attrs.get(self.attr) == self.value:
            self.depth, self.found = 1, self.found + 1
        if self.depth and tag in BLOCKS:
            self.parts.append(" ")

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if self.depth and tag in BLOCKS:
            self.parts.append(" ")
        if self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            self.parts.append(data)

    @property
    def text(self) -> str:
        return " ".join("".join(self.parts).split())


def text_of(page: str, value: str, attr: str = "id") -> str:
    found = Elements(page, attr, value)
    assert found.found == 1, f"{attr}={value!r} found {found.found} times"
    return found.text


@pytest.fixture(scope="module")
def page() -> str:
    return render(DATA)


def test_one_complete_page_without_scripts_or_external_resources(page):
    assert page.startswith("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">")
    assert page.endswith("</body></html>\n")
    assert "<script" not in page and "http://" not in page and "https://" not in page
    tags = Elements(page).tags
    assert not [t for t, a in tags if "src" in a or t in ("link", "iframe", "img", "object", "embed")]
    hrefs = [a["href"] for _t, a in tags if "href" in a]
    # Only in-page anchors and the Airflow UI's own pages, opened outside the plugin's iframe.
    assert {h for h in hrefs if not h.startswith("/dags/")} == {"#target-glimpse", f"#target-{HOSTILE}"}
    assert all(a.get("target") == "_top" for _t, a in tags if a.get("href", "").startswith("/dags/"))
    assert text_of(page, "target-glimpse").startswith("glimpse Newest backups")
    header = page[page.index("<header>"):page.index("</header>")]
    assert "As of 2026-11-25 09:00 KST · times in Asia/Seoul · RTO objective 4 h · backups in " in header


def test_newest_backup_of_each_tier(page):
    assert text_of(page, "tier-glimpse-daily") == (
        "daily 2026-11-25 02:00 KST 7.0 hours 150.0 MiB 1 min verified "
        "pg_backup / scheduled__2026-11-24T17:00:00+00:00")
    assert text_of(page, "tier-glimpse-weekly") == (
        "weekly 2026-11-22 02:00 KST 3.3 days 700.0 MiB 3 min NOT verified no run recorded")
    assert text_of(page, "tier-glimpse-monthly") == "monthly none yet"
    assert ('<tr class="failed-after"><td></td><td colspan="6" class="bad">newer attempt 2026-11-01 02:00 KST FAILED '
            "in dump: dump: cannot reach &lt;primary&gt; &amp; co <a href=\"/dags/pg_backup/runs/"
            'scheduled__2026-10-31T17:00:00+00:00" target="_top">') in page
    assert ('<a href="/dags/pg_backup/runs/scheduled__2026-11-24T17:00:00+00:00" target="_top">pg_backup / '
            "scheduled__2026-11-24T17:00:00+00:00</a>") in page


def test_restore_buttons_open_the_dags_with_the_values_to_paste(page):
    section = page[page.index('id="target-glimpse"'):page.index(f'id="target-{HOSTILE_ID}"')]
    assert ("Filled in below: the newest verified backup, daily 2026-11-25 02:00 KST. Airflow 3.3's trigger form "
            "cannot be filled in from a link: the button opens the DAG, click Trigger there and paste these "
            "values.") in " ".join(re.sub(r"<[^>]+>", "", section).split())
    key = "database/daily/glimpse_daily_20261125_020000.dump"
    for dag_id, label, values in (
            ("pg_full_recovery", "Full recovery", f"target glimpse backup_key {key}"),
            ("pg_table_restore", "Table restore", f"target glimpse backup_key {key}"),
            ("pg_pitr_restore", "Point-in-time restore", "target glimpse")):
        assert (f'<a class="button" data-testid="restore-{dag_id}" href="/dags/{dag_id}" target="_top">{label} '
                f"({dag_id})</a>") in section
        paste = section[section.index(f'data-testid="restore-{dag_id}"'):]
        paste = paste[paste.index('<span class="paste">'):paste.index("</span>") + 7]
        assert re.sub(r"<[^>]+>", "", paste) == values
    assert "<code>database/daily/glimpse_daily_20261125_020000.dump</code>" in section


def test_thirty_days_of_sizes_and_durations_as_svg(page):
    trend = page[page.index('id="trend-glimpse"'):page.index('id="drills-glimpse"')]
    assert trend.count("<svg ") == 6  # size and duration of each tier
    assert "<figcaption>daily: size 100.0 MiB–170.0 MiB · duration 1 min</figcaption>" in trend
    assert "<figcaption>weekly: size 700.0 MiB–700.0 MiB" not in trend
    assert "<figcaption>weekly: size 500.0 MiB–700.0 MiB · duration 2 min–3 min</figcaption>" in trend
    assert "<figcaption>monthly: size no data · duration no data</figcaption>" in trend
    daily_size = trend[trend.index('aria-label="daily size, one bar per day"'):]
    daily_size = daily_size[:daily_size.index("</svg>")]
    assert daily_size.count('class="bar size"') == 26 and daily_size.count('class="gap"') == 4
    assert "<text x=\"0\" y=\"9\">daily size (max 170.0 MiB)</text>" in daily_size
    assert "<title>2026-10-27: 100.0 MiB</title>" in daily_size
    assert "<title>2026-11-01: no successful backup</title>" in daily_size
    assert ">2026-10-27</text>" in daily_size and ">2026-11-25</text>" in daily_size
    # The tallest bar fills the plot (40 px), the smallest is in proportion to it.
    assert 'y="12.0" width="8.0" height="40.0"><title>2026-11-03: 170.0 MiB' in daily_size
    assert 'height="23.5"><title>2026-10-27: 100.0 MiB' in daily_size
    assert "<text x=\"0\" y=\"9\">monthly size: no data</text>" in trend


def test_drills_chart_has_the_objective_line_and_every_point(page):
    drills = page[page.index('id="drills-glimpse"'):page.index('id="pitr-glimpse"')]
    assert drills.count("<svg ") == 1
    svg = drills[:drills.index("</svg>")]
    # y: 146 px of plot (baseline 170) for 0 .. 1.15 x the largest value (the 4 h 30 min rehearsal):
    # 170 - 146 * 14400 / 18630 = 57.1
    assert '<line class="objective" x1="64" y1="57.1" x2="628" y2="57.1"/>' in svg
    assert '<text x="60" y="60.1" text-anchor="end">4 h</text>' in svg and ">objective</text>" in svg
    # x: the last 30 days at least (the first recovery, 2026-11-01, is newer), 3% of that span before it, to now.
    assert '<text x="64" y="184">2026-10-25</text>' in svg and ">2026-11-25</text>" in svg
    assert "<title>restore drill 2026-11-14 03:00 KST: 1 h</title>" in svg
    assert "<title>restore drill 2026-11-20 03:00 KST: 1 h 2 min</title>" in svg
    assert "<title>restore drill 2026-11-22 03:00 KST: FAILED: pg_restore: error: out of memory</title>" in svg
    assert "<title>full recovery rehearsal 2026-11-02 04:00 KST: 4 h 30 min</title>" in svg
    assert ">restore drill (2)</text>" in svg and ">PITR drill (0)</text>" in svg
    assert ">full recovery rehearsal (1)</text>" in svg
    assert svg.count("<polyline ") == 1  # only the restore drills have two measured points to join
    assert text_of(page, "drill-glimpse-restore_drill") == (
        "restore drill 2026-11-22 03:00 KST FAILED: pg_restore: error: out of memory "
        "1 h 2 min (2026-11-20 03:00 KST): measured RTO 1 h 2 min is within the objective 4 h (25.8%) run")
    assert text_of(page, "drill-glimpse-pitr_drill") == "PITR drill none in the window"
    assert text_of(page, "drill-glimpse-rehearsal") == (
        "full recovery rehearsal 2026-11-02 04:00 KST SUCCESS 4 h 30 min (2026-11-02 04:00 KST): measured RTO "
        "4 h 30 min exceeds the objective 4 h (112%)")
    assert '<span class="bad">4 h 30 min</span>' in drills


def test_pitr_window_and_rpo(page):
    assert text_of(page, "pitr-glimpse") == (
        "Recoverable window 2026-11-19 03:30:41 KST (2026-11-18T18:30:41Z) to 2026-11-25 08:53:00 KST "
        "(2026-11-24T23:53:00Z) "
        "Base backups 7: oldest glimpse_base_20261118T183011Z, newest glimpse_base_20261124T183010Z "
        "(kept for 7 days) "
        "Newest archived WAL 000000010000000000000042 at 2026-11-25 08:53:00 KST (66 segments archived) "
        "Current RPO 7 min (objective 1 h)")
    assert text_of(page, f"pitr-{HOSTILE}") == "not configured (pitr.targets does not include it)"


def test_pitr_without_base_backups_or_wal_and_with_gaps():
    data = copy.deepcopy(DATA)
    pitr = data["targets"][0]["pitr"]
    pitr.update(gaps=["000000010000000000000010..000000010000000000000011 (2 segments)"], missing_segments=2,
                rpo_seconds=5400.0, within_rpo=False, incomplete_base_backups=1, problems=["s3://b/x/: bad"])
    text = text_of(render(data), "pitr-glimpse")
    assert "Missing WAL 2 segment(s): 000000010000000000000010..000000010000000000000011 (2 segments)" in text
    assert "Incomplete 1 folder(s) without a readable manifest.json s3://b/x/: bad" in text
    assert text.endswith("Current RPO 1 h 30 min (objective 1 h)")
    assert '<span class="bad">1 h 30 min</span>' in render(data)
    pitr.update(base_backups=0, recoverable=False, newest_segment=None, gaps=[], incomplete_base_backups=0,
                problems=[])
    assert text_of(render(data), "pitr-glimpse") == (
        "Recoverable window no base backup yet: nothing to recover to (run pg_base_backup) "
        "Current RPO no WAL segment archived yet")


def test_replication(page):
    assert text_of(page, "replication-glimpse") == (
        "Standby standby glimpse-standby, slot glimpse_standby State streaming "
        "Replay lag 2.5 s (warning above 1 min, page above 5 min) "
        "WAL not replayed 16.0 KiB (page above 1.0 GiB) "
        "Slot retention 50.0 MiB of WAL held, active, wal_status reserved (page above 20.0 GiB)")
    assert text_of(page, f"replication-{HOSTILE}") == "no standby configured (dr.standbys)"
    data = copy.deepcopy(DATA)
    section = data["targets"][0]["replication"]
    del section["facts"]
    section["error"] = "replication: not measured"
    assert text_of(render(data), "replication-glimpse") == (
        "standby glimpse-standby, slot glimpse_standby could not read: replication: not measured")


def test_open_alerts(page):
    assert text_of(page, "alerts-glimpse") == (
        "page rpo_at_risk RPO at risk: newest segment is 70 min old (failing since 2026-11-25 07:00 KST)")
    assert text_of(page, "other-alerts") == (
        "Open alerts not tied to a target warn local_free_space free space under /backup/postgres is 3.5 GiB "
        "(failing since 2026-11-25 05:00 KST)")
    data = copy.deepcopy(DATA)
    data["targets"][0]["alerts"] = {"open": []}
    data["other_alerts"] = {"open": []}
    quiet = render(data)
    assert text_of(quiet, "alerts-glimpse") == "none" and 'id="other-alerts"' not in quiet


def test_retention_dry_runs(page):
    assert text_of(page, "retention-glimpse-dumps") == (
        "pg_backup_retention (runs when triggered), if it ran now: "
        "would delete 3 backup(s) (daily 2, weekly 0, monthly 1) and keep 40, 1 of them kept for a look. "
        "Policy: daily 30 days, weekly 12 weeks, monthly 12 months. "
        "database/monthly/glimpse_monthly_20251101_020000.dump database/daily/glimpse_daily_20261024_020000.dump "
        "database/daily/glimpse_daily_20261025_020000.dump")
    assert text_of(page, "retention-glimpse-pitr") == (
        "PITR retention (pg_base_backup's last task), at its next run 2026-11-26 03:30 KST: would delete "
        "1 base backup(s) (glimpse_base_20261116T183011Z), 1 incomplete folder(s), 12 WAL file(s) before "
        "000000010000000000000030.")
    data = copy.deepcopy(DATA)
    data["targets"][0]["retention"].update(more=12, refused=["retention refused: the plan would delete 15 of 20"])
    data["targets"][0]["pitr"]["retention"] = {"at": "2026-11-25T18:30:00+00:00", "planned": False,
                                               "refused": "PITR retention refused: no complete base backup"}
    page = render(data)
    assert text_of(page, "retention-glimpse-dumps").endswith(
        "and 12 more A real run would be refused: retention refused: the plan would delete 15 of 20")
    assert text_of(page, "retention-glimpse-pitr") == (
        "PITR retention (pg_base_backup's last task), at its next run 2026-11-26 03:30 KST: A real run would be "
        "refused: PITR retention refused: no complete base backup")
    data["targets"][0]["retention"] = {"refused": ["retention refused: no backups found"], "planned": False}
    data["targets"][0]["pitr"]["retention"] = {"error": "PITR retention: AccessDenied: nope"}
    page = render(data)
    assert text_of(page, "retention-glimpse-dumps") == (
        "pg_backup_retention (runs when triggered), if it ran now: no plan: a real run would be refused (below) "
        "A real run would be refused: retention refused: no backups found")
    assert text_of(page, "retention-glimpse-pitr") == "could not read: PITR retention: AccessDenied: nope"
    assert f'id="retention-{HOSTILE_ID}-dumps"' in page
    assert f'id="retention-{HOSTILE_ID}-pitr"' not in page  # not a PITR target


def test_a_section_that_could_not_be_read_shows_its_error_escaped(page):
    section = text_of(page, f"target-{HOSTILE}")
    assert section.count(f"could not read: {CATALOG_DOWN}") == 4  # newest, trend, drills, alerts
    assert ("could not read: listing s3://glimpse-backups/database: NoSuchBucket: The specified bucket does not "
            "exist") in section
    assert "Filled in below: no backup of this target is known." in section
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_target_names_are_escaped_everywhere(page):
    assert HOSTILE not in page  # the raw name (with its quote and tag) appears nowhere
    assert f'<section class="target" id="target-{HOSTILE_ID}"><h2>{HOSTILE_ID}</h2>' in page
    assert f'<a href="#target-{HOSTILE_ID}">{HOSTILE_ID}</a>' in page
    assert f"target <code>{HOSTILE_ID}</code> backup_key <code></code>" in page
    assert text_of(page, f"target-{HOSTILE}").startswith(f"{HOSTILE} Newest backups")


def test_ui_base_prefixes_the_airflow_links():
    page = render(DATA, ui_base="/airflow/")
    hrefs = [a["href"] for _t, a in Elements(page).tags if "href" in a and not a["href"].startswith("#")]
    assert hrefs and all(h.startswith("/airflow/dags/") for h in hrefs)
    assert 'data-testid="restore-pg_full_recovery" href="/airflow/dags/pg_full_recovery"' in page


# --- pure helpers ----------------------------------------------------------------------------------


def test_alert_keys_are_attributed_to_their_target():
    targets = ["glimpse", "billing"]
    assert alert_parts("pg_backup_monitor/last_daily_backup_age/glimpse", targets) == (
        "pg_backup_monitor", "last_daily_backup_age", "glimpse")
    assert alert_parts("pg_backup_monitor/local_free_space//backup/postgres", targets) == (
        "pg_backup_monitor", "local_free_space", None)
    assert alert_parts("pg_backup_monitor/last_daily_backup_age/*", targets)[2] is None
    assert alert_parts("pg_wal_archive_check/billing/rpo_at_risk", targets) == (
        "pg_wal_archive_check", "rpo_at_risk", "billing")
    assert alert_parts("pg_replication_check/glimpse/slot_retention/glimpse_standby", targets) == (
        "pg_replication_check", "slot_retention/glimpse_standby", "glimpse")
    assert alert_parts("pg_replication_check/removed/replay_lag", targets)[2] is None
    assert alert_parts("something_else/glimpse/x", targets) == ("something_else", "glimpse/x", None)


def test_run_links():
    assert run_path("pg_backup", "scheduled__2026-11-24T17:00:00+00:00") == (
        "/dags/pg_backup/runs/scheduled__2026-11-24T17:00:00+00:00")
    assert run_path("pg_backup", "manual run #2/?") == "/dags/pg_backup/runs/manual%20run%20%232%2F%3F"
    assert run_path(None, "x") is None and run_path("pg_backup", None) is None


PRIMARY = {"in_recovery": False, "current_lsn": "0/5000000", "system_identifier": "7",
           "replicas": [{"slot_name": "glimpse_standby", "state": "streaming", "replay_lag_seconds": 1.5,
                         "replay_lag_bytes": 4096}],
           "slots": [{"slot_name": "glimpse_standby", "active": True, "wal_status": "reserved",
                      "retained_bytes": 3 * MiB}]}
STANDBY = {"in_recovery": True, "replay_lsn": "0/4FFF000", "replay_delay_seconds": 0.5, "replay_backlog_bytes": 0,
           "replay_paused": False, "system_identifier": "7"}


def test_replication_facts_measure_like_the_replication_check():
    assert replication_facts("glimpse_standby", PRIMARY, None, STANDBY, None) == {
        "state": "streaming", "lag_seconds": 1.5, "lag_bytes": 4096, "slot_exists": True, "slot_active": True,
        "slot_retained_bytes": 3 * MiB, "wal_status": "reserved", "replay_paused": False, "errors": []}
    gone = replication_facts("glimpse_standby", {**PRIMARY, "replicas": []}, None, None, "standby: timeout")
    assert gone == {"state": "standby unreachable", "lag_seconds": None, "lag_bytes": None, "slot_exists": True,
                    "slot_active": True, "slot_retained_bytes": 3 * MiB, "wal_status": "reserved",
                    "replay_paused": None, "errors": ["standby: timeout"]}
    no_slot = replication_facts("other_slot", PRIMARY, None, STANDBY, None)
    assert no_slot["state"] == "not streaming" and no_slot["slot_exists"] is False
    assert replication_facts("glimpse_standby", None, "primary: refused", STANDBY, None)["state"] == (
        "primary unreachable")
    promoted = replication_facts("glimpse_standby", {**PRIMARY, "replicas": []}, None, {"in_recovery": False}, None)
    assert promoted["state"] == "standby not in recovery (promoted?)"


def test_collect_needs_an_aware_now():
    with pytest.raises(ValueError, match="timezone-aware"):
        backups_page.collect(None, catalog=None, s3_client=None, now=dt.datetime(2026, 11, 25))

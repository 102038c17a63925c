"""The restore forms' shared fields: which database, which backup, and the approval. Written once.

pg_full_recovery, pg_table_restore and pg_user_data_restore ask the same questions in the same words (a
person at 3 a.m. should not meet three spellings of "backup date"); each DAG adds its own fields between
them. Every field has a default: Airflow validates the params again, without the run's conf, when it builds
a DAG-level failure callback's context.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from airflow.sdk import Param

if TYPE_CHECKING:
    from pg_dataops.common.config import Config

# An approval older than a day approves a preview of a database that has moved on: rerun instead.
APPROVAL_MAX_MINUTES = 1440


def target_param(cfg: Config, description: str) -> dict[str, Param]:
    return {"target": Param(cfg.target_names[0], enum=cfg.target_names, title="Target", description=description)}


def backup_params(cfg: Config, *, from_database: bool) -> dict[str, Param]:
    """backup_date and backup_key (and from_database for the partial restores)."""
    params = {
        "backup_date": Param(None, type=["null", "string"], title="Backup date (YYYYMMDD)",
                             description=f"The day of the backup, in {cfg.timezone} (e.g. 20261125). A date with no "
                                         "backup, or with several, is refused naming the backups that exist."
                                         + (" Leave empty when using from_database." if from_database else "")),
        "backup_key": Param(None, type=["null", "string"], title="Backup key (optional)",
                            description="The S3 key or file name of one backup (e.g. glimpse_daily_20261125_"
                                        "020000.dump), when the date has several or instead of the date."),
    }
    if from_database:
        params["from_database"] = Param(
            None, type=["null", "string"], title="Or: from a recovered database",
            description="A database on the target's server holding the data as you want it, e.g. glimpse_recovery "
                        "made by pg_pitr_restore (\"as of 14:29\"). Not the target database itself. Leave the "
                        "backup fields empty then.")
    return params


def approval_params(cfg: Config, *, step: str) -> dict[str, Param]:
    """confirm and approval_timeout_minutes for the approval of ``step`` ("the swap", "the apply", ...)."""
    return {
        "confirm": Param(None, type=["null", "string"], title="Confirm in advance",
                         description=f"The target database's name approves {step} without waiting (runs from the "
                                     "REST API or airflow dags trigger -c). Empty: approve in the UI (Required "
                                     "Actions). Anything else is refused before any work."),
        "approval_timeout_minutes": Param(cfg.restore.approval_timeout_minutes,
                                          type="integer", minimum=1, maximum=APPROVAL_MAX_MINUTES,
                                          title="Approval timeout (minutes)",
                                          description=f"Nobody approving within this time rejects {step}."),
    }


def restore_dagrun_timeout(cfg: Config) -> dt.timedelta:
    """The run's backstop: twice the RTO for the work, plus the longest approval wait a form allows."""
    return dt.timedelta(hours=cfg.rto_objective_hours * 2, minutes=APPROVAL_MAX_MINUTES)

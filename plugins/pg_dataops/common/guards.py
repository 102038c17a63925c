"""Guards every deleting step shares (logical and PITR retention): the refusal errors, the clock check
against the storage server, and strict booleans from rendered params. Airflow-free."""

from __future__ import annotations

import datetime as dt
import email.utils
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pg_dataops.common.errors import BackupError, PermanentError
from pg_dataops.common.s3 import describe_error


class RetentionError(BackupError):
    """Retention could not list or delete backups; the message says where and why (retried)."""


class RetentionRefused(RetentionError, PermanentError):
    """The listing looks wrong, so nothing is deleted; fails the task at once. ``plan`` is set when a plan was made."""

    def __init__(self, message: str, plan: Any = None):
        super().__init__(message)
        self.plan = plan


class RetentionParamError(PermanentError):
    """A run parameter (``dry_run``, ``max_delete_fraction``, ``targets``) is not a value retention accepts."""


def check_clock(now: dt.datetime, server_time: dt.datetime, max_skew: dt.timedelta, *, server: str) -> None:
    """RetentionRefused when this clock and the storage server's differ by more than ``max_skew``.

    Every age is measured from ``now``: a worker clock 20 days fast ages every backup 20 days. Which
    of the two clocks is wrong cannot be told from here, so either way nothing is deleted.
    """
    if now.tzinfo is None or server_time.tzinfo is None:
        raise ValueError("check_clock needs timezone-aware times")
    skew = now - server_time
    if abs(skew) > max_skew:
        direction = "ahead of" if skew > dt.timedelta(0) else "behind"
        raise RetentionRefused(
            f"retention refused: this worker's clock ({now.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC) is "
            f"{age_text(abs(skew))} {direction} the clock of {server} "
            f"({server_time.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC), more than "
            f"retention.max_future_skew_minutes ({max_skew.total_seconds() / 60:g}); every backup's age would be "
            "wrong by as much. Fix the clock (NTP) of the worker or of the storage server"
        )


def age_text(delta: dt.timedelta) -> str:
    """'20.0 days', '3.5 hours', '90 minutes': ages and clock skews in the units a human compares them in."""
    hours = delta.total_seconds() / 3600
    if hours >= 48:
        return f"{hours / 24:.1f} days"
    if hours >= 2:
        return f"{hours:.1f} hours"
    return f"{delta.total_seconds() / 60:.0f} minutes"


def s3_server_time(client, bucket: str) -> dt.datetime:
    """The S3 server's clock: the ``Date`` header of its answer to a HEAD of the bucket."""
    try:
        resp = client.head_bucket(Bucket=bucket)
    except (ClientError, BotoCoreError) as exc:
        raise RetentionError(f"cannot reach s3://{bucket} to read its clock: {describe_error(exc)}") from None
    date = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        moment = email.utils.parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError):
        moment = None
    if moment is None or moment.tzinfo is None:
        raise RetentionRefused(
            f"retention refused: S3 at {client.meta.endpoint_url} sent no usable Date header ({date!r}), so this "
            "worker's clock cannot be checked against it"
        )
    return moment


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def as_bool(value: Any, name: str) -> bool:
    """A rendered template may be a bool or its text; anything else is an error, never a default."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise RetentionParamError(f"{name}: expected true or false, got {value!r}")

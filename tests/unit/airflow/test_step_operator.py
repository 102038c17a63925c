"""StepOperator: template fields become attributes; a missing one is an error at DAG-build time."""

from __future__ import annotations

import pytest
from pg_dataops.backup.operators import CreateScratchDatabaseOperator
from pg_dataops.drill.operators import FindLatestBackupOperator
from pg_dataops.retention.operators import ApplyRetentionOperator


def test_template_fields_become_attributes_with_class_defaults():
    op = CreateScratchDatabaseOperator(task_id="create", target="glimpse")
    assert (op.target, op.kind) == ("glimpse", "verify")
    op = ApplyRetentionOperator(task_id="retention", dry_run=True, notify=False)
    assert (op.dry_run, op.max_delete_fraction, op.targets, op.notify) == (True, None, None, False)


def test_a_missing_field_is_named():
    with pytest.raises(TypeError, match="FindLatestBackupOperator: missing keyword argument.* 'target'"):
        FindLatestBackupOperator(task_id="find_latest")

"""pg_restore_drill: restore the newest backup from S3 into a scratch database and time it (RTO).

``fetch``: the newest backup of a target in S3, downloaded and proven; ``rto``: the ``restore_drills``
row, the RTO verdict and the Slack report; ``operators``: the DAG's tasks over them.
"""

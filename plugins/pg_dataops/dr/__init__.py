"""Disaster recovery: standby, failover, replication checks, RDS snapshots (issue 12)"""

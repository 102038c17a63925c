"""pg_backup: dump, checksum, upload, manifest, verify and record one backup per target."""

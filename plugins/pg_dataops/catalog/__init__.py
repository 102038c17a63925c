"""The backup catalog: its tables, and its rebuild from the manifests in S3."""

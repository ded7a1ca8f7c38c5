"""The query layer: DuckDB views over every table of the workspace, and the audits built on them."""

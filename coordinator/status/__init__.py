"""The status report: one table built from live state or from database rows."""

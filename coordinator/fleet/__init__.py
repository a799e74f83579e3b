"""Several hosts, one orchestration: submit, runners that claim instances from Postgres
(on pgqueuer), leases, take-over and the fence."""

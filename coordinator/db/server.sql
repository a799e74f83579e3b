-- Statements about the embedded server itself (not the store's schema).

-- name: other_clients
-- Client sessions other than the asking one: someone is using the server.
SELECT count(*) FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid();

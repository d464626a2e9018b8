-- Serving processes, one row each, heartbeat written every `liveness.heartbeat_secs` and
-- deleted on clean shutdown. `certkeep rekey` refuses while any row is fresh. (On SQLite a
-- lock file next to the database also keeps a second process out.)
CREATE TABLE server_instances (
    id            BLOB PRIMARY KEY,
    host          TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    started_at    TEXT NOT NULL,
    heartbeat_at  TEXT NOT NULL
);

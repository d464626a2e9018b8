-- PostgreSQL only: triggers notifying the agent listener caches of other servers. One server
-- owns a SQLite database (its lock file), and it invalidates its cache in-process (see
-- server/src/db/agent_changes.rs). This file keeps both migration lists alike.
SELECT 1;

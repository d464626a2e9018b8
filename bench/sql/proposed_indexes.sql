-- Tried in part 3 (`scale --sql-after-load bench/sql/proposed_indexes.sql`), NOT recommended:
-- makes each current-version probe of the `expiring_within` list an index-only scan (9 us
-- instead of 12 us per probe), but the list's p99 under load stayed at ~57 ms because the cost is
-- the walk over certificates in id order. See BENCHMARKS.md, part 3, proposal P6.
CREATE INDEX certificate_versions_id_not_after ON certificate_versions (id) INCLUDE (not_after);

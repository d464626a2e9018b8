-- Issuance engine: one certificate version per order, so completing an order twice (after a
-- crash between storing and acknowledging) can never store a second version.
CREATE UNIQUE INDEX certificate_versions_order ON certificate_versions(order_id) WHERE order_id IS NOT NULL;
-- Leases: claimable orders are found by due time among the unfinished ones.
CREATE INDEX orders_lease ON orders(lease_expires_at) WHERE state NOT IN ('done', 'failed');

-- Pigeon on PostgreSQL, version 4: which vendor carried a push to which devices, per node's
-- delivery row (the SQLite store's `deliveries.vendors`), so a push's split by channel
-- outlives a restart. Encoded as pigeon_store::encode_vendor_sets writes it; rows from before
-- have none.
ALTER TABLE deliveries ADD COLUMN vendors BYTEA;
ALTER TABLE deliveries ALTER COLUMN vendors SET STORAGE EXTERNAL;

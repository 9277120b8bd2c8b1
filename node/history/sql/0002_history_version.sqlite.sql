-- Which recording of a bucket wins: the one of the later counter state, by its version (see
-- the PostgreSQL migration of the same number). Rows written before it count as version 0.
ALTER TABLE counter_history ADD COLUMN version INTEGER NOT NULL DEFAULT 0;

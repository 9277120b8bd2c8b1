-- Counter history: each changed counter's value per time bucket, written by the first live
-- replica of the counter's shard. One row per (counter, bucket); a later recording of the
-- same bucket replaces the value only if it was recorded later (recorded_at), so retried
-- and overlapping writes are harmless.
CREATE TABLE counter_history (
    tenant      text        NOT NULL,
    namespace   text        NOT NULL,
    name        text        NOT NULL,
    bucket      timestamptz NOT NULL,  -- start of the bucket: floor(unix time / bucket_s) * bucket_s
    value       bigint      NOT NULL,  -- the counter's value at recorded_at
    recorded_at timestamptz NOT NULL,  -- when the recording node took the value
    PRIMARY KEY (tenant, namespace, name, bucket)
);

-- Rollups read a whole namespace by time.
CREATE INDEX counter_history_by_namespace ON counter_history (tenant, namespace, bucket);

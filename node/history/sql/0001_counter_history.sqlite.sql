-- Counter history in the embedded store: the same table as in PostgreSQL, with times as
-- unix seconds (bucket: integer, recorded_at: real), since SQLite has no timestamp type.
CREATE TABLE counter_history (
    tenant      TEXT    NOT NULL,
    namespace   TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    bucket      INTEGER NOT NULL,
    value       INTEGER NOT NULL,
    recorded_at REAL    NOT NULL,
    PRIMARY KEY (tenant, namespace, name, bucket)
) WITHOUT ROWID;

CREATE INDEX counter_history_by_namespace ON counter_history (tenant, namespace, bucket);

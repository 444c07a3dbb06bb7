-- cdclab warehouse schema, version 2: the shared dead-letter tables (dlq.*).
-- Applied once at lab start by infra/postgres/migrate.sh (both launchers, through initdb.sh), recorded
-- in public.schema_version. Idempotent (IF NOT EXISTS). Never edit a version that a lab has applied:
-- add the next V<n>__<name>.sql instead (migrate.sh refuses a changed file).

CREATE SCHEMA IF NOT EXISTS dlq;

-- cdclab.recovery (interval ledger and validation results)
CREATE TABLE IF NOT EXISTS dlq.rejected_rows (
    id             bigserial PRIMARY KEY,
    pipeline       text NOT NULL,
    source_table   text NOT NULL,
    row_key        text NOT NULL,
    row_data       jsonb NOT NULL,
    reason         text NOT NULL,
    interval_start timestamptz NOT NULL,
    rejected_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (pipeline, source_table, row_key)
);

ALTER TABLE dlq.rejected_rows ADD COLUMN IF NOT EXISTS resolved_at timestamptz;

-- cdclab.cdc.consumer (Kafka offsets committed with the data)
CREATE TABLE IF NOT EXISTS dlq.kafka_records (
    id              bigserial PRIMARY KEY,
    consumer_group  text NOT NULL,
    topic           text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    record_key      text,
    record_value    text,
    reason          text NOT NULL,
    failed_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (consumer_group, topic, kafka_partition, kafka_offset)
);

-- cdclab.files.state (file manifest, watermark, audit, chunks)
CREATE TABLE IF NOT EXISTS dlq.file_quarantine (
    id                bigserial   PRIMARY KEY,
    pipeline          text        NOT NULL,
    bucket            text        NOT NULL,
    key               text        NOT NULL,
    etag              text        NOT NULL,
    quarantine_bucket text        NOT NULL,
    quarantine_key    text        NOT NULL,
    reason            text        NOT NULL,
    detail            text        NOT NULL,
    byte_offset       bigint,
    at                timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- cdclab.files.logs (lost log generations, lines that do not parse)
CREATE TABLE IF NOT EXISTS dlq.log_gap (
    id               bigserial   PRIMARY KEY,
    pipeline         text        NOT NULL,
    log_path         text        NOT NULL,
    lost_fingerprint text        NOT NULL,
    lost_inode       bigint      NOT NULL,
    lost_from_offset bigint      NOT NULL,
    detail           text        NOT NULL,
    at               timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE IF NOT EXISTS dlq.log_bad_lines (
    pipeline    text        NOT NULL,
    fingerprint text        NOT NULL,
    byte_offset bigint      NOT NULL,
    line        text        NOT NULL,
    reason      text        NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (pipeline, fingerprint, byte_offset)
);

-- cdclab warehouse schema, version 1: the shared state tables (state.*).
-- Applied once at lab start by infra/postgres/migrate.sh (both launchers, through initdb.sh), recorded
-- in public.schema_version. Idempotent (IF NOT EXISTS). Never edit a version that a lab has applied:
-- add the next V<n>__<name>.sql instead (migrate.sh refuses a changed file).

CREATE SCHEMA IF NOT EXISTS state;

-- cdclab.state (watermarks with history, run metrics)
CREATE TABLE IF NOT EXISTS state.watermarks (
    key                text PRIMARY KEY,
    value              text NOT NULL,
    value_type         text NOT NULL
    CHECK (value_type IN ('timestamptz', 'bigint', 'text', 'json')),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    updated_by_dag_id  text,
    updated_by_run_id  text
);

CREATE TABLE IF NOT EXISTS state.watermark_history (
    id          bigserial PRIMARY KEY,
    key         text NOT NULL,
    old_value   text,
    new_value   text NOT NULL,
    value_type  text NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    dag_id      text,
    run_id      text,
    reason      text NOT NULL
);

CREATE INDEX IF NOT EXISTS watermark_history_key_idx ON state.watermark_history (key, id);

CREATE TABLE IF NOT EXISTS state.run_metrics (
    id             bigserial PRIMARY KEY,
    pipeline       text NOT NULL,
    strategy       text NOT NULL,
    dag_id         text,
    run_id         text,
    interval_start timestamptz,
    interval_end   timestamptz,
    rows_read      bigint NOT NULL,
    rows_written   bigint NOT NULL,
    duration_ms    double precision NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- cdclab.diagnostics (the processed-interval ledger)
CREATE TABLE IF NOT EXISTS state.processed_intervals (
    id             bigserial PRIMARY KEY,
    pipeline       text NOT NULL,
    interval_start timestamptz NOT NULL,
    interval_end   timestamptz NOT NULL,
    rows_loaded    bigint NOT NULL,
    cutoff         timestamptz NOT NULL DEFAULT clock_timestamp(),
    run_id         text,
    kind           text NOT NULL DEFAULT 'load',
    CHECK (interval_start < interval_end)
);

-- cdclab.recovery (interval ledger and validation results)
CREATE TABLE IF NOT EXISTS state.interval_ledger (
    pipeline       text NOT NULL,
    interval_start timestamptz NOT NULL,
    interval_end   timestamptz NOT NULL,
    status         text NOT NULL CHECK (status IN ('succeeded', 'failed')),
    attempts       integer NOT NULL,
    rows_loaded    integer,
    rows_rejected  integer,
    error          text,
    run_id         text,
    updated_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (pipeline, interval_start)
);

CREATE TABLE IF NOT EXISTS state.validation_results (
    id              bigserial PRIMARY KEY,
    pipeline        text NOT NULL,
    interval_start  timestamptz NOT NULL,
    source_rows     integer NOT NULL,
    target_rows     integer NOT NULL,
    rejected_rows   integer NOT NULL,
    source_checksum text NOT NULL,
    target_checksum text NOT NULL,
    ok              boolean NOT NULL,
    checked_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- cdclab.cdc.consumer (Kafka offsets committed with the data)
CREATE TABLE IF NOT EXISTS state.kafka_offsets (
    consumer_group text NOT NULL,
    topic          text NOT NULL,
    kafka_partition integer NOT NULL,
    next_offset    bigint NOT NULL CHECK (next_offset >= 0),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    updated_by     text,
    PRIMARY KEY (consumer_group, topic, kafka_partition)
);

-- cdclab.files.state (file manifest, watermark, audit, chunks)
CREATE TABLE IF NOT EXISTS state.file_manifest (
    pipeline        text        NOT NULL,
    bucket          text        NOT NULL,
    key             text        NOT NULL,
    etag            text        NOT NULL,
    kind            text        NOT NULL DEFAULT 'data' CHECK (kind IN ('data', 'manifest')),
    batch_id        text,
    size            bigint      NOT NULL,
    last_modified   timestamptz NOT NULL,
    sha256          text,
    row_count       bigint,
    expected_rows   bigint,
    expected_sha256 text,
    status          text        NOT NULL DEFAULT 'discovered'
            CHECK (status IN ('discovered', 'loaded', 'quarantined', 'failed', 'archived')),
    attempts        integer     NOT NULL DEFAULT 0,
    error           text,
    discovered_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    loaded_at       timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (pipeline, bucket, key, etag)
);

CREATE INDEX IF NOT EXISTS file_manifest_pending ON state.file_manifest (pipeline, status);

CREATE TABLE IF NOT EXISTS state.file_watermark (
    pipeline      text        PRIMARY KEY,
    last_modified timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE IF NOT EXISTS state.file_audit (
    id         bigserial   PRIMARY KEY,
    pipeline   text        NOT NULL,
    action     text        NOT NULL
       CHECK (action IN ('archive', 'quarantine', 'delete', 'expire', 'reprocess', 'receipt')),
    src_bucket text        NOT NULL,
    src_key    text        NOT NULL,
    dst_bucket text,
    dst_key    text,
    etag       text,
    size       bigint,
    reason     text,
    at         timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX IF NOT EXISTS file_audit_pipeline ON state.file_audit (pipeline, action, at);

CREATE TABLE IF NOT EXISTS state.file_chunks (
    pipeline    text    NOT NULL,
    bucket      text    NOT NULL,
    key         text    NOT NULL,
    etag        text    NOT NULL,
    chunk_no    integer NOT NULL,
    start_byte  bigint  NOT NULL,
    end_byte    bigint  NOT NULL,
    status      text    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'loaded', 'failed')),
    row_count   bigint,
    attempts    integer NOT NULL DEFAULT 0,
    error       text,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (pipeline, bucket, key, etag, chunk_no)
);

-- cdclab.delta (row-hash snapshots)
CREATE TABLE IF NOT EXISTS state.row_hashes (snapshot text NOT NULL, row_key text NOT NULL, row_hash text NOT NULL, taken_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (snapshot, row_key));

-- cdclab.strategy (strategy recommendations)
CREATE TABLE IF NOT EXISTS state.strategy_recommendations (
    id           bigserial PRIMARY KEY,
    pipeline     text NOT NULL,
    run_id       text,
    source_table text NOT NULL,
    strategy     text NOT NULL CHECK (strategy IN ('full','timestamp','version','hash','log_cdc')),
    reasons      jsonb NOT NULL,
    profile      jsonb NOT NULL,
    decided_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- cdclab.statebackup (backups of the state tables)
CREATE TABLE IF NOT EXISTS state.state_backups (
    scope        text NOT NULL,
    version      integer NOT NULL,
    bucket       text NOT NULL,
    object_key   text NOT NULL,
    sha256       text NOT NULL,
    watermarks   integer NOT NULL,
    offsets      integer NOT NULL,
    run_id       text,
    taken_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (scope, version)
);

-- cdclab.perf (the 71.7 performance comparisons)
CREATE TABLE IF NOT EXISTS state.perf_runs (
    id           bigserial PRIMARY KEY,
    experiment   text NOT NULL,
    variant      text NOT NULL,
    dag_id       text,
    run_id       text,
    rows_read    bigint,
    rows_written bigint,
    duration_ms  double precision,
    details      jsonb NOT NULL DEFAULT '{}',
    recorded_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX IF NOT EXISTS perf_runs_experiment_idx ON state.perf_runs (experiment, id);

-- cdclab.opsdocs (the operations docs index)
CREATE TABLE IF NOT EXISTS state.docs_index (
    doc_uri      text NOT NULL,
    position     integer NOT NULL,
    level        integer NOT NULL,
    title        text NOT NULL,
    anchor       text NOT NULL,
    run_id       text,
    generated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (doc_uri, position)
);

-- cdclab.files.logs (the log-file cursor, 71_09_02)
CREATE TABLE IF NOT EXISTS state.log_cursor (
    pipeline    text        NOT NULL,
    log_path    text        NOT NULL,
    fingerprint text        NOT NULL,
    inode       bigint      NOT NULL,
    file_name   text        NOT NULL,
    byte_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (pipeline, log_path)
);

-- cdclab.cdc.replication (incremental snapshot requests and replication checks, 71_09_01)
CREATE TABLE IF NOT EXISTS state.replication_snapshots (
    source_table text PRIMARY KEY, signal_id text NOT NULL, requested_at timestamptz NOT NULL DEFAULT now(),
    requested_by text);

CREATE TABLE IF NOT EXISTS state.replication_checks (
    checked_at timestamptz NOT NULL DEFAULT now(), source_table text NOT NULL, target_table text NOT NULL,
    source_rows bigint NOT NULL, target_rows bigint NOT NULL, source_md5 text, target_md5 text,
    equal boolean NOT NULL, dag_run text);

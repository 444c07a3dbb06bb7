-- cdclab warehouse schema, version 7: the first-arrivals ledger and the late-events log of event-time
-- processing (cdclab.arrivals; written by 71_02_03_event_time), until now created at task time.
-- Applied once at lab start by infra/postgres/migrate.sh (both launchers, through initdb.sh), recorded
-- in public.schema_version. Idempotent (IF NOT EXISTS). Never edit a version that a lab has applied:
-- add the next V<n>__<name>.sql instead (migrate.sh refuses a changed file).
-- A ledger or log named by a run's params instead (a test's own table) is made LIKE these two
-- (cdclab.arrivals.ensure_ledger / ensure_late_log), so their columns are declared here only.

CREATE SCHEMA IF NOT EXISTS state;
CREATE SCHEMA IF NOT EXISTS dlq;

-- one row per order, written once (ON CONFLICT DO NOTHING): when the pipeline first saw it, its
-- event-time window and the verdict, which later updates of the order never change
CREATE TABLE IF NOT EXISTS state.orders_arrivals_71_02_03 (
    order_id          bigint PRIMARY KEY,
    event_time        timestamptz NOT NULL,
    first_seen_at     timestamptz NOT NULL,
    window_start      timestamptz NOT NULL,
    window_end        timestamptz NOT NULL,
    arrival           text NOT NULL,
    first_seen_by_run text
);

-- first arrivals that were not applied (too late, or a future event time: clock skew), with the reason
CREATE TABLE IF NOT EXISTS dlq.orders_late_events (
    order_id       bigint NOT NULL,
    event_time     timestamptz NOT NULL,
    seen_at        timestamptz NOT NULL,
    window_start   timestamptz,
    window_end     timestamptz,
    arrival        text NOT NULL,
    reason         text NOT NULL,
    interval_start timestamptz,
    seen_by_run    text,
    PRIMARY KEY (order_id, seen_at)
);

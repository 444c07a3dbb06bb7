-- cdclab warehouse schema, version 5: alerts, the critical findings of a monitoring run as a user sees
-- them (cdclab.alerts; written by 71_10_04's notifier, read by people and the "CDC lab" page).
-- Applied once at lab start by infra/postgres/migrate.sh (both launchers, through initdb.sh), recorded
-- in public.schema_version. Idempotent (IF NOT EXISTS). Never edit a version that a lab has applied:
-- add the next V<n>__<name>.sql instead (migrate.sh refuses a changed file).

CREATE SCHEMA IF NOT EXISTS marts;

-- one row per (run, check, subject): a notifier that runs twice for a run (a success and a failure
-- callback, a retried callback) delivers each alert once
CREATE TABLE IF NOT EXISTS marts.alerts (
    id              bigserial PRIMARY KEY,
    raised_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    dag_id          text NOT NULL,
    run_id          text NOT NULL,
    task_id         text,
    scope           text NOT NULL,
    check_name      text NOT NULL,
    subject         text NOT NULL,
    severity        text NOT NULL CHECK (severity IN ('warning', 'critical')),
    summary         text NOT NULL,
    detail          jsonb NOT NULL DEFAULT '{}'::jsonb,
    acknowledged    boolean NOT NULL DEFAULT false,
    acknowledged_at timestamptz,
    UNIQUE (dag_id, run_id, check_name, subject)
);

CREATE INDEX IF NOT EXISTS alerts_open_idx ON marts.alerts (acknowledged, raised_at DESC);

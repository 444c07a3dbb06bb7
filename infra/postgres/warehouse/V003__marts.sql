-- cdclab warehouse schema, version 3: lab-wide targets: pipeline health (cdclab.health, 71_10_02 and 71_10_04).
-- Applied once at lab start by infra/postgres/migrate.sh (both launchers, through initdb.sh), recorded
-- in public.schema_version. Idempotent (IF NOT EXISTS). Never edit a version that a lab has applied:
-- add the next V<n>__<name>.sql instead (migrate.sh refuses a changed file).

CREATE SCHEMA IF NOT EXISTS marts;

CREATE TABLE IF NOT EXISTS marts.pipeline_health (
    id              bigserial PRIMARY KEY,
    scope           text NOT NULL,
    run_id          text,
    measured_for    timestamptz NOT NULL,
    metric          text NOT NULL,
    subject         text NOT NULL,
    value           double precision,
    warn_threshold  double precision NOT NULL,
    alert_threshold double precision NOT NULL,
    status          text NOT NULL CHECK (status IN ('ok', 'warn', 'alert')),
    detail          text NOT NULL,
    checked_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX IF NOT EXISTS pipeline_health_latest_idx
    ON marts.pipeline_health (scope, metric, subject, id DESC);

CREATE OR REPLACE VIEW marts.pipeline_health_dashboard AS
SELECT DISTINCT ON (scope, metric, subject)
       scope, metric, subject, status, value, warn_threshold, alert_threshold, detail, measured_for,
       checked_at, CASE status WHEN 'alert' THEN 2 WHEN 'warn' THEN 1 ELSE 0 END AS severity
FROM marts.pipeline_health
ORDER BY scope, metric, subject, id DESC;

-- cdclab warehouse schema, version 4: which target each consumer group replicates a topic into.
-- Applied once at lab start by infra/postgres/migrate.sh (both launchers, through initdb.sh), recorded
-- in public.schema_version. Idempotent (IF NOT EXISTS). Never edit a version that a lab has applied:
-- add the next V<n>__<name>.sql instead (migrate.sh refuses a changed file).

-- cdclab.cdc.consumer: a group's offsets describe one target; a run writing a topic elsewhere is refused
CREATE TABLE IF NOT EXISTS state.kafka_group_targets (
    consumer_group text NOT NULL,
    topic          text NOT NULL,
    target         text NOT NULL,
    bound_at       timestamptz NOT NULL DEFAULT now(),
    bound_by       text,
    PRIMARY KEY (consumer_group, topic)
);

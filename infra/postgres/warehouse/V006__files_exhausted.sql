-- cdclab warehouse schema, version 6: a file that used up its attempts is visible as 'exhausted' in the
-- manifest ledger instead of staying 'failed' and silently left out of the pending set (issue 11, item 8).
-- Applied once at lab start by infra/postgres/migrate.sh (both launchers, through initdb.sh), recorded
-- in public.schema_version. Idempotent: the status check is dropped if present and added again, in one
-- statement. Never edit a version that a lab has applied: add the next V<n>__<name>.sql instead.

-- cdclab.files.state: statuses of state.file_manifest (+ 'exhausted')
ALTER TABLE state.file_manifest
    DROP CONSTRAINT IF EXISTS file_manifest_status_check,
    ADD CONSTRAINT file_manifest_status_check
        CHECK (status IN ('discovered', 'loaded', 'quarantined', 'failed', 'exhausted', 'archived'));

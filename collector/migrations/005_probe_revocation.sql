-- coverwatch schema, migration 005: revoking a probe (coverwatch probes revoke).
-- A revoked probe keeps its registry entry and its readings (they are the coverage
-- record); it loses its broker credentials, and probe_health says it is revoked so that
-- dashboards stop counting it as stale. `coverwatch probes add` for the same id clears it.
ALTER TABLE probes ADD COLUMN revoked_at timestamptz;
COMMENT ON COLUMN probes.revoked_at IS
    'when the probe''s broker credentials were revoked; NULL while it is in service';

-- Same columns as in 001, in the same order, plus "revoked" at the end.
CREATE OR REPLACE VIEW probe_health AS
SELECT s.probe_id,
       p.village,
       p.lon,
       p.lat,
       s.state,
       s.state_changed_at,
       s.last_seen,
       s.last_taken_at,
       s.boot_id,
       s.agent_version,
       coalesce(p.report_interval_s, 300) AS report_interval_s,
       (s.last_seen IS NULL
        OR s.last_seen < now() - make_interval(secs => 3 * coalesce(p.report_interval_s, 300)))
           AS stale,
       (p.probe_id IS NOT NULL) AS registered,
       (p.revoked_at IS NOT NULL) AS revoked
FROM probe_status s
LEFT JOIN probes p USING (probe_id);

-- Auditor queries by actor and by time range (the export and the daily report).
CREATE INDEX IF NOT EXISTS events_actor ON {schema}.events (actor, seq);
CREATE INDEX IF NOT EXISTS events_occurred ON {schema}.events (occurred_at);
CREATE INDEX IF NOT EXISTS events_recorded ON {schema}.events (recorded_at);

-- Pigeon on PostgreSQL, version 2: geofences, and where each device stands with each of
-- them (the SQLite store's `geofences` and `fence_states`).

-- Geofences: the record as JSON (serde's, as the SQLite store keeps it). A deleted fence
-- keeps its row with no body, so the change feed can tell the other nodes it is gone; its
-- change is numbered like devices' and pushes' (see pigeon_change_base()).
CREATE TABLE geofences (
    app_key TEXT NOT NULL,
    geofence_id TEXT NOT NULL,
    body TEXT,
    created_ms BIGINT NOT NULL,
    change_id BIGINT NOT NULL DEFAULT pigeon_change_base(),
    PRIMARY KEY (app_key, geofence_id)
);
CREATE INDEX geofences_by_change ON geofences (change_id);
CREATE INDEX geofences_by_app_created ON geofences (app_key, created_ms, geofence_id)
    WHERE body IS NOT NULL;

-- Where each device stands with each fence: written only when that changes, merged into
-- the stored row (fired or'ed, each last-fired time the later one).
CREATE TABLE fence_states (
    app_key TEXT NOT NULL,
    ordinal BIGINT NOT NULL,
    geofence_id TEXT NOT NULL,
    inside BOOLEAN NOT NULL,
    entered_ms BIGINT NOT NULL,
    stay_due_ms BIGINT,
    lat DOUBLE PRECISION NOT NULL,
    lon DOUBLE PRECISION NOT NULL,
    fired INT NOT NULL,
    last_enter_ms BIGINT NOT NULL,
    last_leave_ms BIGINT NOT NULL,
    last_stay_ms BIGINT NOT NULL,
    PRIMARY KEY (app_key, ordinal, geofence_id)
);
-- Pending stays, by when they are due.
CREATE INDEX fence_states_by_due ON fence_states (stay_due_ms)
    WHERE stay_due_ms IS NOT NULL;
CREATE INDEX fence_states_by_fence ON fence_states (app_key, geofence_id);

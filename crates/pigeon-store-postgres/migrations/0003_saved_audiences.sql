-- Pigeon on PostgreSQL, version 3: segments and A/B tests (the SQLite store's
-- `saved_audiences` and `abtest_pushes`).

-- Segments (kind 'segment') and A/B tests (kind 'abtest'): the record as JSON, as the SQLite
-- store keeps it; a deleted one keeps its row with no body so the change feed can tell the
-- other nodes it is gone.
CREATE TABLE saved_audiences (
    app_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    body TEXT,
    created_ms BIGINT NOT NULL,
    change_id BIGINT NOT NULL DEFAULT pigeon_change_base(),
    PRIMARY KEY (app_key, kind, id)
);
CREATE INDEX saved_audiences_by_change ON saved_audiences (change_id);

-- The pushes of each A/B test. Written by a trigger on pushes, so a push and its place in
-- its test are one insert whichever path stores it (one push, or a group in one statement).
CREATE TABLE abtest_pushes (
    app_key TEXT NOT NULL,
    abtest_id TEXT NOT NULL,
    msg_id BIGINT NOT NULL,
    PRIMARY KEY (app_key, abtest_id, msg_id)
);

CREATE FUNCTION pigeon_abtest_push() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    test TEXT := NEW.body::jsonb -> 'split' ->> 'abtest_id';
BEGIN
    IF test IS NOT NULL THEN
        INSERT INTO abtest_pushes (app_key, abtest_id, msg_id)
        VALUES (NEW.app_key, test, NEW.msg_id)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;

-- Only bodies that mention a split are parsed: every other push costs a substring search.
CREATE TRIGGER pushes_abtest AFTER INSERT ON pushes FOR EACH ROW
    WHEN (strpos(NEW.body, '"split":') > 0)
    EXECUTE FUNCTION pigeon_abtest_push();

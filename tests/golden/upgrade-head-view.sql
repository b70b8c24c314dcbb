SET lock_timeout = '5s';

SELECT pg_advisory_lock(7362001, hashtext(current_schema()));

BEGIN;

CREATE TABLE cnpg_trace_summaries_version (
    version_num VARCHAR(32) NOT NULL, 
    CONSTRAINT cnpg_trace_summaries_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> 00000000000001

/* cnpg-trace-summaries: create otel_traces, or adopt the one there */
DO $block$
DECLARE
    target constant pg_catalog.text := pg_catalog.current_schema();
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    DECLARE
        existing constant pg_catalog.regclass := to_regclass(format('%I.%I', target, 'otel_traces'));
        hypertable pg_catalog.bool := false;
        problems pg_catalog.text;
    BEGIN
        IF existing IS NOT NULL AND coalesce(obj_description(existing, 'pg_class'), '') LIKE '%created by cnpg-trace-summaries%' THEN
            RAISE NOTICE 'otel_traces in schema % was created by an earlier, interrupted run of this revision: kept', target;
            EXIT work;
        END IF;
        IF existing IS NOT NULL THEN
            -- What the summaries read of a span, in types they can read it as.
            SELECT string_agg(CASE
                       WHEN a.attname IS NULL THEN format('it has no column %I', wanted.name)
                       WHEN wanted.name = 'timestamp' AND a.atttypid = 'timestamp'::regtype THEN
                           'its "timestamp" is timestamp without time zone, which each session would '
                           'read in its own TimeZone (refreshers and triggers alike): convert it in a '
                           'maintenance window, e.g. ALTER TABLE ' || existing::text || ' ALTER COLUMN '
                           '"timestamp" TYPE timestamptz USING "timestamp" AT TIME ZONE ''UTC'' (if its '
                           'values are UTC)'
                       ELSE format('its column %I is %s, not %s', wanted.name,
                                   format_type(a.atttypid, a.atttypmod), wanted.kinds)
                   END, '; ' ORDER BY wanted.position)
            INTO problems
            FROM (VALUES (1, 'timestamp', 'timestamp with time zone', ARRAY['timestamptz']),
                         (2, 'trace_id', 'text', ARRAY['text', 'varchar', 'bpchar']),
                         (3, 'span_id', 'text', ARRAY['text', 'varchar', 'bpchar']),
                         (4, 'parent_span_id', 'text', ARRAY['text', 'varchar', 'bpchar']),
                         (5, 'name', 'text', ARRAY['text', 'varchar', 'bpchar']),
                         (6, 'kind', 'an integer', ARRAY['int2', 'int4', 'int8']),
                         (7, 'start_time_unix_nano', 'bigint', ARRAY['int8']),
                         (8, 'end_time_unix_nano', 'bigint', ARRAY['int8']),
                         (9, 'service_name', 'text', ARRAY['text', 'varchar', 'bpchar']),
                         (10, 'status_code', 'an integer', ARRAY['int2', 'int4', 'int8']),
                         (11, 'status_message', 'text', ARRAY['text', 'varchar', 'bpchar']))
                 AS wanted(position, name, kinds, types)
            LEFT JOIN pg_attribute AS a
                   ON a.attrelid = existing AND a.attname = wanted.name AND NOT a.attisdropped
            WHERE a.attname IS NULL
               OR NOT (SELECT typname FROM pg_type WHERE oid = a.atttypid) = ANY (wanted.types);
            IF problems IS NOT NULL THEN
                RAISE EXCEPTION 'otel_traces in schema % cannot be adopted: %', target, problems;
            END IF;
            RAISE NOTICE 'otel_traces already exists in schema %: adopting it as it is, data, indexes and owner kept', target;
            IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
                EXECUTE 'SELECT EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable '
                        'WHERE schema_name = $1 AND table_name = $2)' INTO hypertable USING target, 'otel_traces';
                IF NOT hypertable THEN
                    RAISE NOTICE 'the adopted otel_traces stays a plain table: turning it into a hypertable locks it '
                        'while every span is copied. In a maintenance window, run: '
                        'SELECT create_hypertable(%L, %L, migrate_data => true)', existing::text, 'timestamp';
                END IF;
            END IF;
            EXIT work;
        END IF;
        EXECUTE format($create$CREATE TABLE %I.otel_traces (
            "timestamp" timestamptz NOT NULL,
            "trace_id" text,
            "span_id" text,
            "parent_span_id" text,
            "name" text,
            "kind" integer,
            "start_time_unix_nano" bigint,
            "end_time_unix_nano" bigint,
            "service_name" text,
            "service_version" text,
            "service_instance" text,
            "scope_name" text,
            "scope_version" text,
            "status_code" integer,
            "status_message" text,
            "attributes" text,
            "resource_attributes" text,
            "events" text,
            "links" text,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY ("timestamp", trace_id, span_id)
        )$create$, target);
        EXECUTE format('COMMENT ON TABLE %I.otel_traces IS %L', target,
                       'OpenTelemetry spans, one row per span (created by cnpg-trace-summaries, revision 00000000000001)');
        -- A new, empty table: building its indexes here blocks nobody.
        EXECUTE format('CREATE INDEX idx_otel_traces_trace_id ON %I.otel_traces (trace_id)', target);
        EXECUTE format('CREATE INDEX idx_otel_traces_service_timestamp ON %I.otel_traces '
                       '(service_name, "timestamp" DESC)', target);
        IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
            -- named in the extension's schema: this block resolves nothing through search_path
            EXECUTE format('SELECT %I.create_hypertable(%L, %L, chunk_time_interval => interval %L, '
                           'create_default_indexes => false)',
                           (SELECT n.nspname FROM pg_extension AS e JOIN pg_namespace AS n ON n.oid = e.extnamespace
                            WHERE e.extname = 'timescaledb'),
                           format('%I.otel_traces', target), 'timestamp', '1 day');
            RAISE NOTICE 'otel_traces is a TimescaleDB hypertable on "timestamp", in chunks of a day';
        END IF;
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$block$;

/* cnpg-trace-summaries: plan the indexes otel_traces lacks */
DO $block$
DECLARE
    target constant pg_catalog.text := pg_catalog.current_schema();
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    DECLARE
        store constant pg_catalog.regclass := to_regclass(format('%I.%I', target, 'otel_traces'));
        kind pg_catalog.char;
        hypertable pg_catalog.bool := false;
        need pg_catalog.record;
        ours pg_catalog.oid;
        ours_valid pg_catalog.bool;
        part pg_catalog.record;
        index_name pg_catalog.text;
        leftover pg_catalog.oid;
    BEGIN
        DROP TABLE IF EXISTS pg_temp.cnpg_trace_summaries_plan;
        CREATE TEMPORARY TABLE cnpg_trace_summaries_plan (
            step serial, statement text NOT NULL, retry boolean NOT NULL DEFAULT false);
        IF store IS NULL THEN
            EXIT work;
        END IF;
        kind := (SELECT relkind FROM pg_class WHERE oid = store);
        IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
            EXECUTE 'SELECT EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable '
                    'WHERE schema_name = $1 AND table_name = $2)' INTO hypertable USING target, 'otel_traces';
        END IF;
        FOR need IN SELECT * FROM (VALUES ('idx_otel_traces_trace_id', 'trace_id', '(trace_id)', ARRAY['btree', 'hash']),
                     ('idx_otel_traces_timestamp', 'timestamp', '("timestamp")', ARRAY['btree', 'brin']))
              AS needed(name, column_name, definition, access_methods) LOOP
            SELECT i.indexrelid, i.indisvalid INTO ours, ours_valid
            FROM pg_class AS c JOIN pg_index AS i ON i.indexrelid = c.oid
            WHERE c.relname = need.name AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = store)
              AND i.indrelid = store;
            IF hypertable THEN
                -- CREATE INDEX CONCURRENTLY is refused on a hypertable. The index goes ON ONLY
                -- the hypertable (its parent, empty: a catalog-only statement), then one is
                -- built concurrently on each chunk that lacks a valid one; TimescaleDB takes
                -- a chunk's index of the same definition for the hypertable's, and gives new
                -- chunks theirs.
                IF EXISTS (SELECT 1 FROM pg_attribute AS a
                        JOIN pg_index AS i ON i.indrelid = a.attrelid AND i.indkey[0] = a.attnum
                        JOIN pg_class AS ic ON ic.oid = i.indexrelid
                        JOIN pg_am AS am ON am.oid = ic.relam
                        WHERE a.attrelid = store AND a.attname = need.column_name
                          AND i.indisvalid AND i.indisready AND i.indislive AND i.indpred IS NULL
                          AND am.amname = ANY (need.access_methods)
                          AND i.indcollation[0] = a.attcollation) AND ours IS NULL THEN
                    CONTINUE;  -- an index of the collector's own serves the summaries
                END IF;
                IF ours IS NULL THEN
                    INSERT INTO pg_temp.cnpg_trace_summaries_plan (statement, retry) VALUES (format(
                        'CREATE INDEX IF NOT EXISTS %I ON ONLY %I.otel_traces %s WITH (timescaledb.transaction_per_chunk)',
                        need.name, target, need.definition), true);
                    INSERT INTO pg_temp.cnpg_trace_summaries_plan (statement) VALUES (format('COMMENT ON INDEX %I.%I IS %L', target,
                        need.name, 'created by cnpg-trace-summaries on an adopted otel_traces, revision 00000000000001'));
                END IF;
                FOR part IN SELECT ch.oid, format('%I.%I', n.nspname, ch.relname) AS qualified, ch.relname, n.nspname
                            FROM pg_inherits AS inh JOIN pg_class AS ch ON ch.oid = inh.inhrelid
                            JOIN pg_namespace AS n ON n.oid = ch.relnamespace
                            WHERE inh.inhparent = store ORDER BY ch.oid LOOP
                    IF EXISTS (SELECT 1 FROM pg_attribute AS a
                        JOIN pg_index AS i ON i.indrelid = a.attrelid AND i.indkey[0] = a.attnum
                        JOIN pg_class AS ic ON ic.oid = i.indexrelid
                        JOIN pg_am AS am ON am.oid = ic.relam
                        WHERE a.attrelid = part.oid AND a.attname = need.column_name
                          AND i.indisvalid AND i.indisready AND i.indislive AND i.indpred IS NULL
                          AND am.amname = ANY (need.access_methods)
                          AND i.indcollation[0] = a.attcollation) THEN
                        CONTINUE;
                    END IF;
                    index_name := left(part.relname || '_' || need.name, 63);
                    leftover := (SELECT x.oid FROM pg_class AS x JOIN pg_index AS xi ON xi.indexrelid = x.oid
                                 WHERE x.relname = index_name AND x.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = part.oid)
                                   AND xi.indrelid = part.oid AND NOT xi.indisvalid);
                    INSERT INTO pg_temp.cnpg_trace_summaries_plan (statement) VALUES (CASE
                        WHEN leftover IS NOT NULL THEN format('REINDEX INDEX CONCURRENTLY %s', CAST(leftover AS regclass))
                        ELSE format('CREATE INDEX CONCURRENTLY IF NOT EXISTS %I ON %s %s', index_name, part.qualified, need.definition)
                    END);
                END LOOP;
                CONTINUE;
            END IF;
            IF EXISTS (SELECT 1 FROM pg_attribute AS a
                        JOIN pg_index AS i ON i.indrelid = a.attrelid AND i.indkey[0] = a.attnum
                        JOIN pg_class AS ic ON ic.oid = i.indexrelid
                        JOIN pg_am AS am ON am.oid = ic.relam
                        WHERE a.attrelid = store AND a.attname = need.column_name
                          AND i.indisvalid AND i.indisready AND i.indislive AND i.indpred IS NULL
                          AND am.amname = ANY (need.access_methods)
                          AND i.indcollation[0] = a.attcollation) THEN
                CONTINUE;
            END IF;
            IF kind = 'p' THEN
                -- A partitioned table: an index ON ONLY the parent, then one built concurrently on
                -- each partition not yet attached to it, and attached; the parent's becomes valid
                -- when every partition's is attached, and new partitions get theirs from it.
                INSERT INTO pg_temp.cnpg_trace_summaries_plan (statement) VALUES (format(
                    CASE WHEN EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = store)
                         THEN 'CREATE INDEX IF NOT EXISTS %I ON ONLY %I.otel_traces %s'
                         ELSE 'CREATE INDEX IF NOT EXISTS %I ON %I.otel_traces %s' END,  -- no partition: no data
                    need.name, target, need.definition));
            ELSE
                IF ours IS NOT NULL AND NOT ours_valid THEN
                    INSERT INTO pg_temp.cnpg_trace_summaries_plan (statement)
                    VALUES (format('DROP INDEX CONCURRENTLY %I.%I', target, need.name));
                END IF;
                INSERT INTO pg_temp.cnpg_trace_summaries_plan (statement)
                VALUES (format('CREATE INDEX CONCURRENTLY %I ON %I.otel_traces %s', need.name, target, need.definition));
            END IF;
            INSERT INTO pg_temp.cnpg_trace_summaries_plan (statement) VALUES (format('COMMENT ON INDEX %I.%I IS %L', target,
                need.name, 'created by cnpg-trace-summaries on an adopted otel_traces, revision 00000000000001'));
            IF kind <> 'p' THEN
                CONTINUE;
            END IF;
            FOR part IN SELECT ch.oid, ch.relkind, format('%I.%I', n.nspname, ch.relname) AS qualified,
                               n.nspname AS schema_name
                        FROM pg_inherits AS inh JOIN pg_class AS ch ON ch.oid = inh.inhrelid
                        JOIN pg_namespace AS n ON n.oid = ch.relnamespace
                        WHERE inh.inhparent = store
                          AND NOT EXISTS (SELECT 1 FROM pg_inherits AS attached
                                          JOIN pg_index AS pi ON pi.indexrelid = attached.inhrelid
                                          WHERE attached.inhparent = ours AND pi.indrelid = ch.oid)
                        ORDER BY ch.oid LOOP
                index_name := left(need.name, 40) || '_' || left(md5(CAST(part.oid AS text)), 8);
                leftover := (SELECT x.oid FROM pg_class AS x JOIN pg_index AS xi ON xi.indexrelid = x.oid
                             WHERE x.relname = index_name AND NOT xi.indisvalid
                               AND x.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = part.oid));
                IF leftover IS NOT NULL THEN
                    INSERT INTO pg_temp.cnpg_trace_summaries_plan (statement)
                    VALUES (format('DROP INDEX CONCURRENTLY %s', CAST(leftover AS regclass)));
                END IF;
                INSERT INTO pg_temp.cnpg_trace_summaries_plan (statement) VALUES (CASE WHEN part.relkind = 'p'
                    THEN format('DO $sub$ BEGIN RAISE EXCEPTION %L; END $sub$',
                                format('partition %s of otel_traces is itself partitioned: build %s on it '
                                       'by hand (an index ON ONLY it, one per partition, attached), then upgrade again',
                                       part.qualified, need.name))
                    ELSE format('CREATE INDEX CONCURRENTLY IF NOT EXISTS %I ON %s %s', index_name,
                                part.qualified, need.definition) END);
                INSERT INTO pg_temp.cnpg_trace_summaries_plan (statement) VALUES (format('ALTER INDEX %I.%I ATTACH PARTITION %I.%I',
                    target, need.name, part.schema_name, index_name));
            END LOOP;
        END LOOP;
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$block$;

COMMIT;

SELECT statement FROM pg_temp.cnpg_trace_summaries_plan ORDER BY step\gexec
--;

DROP TABLE IF EXISTS pg_temp.cnpg_trace_summaries_plan;

BEGIN;

INSERT INTO cnpg_trace_summaries_version (version_num) VALUES ('00000000000001') RETURNING cnpg_trace_summaries_version.version_num;

COMMIT;

BEGIN;

-- Running upgrade 00000000000001 -> 00000000000007

COMMIT;

/* cnpg-trace-summaries: check what is installed: keep it, or remove what an interrupted run left */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    DECLARE
        existing pg_catalog.regclass;
        comment pg_catalog.text;
        recorded pg_catalog.text;
    BEGIN
        existing := to_regclass(format('%I.%I', target, 'otel_trace_summaries'));
        comment := coalesce(obj_description(existing, 'pg_class'), '');
        IF existing IS NOT NULL AND comment NOT LIKE '%created by cnpg-trace-summaries%' THEN
            RAISE EXCEPTION 'otel_trace_summaries already exists in schema % and was not created by this project', target
                USING HINT = 'It is probably left from an older hand-written migration. Check nothing else '
                             'depends on it, then DROP MATERIALIZED VIEW otel_trace_summaries and upgrade again.',
                      DETAIL = coalesce(nullif(comment, ''), 'no comment; not created by cnpg-trace-summaries');
        END IF;
        recorded := substring(comment from 'mode=([a-z_]+);');
        IF (recorded = 'view' AND (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries'))) = 'm')
           OR (recorded = 'incremental' AND (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries'))) = 'r' AND to_regclass(format('%I.%I', target, 'otel_trace_summaries_dirty')) IS NOT NULL AND to_regclass(format('%I.%I', target, 'otel_trace_summaries_state')) IS NOT NULL AND to_regclass(format('%I.%I', target, 'otel_trace_summaries_rebuild')) IS NOT NULL AND to_regprocedure(format('%I.%I()', target, 'otel_trace_summaries_capture')) IS NOT NULL AND to_regprocedure(format('%I.%I()', target, 'otel_trace_summaries_capture_row')) IS NOT NULL AND to_regprocedure(format('%I.%I()', target, 'otel_trace_summaries_truncated')) IS NOT NULL AND to_regprocedure(format('%I.%I(jsonb, timestamptz)', target, 'otel_trace_summaries_children')) IS NOT NULL AND to_regprocedure(format('%I.%I(timestamptz, timestamptz)', target, 'otel_trace_summaries_apply_changes')) IS NOT NULL AND to_regprocedure(format('%I.%I(timestamptz, bigint)', target, 'otel_trace_summaries_rebuild_slice')) IS NOT NULL AND to_regprocedure(format('%I.%I(regclass, text, bigint)', target, 'otel_trace_summaries_rebuild_range')) IS NOT NULL AND to_regprocedure(format('%I.%I(regclass, text, jsonb)', target, 'otel_trace_summaries_rebuild')) IS NOT NULL AND to_regprocedure(format('%I.%I(boolean, jsonb)', target, 'otel_trace_summaries_refresh')) IS NOT NULL) THEN
            RAISE NOTICE 'otel_trace_summaries in schema % is installed in % mode: kept as it is', target, recorded;
            EXIT work;
        END IF;
        IF existing IS NOT NULL OR to_regclass(format('%I.%I', target, 'otel_trace_summaries_next')) IS NOT NULL
           OR to_regclass(format('%I.%I', target, 'otel_trace_summaries_dirty')) IS NOT NULL OR to_regclass(format('%I.%I', target, 'otel_trace_summaries_state')) IS NOT NULL OR to_regclass(format('%I.%I', target, 'otel_trace_summaries_rebuild')) IS NOT NULL OR to_regprocedure(format('%I.%I()', target, 'otel_trace_summaries_capture')) IS NOT NULL OR to_regprocedure(format('%I.%I()', target, 'otel_trace_summaries_capture_row')) IS NOT NULL OR to_regprocedure(format('%I.%I()', target, 'otel_trace_summaries_truncated')) IS NOT NULL OR to_regprocedure(format('%I.%I(jsonb, timestamptz)', target, 'otel_trace_summaries_children')) IS NOT NULL OR to_regprocedure(format('%I.%I(timestamptz, timestamptz)', target, 'otel_trace_summaries_apply_changes')) IS NOT NULL OR to_regprocedure(format('%I.%I(timestamptz, bigint)', target, 'otel_trace_summaries_rebuild_slice')) IS NOT NULL OR to_regprocedure(format('%I.%I(regclass, text, bigint)', target, 'otel_trace_summaries_rebuild_range')) IS NOT NULL OR to_regprocedure(format('%I.%I(regclass, text, jsonb)', target, 'otel_trace_summaries_rebuild')) IS NOT NULL OR to_regprocedure(format('%I.%I(boolean, jsonb)', target, 'otel_trace_summaries_refresh')) IS NOT NULL OR EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_insert' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) OR EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_update' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) OR EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_delete' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) OR EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_truncate' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) OR EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_row_insert' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) OR EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_row_update' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) OR EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_row_delete' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) OR to_regprocedure(format('%I.%I()', target, 'otel_trace_summaries_metrics')) IS NOT NULL THEN
            RAISE NOTICE 'otel_trace_summaries in schema % was left incomplete by an interrupted run: removing it to build it again',
                target;
        PERFORM pg_advisory_xact_lock(7362002, hashtext(target));
        IF (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries'))) = 'r' THEN
            EXECUTE format($template$LOCK TABLE %1$I.otel_trace_summaries IN ACCESS EXCLUSIVE MODE$template$, target);
        ELSIF (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries'))) = 'm' THEN
            EXECUTE format($template$DROP MATERIALIZED VIEW %1$I.otel_trace_summaries$template$, target);
        END IF;
        IF (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries_next'))) = 'r' THEN
            EXECUTE format($template$LOCK TABLE %1$I.otel_trace_summaries_next IN ACCESS EXCLUSIVE MODE$template$, target);
        ELSIF (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries_next'))) = 'm' THEN
            EXECUTE format($template$DROP MATERIALIZED VIEW %1$I.otel_trace_summaries_next$template$, target);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_row_delete' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) THEN
            EXECUTE format($template$DROP TRIGGER otel_trace_summaries_capture_row_delete ON %1$I.otel_traces$template$, target);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_row_update' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) THEN
            EXECUTE format($template$DROP TRIGGER otel_trace_summaries_capture_row_update ON %1$I.otel_traces$template$, target);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_row_insert' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) THEN
            EXECUTE format($template$DROP TRIGGER otel_trace_summaries_capture_row_insert ON %1$I.otel_traces$template$, target);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_truncate' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) THEN
            EXECUTE format($template$DROP TRIGGER otel_trace_summaries_capture_truncate ON %1$I.otel_traces$template$, target);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_delete' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) THEN
            EXECUTE format($template$DROP TRIGGER otel_trace_summaries_capture_delete ON %1$I.otel_traces$template$, target);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_update' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) THEN
            EXECUTE format($template$DROP TRIGGER otel_trace_summaries_capture_update ON %1$I.otel_traces$template$, target);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'otel_trace_summaries_capture_insert' AND tgrelid = to_regclass(format('%I.%I', target, 'otel_traces'))) THEN
            EXECUTE format($template$DROP TRIGGER otel_trace_summaries_capture_insert ON %1$I.otel_traces$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I(boolean, jsonb)', target, 'otel_trace_summaries_refresh')) IS NOT NULL THEN
            EXECUTE format($template$DROP PROCEDURE %1$I.otel_trace_summaries_refresh(boolean, jsonb)$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I(regclass, text, jsonb)', target, 'otel_trace_summaries_rebuild')) IS NOT NULL THEN
            EXECUTE format($template$DROP PROCEDURE %1$I.otel_trace_summaries_rebuild(regclass, text, jsonb)$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I(regclass, text, bigint)', target, 'otel_trace_summaries_rebuild_range')) IS NOT NULL THEN
            EXECUTE format($template$DROP FUNCTION %1$I.otel_trace_summaries_rebuild_range(regclass, text, bigint)$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I(timestamptz, bigint)', target, 'otel_trace_summaries_rebuild_slice')) IS NOT NULL THEN
            EXECUTE format($template$DROP FUNCTION %1$I.otel_trace_summaries_rebuild_slice(timestamptz, bigint)$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I(timestamptz, timestamptz)', target, 'otel_trace_summaries_apply_changes')) IS NOT NULL THEN
            EXECUTE format($template$DROP FUNCTION %1$I.otel_trace_summaries_apply_changes(timestamptz, timestamptz)$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I(jsonb, timestamptz)', target, 'otel_trace_summaries_children')) IS NOT NULL THEN
            EXECUTE format($template$DROP FUNCTION %1$I.otel_trace_summaries_children(jsonb, timestamptz)$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I()', target, 'otel_trace_summaries_truncated')) IS NOT NULL THEN
            EXECUTE format($template$DROP FUNCTION %1$I.otel_trace_summaries_truncated()$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I()', target, 'otel_trace_summaries_capture_row')) IS NOT NULL THEN
            EXECUTE format($template$DROP FUNCTION %1$I.otel_trace_summaries_capture_row()$template$, target);
        END IF;
        IF to_regprocedure(format('%I.%I()', target, 'otel_trace_summaries_capture')) IS NOT NULL THEN
            EXECUTE format($template$DROP FUNCTION %1$I.otel_trace_summaries_capture()$template$, target);
        END IF;
        IF to_regclass(format('%I.%I', target, 'otel_trace_summaries_rebuild')) IS NOT NULL THEN
            EXECUTE format($template$DROP TABLE %1$I.otel_trace_summaries_rebuild$template$, target);
        END IF;
        IF to_regclass(format('%I.%I', target, 'otel_trace_summaries_state')) IS NOT NULL THEN
            EXECUTE format($template$DROP TABLE %1$I.otel_trace_summaries_state$template$, target);
        END IF;
        IF to_regclass(format('%I.%I', target, 'otel_trace_summaries_dirty')) IS NOT NULL THEN
            EXECUTE format($template$DROP TABLE %1$I.otel_trace_summaries_dirty$template$, target);
        END IF;
        IF (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries'))) = 'm' THEN
            EXECUTE format($template$DROP MATERIALIZED VIEW %1$I.otel_trace_summaries$template$, target);
        ELSIF (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries'))) = 'r' THEN
            EXECUTE format($template$DROP TABLE %1$I.otel_trace_summaries$template$, target);
        END IF;
        IF (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries_next'))) = 'm' THEN
            EXECUTE format($template$DROP MATERIALIZED VIEW %1$I.otel_trace_summaries_next$template$, target);
        ELSIF (SELECT relkind FROM pg_class WHERE oid = to_regclass(format('%I.%I', target, 'otel_trace_summaries_next'))) = 'r' THEN
            EXECUTE format($template$DROP TABLE %1$I.otel_trace_summaries_next$template$, target);
        END IF;
        EXECUTE format($template$DROP FUNCTION IF EXISTS %1$I.otel_trace_summaries_metrics()$template$, target);
        END IF;
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$;

BEGIN;

SELECT pg_catalog.set_config('cnpg_trace_summaries.refresh_interval', '2min', true), pg_catalog.set_config('cnpg_trace_summaries.reader_role', '', true), pg_catalog.set_config('cnpg_trace_summaries.require_refresh', 'no', true), pg_catalog.set_config('cnpg_trace_summaries.cron_database', '', true);

/* cnpg-trace-summaries: decide whether this run installs the summaries */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    BEGIN
        PERFORM set_config('cnpg_trace_summaries.installing',
            CASE WHEN to_regclass(format('%I.%I', target, 'otel_trace_summaries')) IS NULL THEN 'yes' ELSE 'no' END, true);
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$;

/* cnpg-trace-summaries: build the materialized view otel_trace_summaries and its indexes */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    DECLARE
        started pg_catalog.timestamptz;
        took pg_catalog.float8;
    BEGIN
        IF coalesce(current_setting('cnpg_trace_summaries.installing', true), '') <> 'yes' THEN
            EXIT work;
        END IF;
        IF current_setting('cnpg_trace_summaries.refresh_interval', true) ~ 's$' THEN
            RAISE EXCEPTION 'the view mode refreshes at most every minute (refresh_interval=% asks for more): it rescans the whole window each time',
                    current_setting('cnpg_trace_summaries.refresh_interval', true)
                USING HINT = 'Use -x summaries=incremental for intervals in seconds, or a refresh_interval of 1min or more.';
        END IF;
        started := clock_timestamp();
        EXECUTE format($template$CREATE MATERIALIZED VIEW %1$I.otel_trace_summaries
WITH (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.01,
    autovacuum_analyze_threshold = 1000
) AS
SELECT
    trace_id,
    last_span_at AS "timestamp",
    root[2] AS root_span_id,
    root[3] AS root_span_name,
    root[4] AS root_service_name,
    CAST(root[5] AS integer) AS root_span_kind,
    start_time_unix_nano,
    end_time_unix_nano,
    CASE
        WHEN start_time_unix_nano IS NULL OR end_time_unix_nano IS NULL THEN NULL
        -- times 0.000001, not divided by 1000000: the product is exact (6 decimals),
        -- so the cast rounds once, as (end - start) / 1e6 in Python does; a numeric
        -- division rounds to 16 digits first, and then the double can differ.
        ELSE CAST(
            greatest(CAST(end_time_unix_nano AS numeric) - start_time_unix_nano, 0)
            * 0.000001 AS double precision)
    END AS duration_ms,
    CAST(root[6] AS integer) AS status_code,
    root[7] AS status_message,
    service_set,
    span_count,
    error_count
FROM (
    SELECT
        trace_id,
        max("timestamp") AS last_span_at,
        min(start_time_unix_nano) AS start_time_unix_nano,
        max(end_time_unix_nano) AS end_time_unix_nano,
        coalesce(
            array_agg(DISTINCT service_name COLLATE "C") FILTER (WHERE service_name IS NOT NULL),
            CAST('{}' AS text[])) AS service_set,
        count(*) AS span_count,
        count(*) FILTER (WHERE status_code = 2) AS error_count,
        min(ARRAY[
                CASE WHEN start_time_unix_nano IS NULL THEN 'z'
                     ELSE lpad(to_hex(start_time_unix_nano # CAST(x'8000000000000000' AS bigint)), 16, '0')
                END,
                span_id, name, service_name, CAST(kind AS text), CAST(status_code AS text), status_message
            ] COLLATE "C") FILTER (WHERE parent_span_id IS NULL OR parent_span_id = '') AS root
    FROM %1$I.otel_traces
    WHERE "timestamp" > (now() AT TIME ZONE 'UTC' - interval '7 days') AT TIME ZONE 'UTC' AND trace_id <> '' AND TRUE
    GROUP BY trace_id
) AS per_trace
WITH DATA$template$, target);
        took := extract(epoch FROM clock_timestamp() - started);
        IF took > (CASE
        WHEN current_setting('cnpg_trace_summaries.refresh_interval', true) ~ '^[0-9]+s$' THEN CAST(rtrim(current_setting('cnpg_trace_summaries.refresh_interval', true), 's') AS int)
        WHEN current_setting('cnpg_trace_summaries.refresh_interval', true) ~ '^[0-9]+min$' THEN CAST(left(current_setting('cnpg_trace_summaries.refresh_interval', true), -3) AS int) * 60
        WHEN current_setting('cnpg_trace_summaries.refresh_interval', true) ~ '^[0-9]+h$' THEN CAST(rtrim(current_setting('cnpg_trace_summaries.refresh_interval', true), 'h') AS int) * 3600
    END) THEN
            RAISE EXCEPTION 'building otel_trace_summaries took % s, longer than refresh_interval=%: the view could never be fresh',
                    round(CAST(took AS numeric), 1), current_setting('cnpg_trace_summaries.refresh_interval', true)
                USING HINT = 'A concurrent refresh takes longer than the build. Choose a longer refresh_interval, or -x summaries=incremental.';
        END IF;
        EXECUTE format($template$CREATE UNIQUE INDEX idx_trace_summaries_trace_id ON %1$I.otel_trace_summaries (trace_id)$template$, target);
        EXECUTE format($template$CREATE INDEX idx_trace_summaries_timestamp ON %1$I.otel_trace_summaries ("timestamp" DESC)$template$, target);
        EXECUTE format($template$CREATE INDEX idx_trace_summaries_service_timestamp ON %1$I.otel_trace_summaries (root_service_name, "timestamp" DESC)$template$, target);
        EXECUTE format($template$ANALYZE %1$I.otel_trace_summaries$template$, target);
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$;

/* cnpg-trace-summaries: record the install on otel_trace_summaries */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    BEGIN
        IF coalesce(current_setting('cnpg_trace_summaries.installing', true), '') <> 'yes' THEN
            EXIT work;
        END IF;
        EXECUTE format('COMMENT ON MATERIALIZED VIEW %I.%I IS %L', target, 'otel_trace_summaries',
            'One row per trace over the last 7 days of otel_traces (created by cnpg-trace-summaries). mode=view; refresh_interval=' || current_setting('cnpg_trace_summaries.refresh_interval', true)
            || '; installed_at=' || to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'));
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$;

/* cnpg-trace-summaries: create the metrics function otel_trace_summaries_metrics() */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    BEGIN
        IF coalesce(current_setting('cnpg_trace_summaries.installing', true), '') <> 'yes' THEN
            EXIT work;
        END IF;
        EXECUTE format($template$CREATE FUNCTION %1$I.otel_trace_summaries_metrics() RETURNS TABLE (mode text, refresh_interval_seconds float8, stale_after_seconds float8, lag_seconds float8, newest_trace_age_seconds float8, newest_span_age_seconds float8, estimated_rows float8, populated float8, installed_age_seconds float8, last_refresh_age_seconds float8, last_refresh_duration_seconds float8, last_refresh_full float8, backlog_traces float8, capture_enabled float8, rebuild_pending float8, rebuild_pending_seconds float8, skipped_refreshes float8, refresh_lock_stuck float8, stale float8)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be$
#variable_conflict use_column
DECLARE
    relation constant regclass := to_regclass(format('%%I.%%I', %1$L, 'otel_trace_summaries'));
    traces constant regclass := to_regclass(format('%%I.%%I', %1$L, 'otel_traces'));
    checked constant timestamptz := now();
    record_text text;
    newest_trace timestamptz;
    first_unseen timestamptz;
    newest_span timestamptz;
    installed timestamptz;
    state record;
    store text;
    holder jsonb;
BEGIN
    IF relation IS NULL THEN
        RETURN;
    END IF;
    record_text := obj_description(relation, 'pg_class');
    mode := substring(record_text from 'mode=([a-z_]+);');
    refresh_interval_seconds := (CASE
        WHEN substring(record_text from 'refresh_interval=([0-9a-z]+);') ~ '^[0-9]+s$' THEN CAST(rtrim(substring(record_text from 'refresh_interval=([0-9a-z]+);'), 's') AS int)
        WHEN substring(record_text from 'refresh_interval=([0-9a-z]+);') ~ '^[0-9]+min$' THEN CAST(left(substring(record_text from 'refresh_interval=([0-9a-z]+);'), -3) AS int) * 60
        WHEN substring(record_text from 'refresh_interval=([0-9a-z]+);') ~ '^[0-9]+h$' THEN CAST(rtrim(substring(record_text from 'refresh_interval=([0-9a-z]+);'), 'h') AS int) * 3600
    END);
    stale_after_seconds := 2 * refresh_interval_seconds;
    installed := CAST(substring(record_text FROM 'installed_at=([0-9TZ:-]+)') AS timestamptz);
    installed_age_seconds := extract(epoch FROM checked - installed);
    populated := CASE WHEN (SELECT relispopulated FROM pg_class WHERE oid = relation) THEN 1 ELSE 0 END;
    IF populated = 1 THEN
        newest_trace := (SELECT max("timestamp") FROM %1$I.otel_trace_summaries);
    END IF;
    -- the first span the summaries do not show yet: written after their newest trace
    first_unseen := (SELECT min("timestamp") FROM %1$I.otel_traces
                     WHERE "timestamp" > coalesce(newest_trace, checked - interval '7 days')
                       AND "timestamp" <= checked AND trace_id <> '');
    newest_span := (SELECT max("timestamp") FROM %1$I.otel_traces
                    WHERE "timestamp" > checked - interval '7 days' AND "timestamp" <= checked
                      AND trace_id <> '');
    lag_seconds := greatest(coalesce(extract(epoch FROM checked - first_unseen), 0), 0);
    newest_trace_age_seconds := extract(epoch FROM checked - newest_trace);
    newest_span_age_seconds := extract(epoch FROM checked - newest_span);
    estimated_rows := (SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = relation);
    holder := (SELECT jsonb_build_object(
            'pid', a.pid, 'user', a.usename, 'application_name', a.application_name, 'state', a.state,
            'since', coalesce(a.state_change, a.backend_start),
            'refreshing', coalesce(a.application_name = 'pg_cron'
                                   OR a.application_name LIKE 'cnpg-trace-summaries%%'
                                   OR (a.state = 'active' AND a.query LIKE '%%otel_trace_summaries%%'), false))
        FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid = 7362002
          AND l.objid = CAST((CAST(hashtext(%1$L) AS bigint) + 4294967296) %% 4294967296 AS oid)
        LIMIT 1);
    refresh_lock_stuck := CASE WHEN holder IS NOT NULL AND NOT CAST(holder->>'refreshing' AS boolean)
                               THEN 1 ELSE 0 END;
    stale := CASE WHEN populated = 0 OR lag_seconds > stale_after_seconds OR refresh_lock_stuck = 1
                  THEN 1 ELSE 0 END;
    IF to_regclass(format('%%I.%%I', %1$L, 'otel_trace_summaries_state')) IS NOT NULL THEN
        store := %1$I.otel_trace_summaries_children(NULL, NULL)->>'store';
        SELECT * INTO state FROM %1$I.otel_trace_summaries_state;
        last_refresh_age_seconds := extract(epoch FROM checked - state.last_refresh_at);
        last_refresh_duration_seconds := state.last_refresh_seconds;
        last_refresh_full := CASE state.last_refresh_kind WHEN 'full' THEN 1 WHEN 'incremental' THEN 0 END;
        backlog_traces := (SELECT count(*) FROM (SELECT 1 FROM %1$I.otel_trace_summaries_dirty
                                                  LIMIT 10000) AS queued);
        capture_enabled := CASE WHEN CASE WHEN store = 'hypertable' THEN EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_insert' AND strpos('OA', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_update' AND strpos('OA', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_truncate' AND strpos('A', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_row_delete' AND strpos('OA', CAST(tgenabled AS text)) > 0)
             ELSE EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_insert' AND strpos('OA', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_update' AND strpos('OA', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_delete' AND strpos('OA', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_truncate' AND strpos('A', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_row_insert' AND strpos('RA', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_row_update' AND strpos('RA', CAST(tgenabled AS text)) > 0) AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = traces AND tgname = 'otel_trace_summaries_capture_row_delete' AND strpos('RA', CAST(tgenabled AS text)) > 0) END THEN 1 ELSE 0 END;
        rebuild_pending := CASE WHEN state IS NULL OR state.window_boundary IS NULL
                                     OR state.rebuild_requested IS NOT NULL THEN 1 ELSE 0 END;
        rebuild_pending_seconds := CASE WHEN rebuild_pending = 1
            THEN extract(epoch FROM checked - coalesce(state.rebuild_requested_at, installed)) END;
        skipped_refreshes := state.skips_since_refresh;
        IF mode = 'incremental' AND (capture_enabled = 0
            OR coalesce(last_refresh_age_seconds > stale_after_seconds, installed_age_seconds > stale_after_seconds)
            OR rebuild_pending_seconds > stale_after_seconds) THEN
            stale := 1;
        END IF;
    END IF;
    RETURN NEXT;
END
$cnpg_trace_summaries_body_longer_than_any_postgresql_identifier_can_be$$template$, target);
        EXECUTE format($template$REVOKE ALL ON FUNCTION %1$I.otel_trace_summaries_metrics() FROM PUBLIC$template$, target);
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$;

/* cnpg-trace-summaries: grant pg_monitor EXECUTE on otel_trace_summaries_metrics() */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    BEGIN
        IF coalesce(current_setting('cnpg_trace_summaries.installing', true), '') <> 'yes' THEN
            EXIT work;
        END IF;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pg_monitor') THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %I.otel_trace_summaries_metrics() TO pg_monitor', target);
        END IF;
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$;

/* cnpg-trace-summaries: grant the reader role SELECT on otel_trace_summaries */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    BEGIN
        IF coalesce(current_setting('cnpg_trace_summaries.reader_role', true), '') <> '' THEN
            EXECUTE format('GRANT SELECT ON %I.otel_trace_summaries TO %I', target, current_setting('cnpg_trace_summaries.reader_role', true));
        END IF;
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$;

/* cnpg-trace-summaries: schedule the refresh job where pg_cron lives in this database */
DO $in_schema$
DECLARE
    target constant pg_catalog.text := coalesce(
        NULLIF(pg_catalog.current_setting('cnpg_trace_summaries.schema', true), ''),
        pg_catalog.current_schema());
    saved constant pg_catalog.text := pg_catalog.current_setting('search_path');
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to work in: no schema on search_path (%) exists', saved;
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    <<work>>
    DECLARE
        comment constant pg_catalog.text := obj_description(
            to_regclass(format('%I.%I', target, 'otel_trace_summaries')), 'pg_class');
        mode constant pg_catalog.text := substring(comment from 'mode=([a-z_]+);');
        refresh_interval constant pg_catalog.text := substring(comment from 'refresh_interval=([0-9a-z]+);');
        job_name constant pg_catalog.text := (SELECT CASE
    WHEN octet_length(job.readable) <= 63 AND strpos(current_database(), '.') = 0
         AND strpos(current_database() || target, '~') = 0 THEN job.readable
    ELSE (SELECT left(job.readable, n) FROM generate_series(least(char_length(job.readable), 52), 0, -1) AS n
          WHERE octet_length(left(job.readable, n)) <= 52 LIMIT 1)
         || '~' || left(md5(quote_ident(current_database()) || '.' || quote_ident(target)), 10)
    END
FROM (SELECT 'otel_trace_summaries:' || current_database() || '.' || target AS readable) AS job);
        refresh constant pg_catalog.text := (CASE mode WHEN 'view' THEN format('REFRESH MATERIALIZED VIEW CONCURRENTLY %I.otel_trace_summaries', target) WHEN 'incremental' THEN format('CALL %I.otel_trace_summaries_refresh(false, CAST(NULL AS pg_catalog.jsonb))', target) END);
        schedule constant pg_catalog.text := (CASE refresh_interval
        WHEN '1s' THEN '1 seconds'
        WHEN '2s' THEN '2 seconds'
        WHEN '3s' THEN '3 seconds'
        WHEN '4s' THEN '4 seconds'
        WHEN '5s' THEN '5 seconds'
        WHEN '6s' THEN '6 seconds'
        WHEN '7s' THEN '7 seconds'
        WHEN '8s' THEN '8 seconds'
        WHEN '9s' THEN '9 seconds'
        WHEN '10s' THEN '10 seconds'
        WHEN '11s' THEN '11 seconds'
        WHEN '12s' THEN '12 seconds'
        WHEN '13s' THEN '13 seconds'
        WHEN '14s' THEN '14 seconds'
        WHEN '15s' THEN '15 seconds'
        WHEN '16s' THEN '16 seconds'
        WHEN '17s' THEN '17 seconds'
        WHEN '18s' THEN '18 seconds'
        WHEN '19s' THEN '19 seconds'
        WHEN '20s' THEN '20 seconds'
        WHEN '21s' THEN '21 seconds'
        WHEN '22s' THEN '22 seconds'
        WHEN '23s' THEN '23 seconds'
        WHEN '24s' THEN '24 seconds'
        WHEN '25s' THEN '25 seconds'
        WHEN '26s' THEN '26 seconds'
        WHEN '27s' THEN '27 seconds'
        WHEN '28s' THEN '28 seconds'
        WHEN '29s' THEN '29 seconds'
        WHEN '30s' THEN '30 seconds'
        WHEN '31s' THEN '31 seconds'
        WHEN '32s' THEN '32 seconds'
        WHEN '33s' THEN '33 seconds'
        WHEN '34s' THEN '34 seconds'
        WHEN '35s' THEN '35 seconds'
        WHEN '36s' THEN '36 seconds'
        WHEN '37s' THEN '37 seconds'
        WHEN '38s' THEN '38 seconds'
        WHEN '39s' THEN '39 seconds'
        WHEN '40s' THEN '40 seconds'
        WHEN '41s' THEN '41 seconds'
        WHEN '42s' THEN '42 seconds'
        WHEN '43s' THEN '43 seconds'
        WHEN '44s' THEN '44 seconds'
        WHEN '45s' THEN '45 seconds'
        WHEN '46s' THEN '46 seconds'
        WHEN '47s' THEN '47 seconds'
        WHEN '48s' THEN '48 seconds'
        WHEN '49s' THEN '49 seconds'
        WHEN '50s' THEN '50 seconds'
        WHEN '51s' THEN '51 seconds'
        WHEN '52s' THEN '52 seconds'
        WHEN '53s' THEN '53 seconds'
        WHEN '54s' THEN '54 seconds'
        WHEN '55s' THEN '55 seconds'
        WHEN '56s' THEN '56 seconds'
        WHEN '57s' THEN '57 seconds'
        WHEN '58s' THEN '58 seconds'
        WHEN '59s' THEN '59 seconds'
        WHEN '1min' THEN '* * * * *'
        WHEN '2min' THEN '*/2 * * * *'
        WHEN '3min' THEN '*/3 * * * *'
        WHEN '4min' THEN '*/4 * * * *'
        WHEN '5min' THEN '*/5 * * * *'
        WHEN '6min' THEN '*/6 * * * *'
        WHEN '10min' THEN '*/10 * * * *'
        WHEN '12min' THEN '*/12 * * * *'
        WHEN '15min' THEN '*/15 * * * *'
        WHEN '20min' THEN '*/20 * * * *'
        WHEN '30min' THEN '*/30 * * * *'
        WHEN '1h' THEN '0 * * * *'
        WHEN '2h' THEN '0 */2 * * *'
        WHEN '3h' THEN '0 */3 * * *'
        WHEN '4h' THEN '0 */4 * * *'
        WHEN '6h' THEN '0 */6 * * *'
        WHEN '8h' THEN '0 */8 * * *'
        WHEN '12h' THEN '0 */12 * * *'
    END);
        require_refresh constant pg_catalog.bool := coalesce(current_setting('cnpg_trace_summaries.require_refresh', true), '') = 'yes';
        -- pg_settings hides pg_cron's settings from roles that may not read them: NULL then.
        cron_database constant pg_catalog.text := coalesce(
            (SELECT setting FROM pg_settings WHERE name = 'cron.database_name'),
            nullif(current_setting('cnpg_trace_summaries.cron_database', true), ''));
        background_workers constant pg_catalog.text := (SELECT setting FROM pg_settings
                                                        WHERE name = 'cron.use_background_workers');
        cron_host constant pg_catalog.text := (SELECT setting FROM pg_settings WHERE name = 'cron.host');
        reads_settings constant pg_catalog.bool := (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
            OR pg_has_role(current_user, 'pg_read_all_settings', 'USAGE');
        has_extension pg_catalog.bool := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron');
        schedule_there pg_catalog.text;
        manual pg_catalog.text;
        problem pg_catalog.text;
    BEGIN
        IF refresh IS NULL OR schedule IS NULL THEN
            RAISE EXCEPTION 'otel_trace_summaries in schema % has no record of its mode and interval', target
                USING HINT = 'Run trace-summaries repair.';
        END IF;
        schedule_there := format('SELECT cron.schedule_in_database(%L, %L, %L, %L, username => %L)',
                                 job_name, schedule, refresh, current_database(), current_user);
        manual := 'automatic refresh of otel_trace_summaries is OFF and manual refresh is required: '
            'run "' || refresh || '" every ' || refresh_interval
            || ' (or "trace-summaries refresh --every ' || refresh_interval || '")';
        IF NOT has_extension AND cron_database = current_database()
           AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_cron') THEN
            BEGIN
                CREATE EXTENSION IF NOT EXISTS pg_cron;
                has_extension := true;
                RAISE NOTICE 'created extension pg_cron in database %', current_database();
            EXCEPTION WHEN insufficient_privilege THEN
                problem := format('pg_cron is preloaded but %s may not create it (%s): ask an administrator '
                    'to run "CREATE EXTENSION pg_cron" in database %s, then upgrade again',
                    current_user, SQLERRM, current_database());
            END;
        END IF;

        IF has_extension AND refresh_interval ~ 's$'
           AND NOT (SELECT CAST(string_to_array(substring(extversion FROM '^[0-9]+(?:[.][0-9]+)*'), '.') AS int[]) >= ARRAY[1, 5] FROM pg_extension WHERE extname = 'pg_cron') THEN
            RAISE EXCEPTION 'pg_cron % in database % schedules whole minutes only: refresh_interval=% needs pg_cron 1.5 or later; the nearest it takes is 1min',
                (SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'), current_database(), refresh_interval;
        END IF;

        IF has_extension THEN
            BEGIN
                PERFORM cron.schedule(job_name, schedule, refresh);
                RAISE NOTICE 'pg_cron job "%" scheduled: % every % (%)', job_name, refresh, refresh_interval, schedule;
                IF background_workers = 'off' THEN
                    RAISE NOTICE 'cron.use_background_workers is off: pg_cron jobs connect over libpq to cron.host (%) '
                        'as %, which needs a matching pg_hba.conf rule or a password file for the server user; '
                        'with cron.use_background_workers = on they need neither',
                        coalesce(cron_host, 'localhost'), current_user USING ERRCODE = '01000';
                END IF;
                EXIT work;
            EXCEPTION WHEN insufficient_privilege THEN
                problem := format('pg_cron is installed but %s may not schedule jobs (%s): ask an administrator '
                    'to run "GRANT USAGE ON SCHEMA cron TO %s", then upgrade again',
                    current_user, SQLERRM, quote_ident(current_user));
            END;
        END IF;

        IF problem IS NULL THEN
            IF cron_database IS NOT NULL AND cron_database <> current_database() THEN
                problem := format('pg_cron lives in database %s, not in %s: an online upgrade schedules the job '
                    'there; a script (--sql) needs this run in database %s: %s',
                    cron_database, current_database(), cron_database, schedule_there);
            ELSIF cron_database IS NULL AND NOT reads_settings THEN
                problem := format('pg_cron is not installed in database %s as far as %s can tell (pg_cron''s '
                    'settings are hidden from it: GRANT pg_read_all_settings TO %s lets the migration tell, '
                    'and -x cron_database=NAME names the database pg_cron lives in). If the server preloads '
                    'pg_cron, an administrator can run "CREATE EXTENSION pg_cron" here when this is its '
                    'cron.database_name, or else run in that database (postgres by default): %s',
                    current_database(), current_user, quote_ident(current_user), schedule_there);
            ELSE
                problem := format('pg_cron is not installed in database %s', current_database());
            END IF;
        END IF;
        IF require_refresh THEN
            RAISE EXCEPTION 'no pg_cron job will refresh otel_trace_summaries (require_refresh=yes): %', problem
                USING HINT = 'Fix what the message says and upgrade again, or upgrade without '
                             '-x require_refresh=yes and refresh another way (trace-summaries refresh --every).';
        END IF;
        RAISE NOTICE '%: %', problem, manual USING ERRCODE = '01000';
    END;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$in_schema$;

UPDATE cnpg_trace_summaries_version SET version_num='00000000000007' WHERE cnpg_trace_summaries_version.version_num = '00000000000001';

COMMIT;


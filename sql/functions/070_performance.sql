-- Concept drift: ml.performance compares each logged prediction (the one the model made, not a
-- recomputed one) with the label the application filled in later, per deployment, model version
-- (each variant, and the shadow) and window, beside the version's validation figures from its
-- metadata.

-- The ROC AUC of scores against 0/1 truths: the Mann-Whitney statistic, ties sharing ranks.
CREATE OR REPLACE FUNCTION ml._auc(p_scores float8[], p_truths int[])
RETURNS float8
LANGUAGE sql IMMUTABLE
AS $$
  WITH s AS (SELECT u.score, u.truth FROM unnest(p_scores, p_truths) u(score, truth) WHERE u.score IS NOT NULL),
       r AS (SELECT truth, rank() OVER (ORDER BY score) + (count(*) OVER (PARTITION BY score) - 1) / 2.0 AS rank FROM s),
       n AS (SELECT count(*) FILTER (WHERE truth = 1)::float8 AS pos, count(*) FILTER (WHERE truth = 0)::float8 AS neg FROM s)
  SELECT CASE WHEN n.pos > 0 AND n.neg > 0
              THEN ((SELECT sum(rank) FROM r WHERE truth = 1) - n.pos * (n.pos + 1) / 2) / (n.pos * n.neg) END
    FROM n
$$;

DROP VIEW IF EXISTS ml.performance;
DROP FUNCTION IF EXISTS ml._performance();
DROP FUNCTION IF EXISTS ml._performance(text[]);
CREATE FUNCTION ml._performance(p_windows text[] DEFAULT ARRAY['1 hour', '1 day', '7 days'])
RETURNS TABLE (
  deployment text,
  model text,
  role text,
  "window" text,
  labelled bigint,
  accuracy float8,
  log_loss float8,
  auc float8,
  mae float8,
  rmse float8,
  validation jsonb,
  degraded boolean)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
  d ml._deployments;
  v_label jsonb;
  v_join text;
  v_window record;
  v_row record;
  v_margin float8;
  v_meta jsonb;
BEGIN
  FOR d IN SELECT * FROM ml._deployments x
            WHERE x.status = 'active' AND jsonb_typeof(x.plan->'label') = 'object' AND ml._may_read(ml._reader(), x.source)
            ORDER BY x.name LOOP
    v_label := d.plan->'label';
    -- The label column must still be where the plan found it.
    CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = d.source AND a.attnum = (v_label->>'attnum')::int2
                                                              AND a.attname = v_label->>'column' AND NOT a.attisdropped);
    v_margin := coalesce((d.options->>'quality_margin')::float8, 0.05);
    SELECT string_agg(format('t.%I = (p.row_key->>%L)::%s', k->>'column', k->>'column', k->>'type'), ' AND ') INTO v_join
      FROM jsonb_array_elements(d.plan->'keys') k;
    FOR v_window IN SELECT w AS name, w::interval AS span FROM unnest(p_windows) w LOOP
      -- The latest logged prediction of each row by each version in the window, with its label.
      FOR v_row IN EXECUTE format($q$
        WITH p AS (
          SELECT DISTINCT ON (p.row_key, p.model) p.model, p.role, p.row_key, p.outputs
            FROM ml._predictions p
           WHERE p.deployment_id = $1 AND p.error IS NULL AND p.scored_at >= now() - $2
           ORDER BY p.row_key, p.model, p.scored_at DESC
        ), j AS (
          SELECT p.model, p.role, p.outputs->>%1$L AS predicted, (p.outputs->>%2$L)::float8 AS score, t.%3$I::text AS truth
            FROM p JOIN %4$s t ON %5$s
           WHERE t.%3$I IS NOT NULL
        )
        SELECT j.model, min(j.role) AS role, count(*) AS labelled,
               avg((j.predicted = j.truth)::int)::float8 AS accuracy,
               CASE WHEN bool_and(j.truth IN ('0', '1', 'true', 'false')) AND count(j.score) = count(*)
                    THEN -avg(ln(greatest(CASE WHEN j.truth IN ('1', 'true') THEN j.score ELSE 1 - j.score END, 1e-15))) END AS log_loss,
               CASE WHEN bool_and(j.truth IN ('0', '1', 'true', 'false')) AND count(j.score) = count(*)
                    THEN ml._auc(array_agg(j.score), array_agg(CASE WHEN j.truth IN ('1', 'true') THEN 1 ELSE 0 END)) END AS auc,
               CASE WHEN %6$L = 'regressor' THEN avg(abs(j.predicted::float8 - j.truth::float8)) END AS mae,
               CASE WHEN %6$L = 'regressor' THEN sqrt(avg((j.predicted::float8 - j.truth::float8) ^ 2)) END AS rmse
          FROM j GROUP BY j.model ORDER BY j.model$q$,
        v_label->>'predicted', v_label->>'score', v_label->>'column', ml._relname(d.source), v_join, v_label->>'kind')
        USING d.id, v_window.span
      LOOP
        SELECT m.metadata INTO v_meta FROM ml._models m WHERE m.name || '@' || m.version = v_row.model;
        deployment := d.name;
        model := v_row.model;
        role := v_row.role;
        "window" := v_window.name;
        labelled := v_row.labelled;
        IF v_label->>'kind' = 'classifier' THEN
          accuracy := v_row.accuracy;
          log_loss := v_row.log_loss;
          auc := v_row.auc;
          mae := NULL;
          rmse := NULL;
        ELSE
          accuracy := NULL;
          log_loss := NULL;
          auc := NULL;
          mae := v_row.mae;
          rmse := v_row.rmse;
        END IF;
        validation := (SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each(coalesce(v_meta, '{}')) e
                        WHERE e.key IN ('accuracy', 'auc', 'log_loss', 'mae', 'rmse') AND jsonb_typeof(e.value) = 'number');
        -- Worse than validation by more than the margin: accuracy and AUC lower by it (absolute),
        -- log loss, MAE and RMSE higher by it (relative).
        degraded := coalesce(accuracy < (validation->>'accuracy')::float8 - v_margin, false)
                 OR coalesce(auc < (validation->>'auc')::float8 - v_margin, false)
                 OR coalesce(log_loss > (validation->>'log_loss')::float8 * (1 + v_margin), false)
                 OR coalesce(mae > (validation->>'mae')::float8 * (1 + v_margin), false)
                 OR coalesce(rmse > (validation->>'rmse')::float8 * (1 + v_margin), false);
        RETURN NEXT;
      END LOOP;
    END LOOP;
  END LOOP;
END
$$;

CREATE VIEW ml.performance AS SELECT * FROM ml._performance() x WHERE ml._may_read_deployment_named(current_user, x.deployment);

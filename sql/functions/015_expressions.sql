-- SQL expressions as model inputs ("monthly_charges * 12"). They run in the triggers (as the
-- schema owner) and in the worker's claim, so ml.deploy accepts only what cannot do harm: one
-- expression over the table's own columns, calling immutable or stable functions that belong to
-- pg_catalog or to a superuser, without subqueries. Nothing of the expression runs at deploy:
-- it is checked as text first, then parsed into a temporary view, whose dependencies say what
-- it calls and reads.

-- Refuses text that could be more (or less) than one expression once wrapped in parentheses:
-- a ";", comments, dollar quoting, unbalanced parentheses or quotes, escape strings.
CREATE OR REPLACE FUNCTION ml._check_expression_text(p_what text, p_expr text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_len int := length(p_expr);
  v_i int := 1;
  v_c text;
  v_depth int := 0;
  v_quote text;  -- NULL outside a literal, else the quote character we are inside
  v_problem text;
BEGIN
  WHILE v_i <= v_len AND v_problem IS NULL LOOP
    v_c := substr(p_expr, v_i, 1);
    IF v_quote IS NOT NULL THEN
      IF v_c = v_quote THEN
        IF substr(p_expr, v_i + 1, 1) = v_quote THEN
          v_i := v_i + 1;  -- a doubled quote stays inside
        ELSE
          v_quote := NULL;
        END IF;
      END IF;
    ELSIF v_c IN ('''', '"') THEN
      IF v_c = '''' AND v_i > 1 AND lower(substr(p_expr, v_i - 1, 1)) = 'e'
         AND (v_i = 2 OR substr(p_expr, v_i - 2, 1) !~ '[[:alnum:]_$]') THEN
        v_problem := 'escape string literals (E''...'') are not accepted';
      END IF;
      v_quote := v_c;
    ELSIF v_c = ';' THEN
      v_problem := 'it contains ";"';
    ELSIF v_c = '$' THEN
      v_problem := 'it contains "$"';
    ELSIF substr(p_expr, v_i, 2) IN ('--', '/*') THEN
      v_problem := 'it contains a comment';
    ELSIF v_c = '(' THEN
      v_depth := v_depth + 1;
    ELSIF v_c = ')' THEN
      v_depth := v_depth - 1;
      IF v_depth < 0 THEN
        v_problem := 'it closes a parenthesis it did not open';
      END IF;
    ELSIF v_c = '\' AND current_setting('standard_conforming_strings') <> 'on' THEN
      v_problem := 'it contains a backslash and standard_conforming_strings is off';
    END IF;
    v_i := v_i + 1;
  END LOOP;
  IF v_problem IS NULL AND v_quote IS NOT NULL THEN
    v_problem := format('a %s is not closed', CASE v_quote WHEN '''' THEN 'string literal' ELSE 'quoted identifier' END);
  ELSIF v_problem IS NULL AND v_depth <> 0 THEN
    v_problem := 'its parentheses are not balanced';
  ELSIF v_problem IS NULL AND btrim(p_expr) = '' THEN
    v_problem := 'it is empty';
  END IF;
  IF v_problem IS NOT NULL THEN
    RAISE EXCEPTION '%: expression (%) is refused: %', p_what, p_expr, v_problem
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Give one SQL expression over the table''s columns, like "monthly_charges * 12".';
  END IF;
END
$$;

-- Checks an expression over p_source (p_what names it in errors: 'model input "X"', 'backfill
-- filter') and returns {"type": <oid>, "columns": [{"column", "attnum"}]}
-- (its result type and the columns it reads), or raises an error that says what is refused.
CREATE OR REPLACE FUNCTION ml._check_expression(p_source regclass, p_what text, p_expr text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_view text := 'pgscore_expression_check';
  v_view_oid oid;
  v_type oid;
  v_problem text;
  v_columns jsonb;
BEGIN
  PERFORM ml._check_expression_text(p_what, p_expr);
  BEGIN
    EXECUTE format('CREATE TEMPORARY VIEW %I AS SELECT (%s) AS x FROM %s', v_view, p_expr, p_source);
  EXCEPTION WHEN OTHERS THEN
    IF p_what = 'backfill filter' THEN
      RAISE EXCEPTION 'backfill filter "%" is not a valid condition on %: %', p_expr, p_source, SQLERRM
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RAISE EXCEPTION '%: "%" is neither a column of % nor an SQL expression over it (%)', p_what, p_expr, p_source, SQLERRM
      USING ERRCODE = 'invalid_parameter_value';
  END;
  v_view_oid := format('pg_temp.%I', v_view)::regclass;
  SELECT a.atttypid INTO v_type FROM pg_attribute a WHERE a.attrelid = v_view_oid AND a.attnum = 1;

  WITH deps AS (
    SELECT d.refclassid, d.refobjid, d.refobjsubid
      FROM pg_depend d JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
     WHERE r.ev_class = v_view_oid AND NOT (d.refclassid = 'pg_class'::regclass AND d.refobjid = v_view_oid)
  ), tree AS (
    SELECT r.ev_action::text AS action FROM pg_rewrite r WHERE r.ev_class = v_view_oid
  ), functions AS (
    -- Built-in functions and operators are pinned: they have no pg_depend rows, so the parsed
    -- tree names them. Everything else (other schemas) shows up in pg_depend too.
    SELECT d.refobjid AS fn FROM deps d WHERE d.refclassid = 'pg_proc'::regclass
    UNION
    SELECT o.oprcode FROM deps d JOIN pg_operator o ON o.oid = d.refobjid WHERE d.refclassid = 'pg_operator'::regclass
    UNION
    SELECT m[1]::oid FROM tree, regexp_matches(tree.action, ':(?:funcid|opfuncid|aggfnoid|winfnoid) (\d+)', 'g') m WHERE m[1] <> '0'
    UNION
    SELECT o.oprcode FROM tree, regexp_matches(tree.action, ':opno (\d+)', 'g') m JOIN pg_operator o ON o.oid = m[1]::oid
  )
  SELECT coalesce(
    (SELECT format('it reads table %s; an expression may read only the columns of %s', d.refobjid::regclass, p_source)
       FROM deps d WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid <> p_source LIMIT 1),
    (SELECT 'it contains a subquery' FROM tree WHERE tree.action LIKE '%{SUBLINK%'),
    (SELECT 'it casts to a domain, whose checks could run any function' FROM tree WHERE tree.action LIKE '%{COERCETODOMAIN%'),
    -- Catalog functions that run a query given as text or read files reach any table or view.
    (SELECT format('%s runs queries or reads files; an expression may only compute from its row', p.oid::regprocedure)
       FROM functions f JOIN pg_proc p ON p.oid = f.fn
      WHERE p.pronamespace = 'pg_catalog'::regnamespace
        AND (p.proname ~ '(_to_xml|_to_xmlschema|_to_xml_and_xmlschema)$'
             OR p.proname ~ '^(pg_read_|pg_ls_|pg_stat_file|lo_|ts_stat$|ts_rewrite$|query_to_|cursor_to_|dblink)')
      LIMIT 1),
    (SELECT format('%s is %s; an expression computes one value from one row', p.oid::regprocedure,
                   CASE p.prokind WHEN 'a' THEN 'an aggregate' WHEN 'w' THEN 'a window function' ELSE 'a set-returning function' END)
       FROM functions f JOIN pg_proc p ON p.oid = f.fn WHERE p.prokind <> 'f' OR p.proretset LIMIT 1),
    (SELECT format('%s is volatile; an expression may call only immutable or stable functions', p.oid::regprocedure)
       FROM functions f JOIN pg_proc p ON p.oid = f.fn WHERE p.provolatile = 'v' LIMIT 1),
    (SELECT format('%s belongs to role %s; an expression may call only functions of pg_catalog or of a superuser',
                   p.oid::regprocedure, quote_ident(o.rolname))
       FROM functions f JOIN pg_proc p ON p.oid = f.fn JOIN pg_roles o ON o.oid = p.proowner
      WHERE p.pronamespace <> 'pg_catalog'::regnamespace AND NOT o.rolsuper LIMIT 1))
    INTO v_problem;

  SELECT coalesce(jsonb_agg(jsonb_build_object('column', a.attname, 'attnum', a.attnum) ORDER BY a.attnum), '[]')
    INTO v_columns
    FROM pg_attribute a
   WHERE a.attrelid = p_source AND a.attnum IN (
     SELECT d.refobjsubid FROM pg_depend d JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
      WHERE r.ev_class = v_view_oid AND d.refclassid = 'pg_class'::regclass AND d.refobjid = p_source AND d.refobjsubid > 0);
  EXECUTE format('DROP VIEW pg_temp.%I', v_view);

  IF v_problem IS NOT NULL THEN
    RAISE EXCEPTION '%: expression (%) is refused: %', p_what, p_expr, v_problem
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'Compute the value in a generated column (ALTER TABLE ... ADD COLUMN ... GENERATED ALWAYS AS (...) STORED) and map that column.';
  END IF;
  RETURN jsonb_build_object('type', v_type, 'columns', v_columns);
END
$$;

-- Mapping a model signature onto a table: which columns feed which inputs, which outputs land
-- in which columns. ml._plan either returns the resolved plan or raises an error that names the
-- column, the model input or output, and what is wrong.
--
-- Signature (written by the worker / `pgscore model push`):
--   {"inputs":  [{"name": "X", "tensor": true, "type": "float32", "shape": [null, 4]}],
--    "outputs": [{"name": "label", "tensor": true, "type": "string", "shape": [null]},
--                {"name": "output_probability", "tensor": false}]}
-- Plan (read by the trigger generator and the worker):
--   {"keys":    [{"column": "id", "type": "bigint"}],
--    "inputs":  [{"name": "X", "type": "float32", "rank": 2, "width": 4, "array": false,
--                 "sources": [{"column": "a", "type": "real", "label": "column \"a\""}, {"expr": "b * 2", ...}]}],
--    "outputs": [{"column": "p", "output": "probabilities", "index": 1, "type": "float32",
--                 "sql_type": "real", "array": false, "exists": false}]}

CREATE OR REPLACE FUNCTION ml._relname(p_source oid)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT format('%I.%I', n.nspname, c.relname)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.oid = p_source
$$;

-- Which SQL type categories (pg_type.typcategory) can feed a tensor element type.
CREATE OR REPLACE FUNCTION ml._feeds(p_element text, p_category "char")
RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
  SELECT CASE
    WHEN p_element IN ('float32', 'float64', 'int32', 'int64') THEN p_category = 'N'
    WHEN p_element = 'bool' THEN p_category = 'B'
    WHEN p_element = 'string' THEN p_category IN ('S', 'E')
    ELSE false
  END
$$;

-- The column type a tensor element type is written to.
CREATE OR REPLACE FUNCTION ml._sql_type(p_element text)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
  SELECT CASE p_element
    WHEN 'float32' THEN 'real'
    WHEN 'float64' THEN 'double precision'
    WHEN 'float16' THEN 'real'
    WHEN 'int64' THEN 'bigint'
    WHEN 'uint32' THEN 'bigint'
    WHEN 'int32' THEN 'integer'
    WHEN 'int16' THEN 'integer'
    WHEN 'uint16' THEN 'integer'
    WHEN 'int8' THEN 'integer'
    WHEN 'uint8' THEN 'integer'
    WHEN 'bool' THEN 'boolean'
    WHEN 'string' THEN 'text'
  END
$$;

-- Whether an existing column of type p_type (typmod p_typmod) holds every value of an output
-- element type exactly: a float never goes into an integer, a float64 never into a real.
CREATE OR REPLACE FUNCTION ml._holds(p_element text, p_type oid, p_typmod int)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE
    WHEN p_element IN ('float32', 'float16') THEN p_type IN ('real'::regtype, 'double precision'::regtype) OR (p_type = 'numeric'::regtype AND p_typmod = -1)
    WHEN p_element = 'float64' THEN p_type = 'double precision'::regtype OR (p_type = 'numeric'::regtype AND p_typmod = -1)
    WHEN p_element IN ('int8', 'uint8', 'int16') THEN p_type IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype, 'real'::regtype, 'double precision'::regtype)
                                                   OR (p_type = 'numeric'::regtype AND p_typmod = -1)
    WHEN p_element IN ('uint16', 'int32') THEN p_type IN ('integer'::regtype, 'bigint'::regtype, 'double precision'::regtype) OR (p_type = 'numeric'::regtype AND p_typmod = -1)
    WHEN p_element IN ('uint32', 'int64') THEN p_type = 'bigint'::regtype OR (p_type = 'numeric'::regtype AND p_typmod = -1)
    WHEN p_element = 'bool' THEN p_type = 'boolean'::regtype
    WHEN p_element = 'string' THEN p_type = 'text'::regtype OR (p_type = 'character varying'::regtype AND p_typmod = -1)
    ELSE false
  END
$$;

-- One entry of an input mapping: a column of the table, or an SQL expression over its columns.
CREATE OR REPLACE FUNCTION ml._input_source(p_source regclass, p_input text, p_spec text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_type oid;
  v_attnum int2;
  v_checked jsonb;
  v_source jsonb;
BEGIN
  SELECT a.atttypid, a.attnum INTO v_type, v_attnum FROM pg_attribute a
   WHERE a.attrelid = p_source AND a.attname = p_spec AND a.attnum > 0 AND NOT a.attisdropped;
  IF FOUND THEN
    v_source := jsonb_build_object('column', p_spec, 'attnum', v_attnum, 'label', format('column "%s"', p_spec));
  ELSE
    v_checked := ml._check_expression(p_source, format('model input "%s"', p_input), p_spec);
    v_type := (v_checked->>'type')::oid;
    v_source := jsonb_build_object('expr', p_spec, 'columns', v_checked->'columns', 'label', format('expression (%s)', p_spec));
  END IF;

  SELECT v_source || jsonb_build_object(
           'type', format_type(t.oid, NULL),
           'category', t.typcategory,
           'element_category', e.typcategory)
    INTO STRICT v_source
    FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
   WHERE t.oid = v_type;
  RETURN v_source;
END
$$;

CREATE OR REPLACE FUNCTION ml._plan_inputs(p_source regclass, p_model text, p_signature jsonb, p_inputs jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_in jsonb;
  v_name text;
  v_type text;
  v_shape jsonb;
  v_rank int;
  v_width int;
  v_specs jsonb;
  v_sources jsonb;
  v_src jsonb;
  v_key text;
  v_all_names text;
  v_array boolean;
  v_plan jsonb := '[]';
BEGIN
  SELECT string_agg(format('%s %s%s', i->>'name', coalesce(i->>'type', 'non-tensor'), coalesce((i->'shape')::text, '')), ', ')
    INTO v_all_names FROM jsonb_array_elements(p_signature->'inputs') i;

  IF p_inputs IS NOT NULL THEN
    IF jsonb_typeof(p_inputs) <> 'object' THEN
      RAISE EXCEPTION 'inputs must be a JSON object that maps model inputs to columns, e.g. {"X": ["age", "tenure"]}'
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR v_key IN SELECT jsonb_object_keys(p_inputs) LOOP
      IF NOT EXISTS (SELECT 1 FROM jsonb_array_elements(p_signature->'inputs') i WHERE i->>'name' = v_key) THEN
        RAISE EXCEPTION 'inputs maps "%", but model % has no input of that name (its inputs: %)', v_key, p_model, v_all_names
          USING ERRCODE = 'invalid_parameter_value';
      END IF;
    END LOOP;
  END IF;

  FOR v_in IN SELECT i FROM jsonb_array_elements(p_signature->'inputs') i LOOP
    v_name := v_in->>'name';
    v_type := v_in->>'type';
    v_shape := v_in->'shape';
    IF NOT (v_in->>'tensor')::boolean THEN
      RAISE EXCEPTION 'model input "%" of % is not a tensor; pgscore feeds tensors only', v_name, p_model
        USING ERRCODE = 'feature_not_supported';
    END IF;
    IF v_type NOT IN ('float32', 'float64', 'int32', 'int64', 'bool', 'string') THEN
      RAISE EXCEPTION 'model input "%" of % has element type %, which pgscore cannot feed (it feeds float32, float64, int32, int64, bool, string)', v_name, p_model, v_type
        USING ERRCODE = 'feature_not_supported';
    END IF;
    v_rank := jsonb_array_length(v_shape);
    IF v_rank NOT IN (1, 2) THEN
      RAISE EXCEPTION 'model input "%" of % has shape %; pgscore feeds inputs of shape [N] or [N, k]', v_name, p_model, v_shape
        USING ERRCODE = 'feature_not_supported';
    END IF;
    IF jsonb_typeof(v_shape->0) = 'number' AND (v_shape->>0)::int <> 1 THEN
      RAISE EXCEPTION 'model input "%" of % has a fixed batch size of %', v_name, p_model, v_shape->>0
        USING ERRCODE = 'feature_not_supported', HINT = 'Export the model with a dynamic first dimension (skl2onnx does by default).';
    END IF;
    v_width := CASE WHEN v_rank = 1 THEN 1 WHEN jsonb_typeof(v_shape->1) = 'number' THEN (v_shape->>1)::int END;

    IF p_inputs IS NULL THEN
      IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = p_source AND a.attname = v_name AND a.attnum > 0 AND NOT a.attisdropped) THEN
        RAISE EXCEPTION 'model input "%" of % has no column of the same name in %', v_name, p_model, p_source
          USING ERRCODE = 'invalid_parameter_value',
                HINT = format('Pass inputs, e.g. {"%s": ["column_1", "column_2"]}.', v_name);
      END IF;
      v_specs := jsonb_build_array(v_name);
    ELSE
      v_specs := p_inputs->v_name;
      IF v_specs IS NULL THEN
        RAISE EXCEPTION 'inputs does not map model input "%" of % (% %)', v_name, p_model, v_type, v_shape
          USING ERRCODE = 'invalid_parameter_value', HINT = 'Every model input needs a column, a list of columns or an expression.';
      END IF;
      IF jsonb_typeof(v_specs) = 'string' THEN
        v_specs := jsonb_build_array(v_specs);
      ELSIF jsonb_typeof(v_specs) <> 'array' OR jsonb_array_length(v_specs) = 0
            OR EXISTS (SELECT 1 FROM jsonb_array_elements(v_specs) s WHERE jsonb_typeof(s) <> 'string') THEN
        RAISE EXCEPTION 'inputs maps model input "%" to %; expected a column name, an expression or a list of them', v_name, v_specs
          USING ERRCODE = 'invalid_parameter_value';
      END IF;
    END IF;

    v_sources := '[]';
    FOR v_key IN SELECT s FROM jsonb_array_elements_text(v_specs) s LOOP
      v_sources := v_sources || ml._input_source(p_source, v_name, v_key);
    END LOOP;

    v_array := jsonb_array_length(v_sources) = 1 AND v_sources->0->>'category' = 'A';
    IF v_array THEN
      v_src := v_sources->0;
      IF v_rank = 1 OR v_width = 1 THEN
        RAISE EXCEPTION '% is an array (%), but model input "%" of % takes one value per row', v_src->>'label', v_src->>'type', v_name, p_model
          USING ERRCODE = 'datatype_mismatch';
      END IF;
      IF NOT ml._feeds(v_type, (v_src->>'element_category')::"char") THEN
        RAISE EXCEPTION '% is %, but model input "%" of % needs % values', v_src->>'label', v_src->>'type', v_name, p_model, v_type
          USING ERRCODE = 'datatype_mismatch';
      END IF;
    ELSE
      FOR v_src IN SELECT s FROM jsonb_array_elements(v_sources) s LOOP
        IF v_src->>'category' = 'A' THEN
          RAISE EXCEPTION '% is an array (%); map an array column to an input on its own', v_src->>'label', v_src->>'type'
            USING ERRCODE = 'datatype_mismatch';
        END IF;
        IF NOT ml._feeds(v_type, (v_src->>'category')::"char") THEN
          RAISE EXCEPTION '% is %, but model input "%" of % needs % values', v_src->>'label', v_src->>'type', v_name, p_model, v_type
            USING ERRCODE = 'datatype_mismatch';
        END IF;
      END LOOP;
      IF v_width IS NOT NULL AND jsonb_array_length(v_sources) <> v_width THEN
        RAISE EXCEPTION 'model input "%" of % takes % values per row (shape %), but inputs maps % (%)',
          v_name, p_model, v_width, v_shape, jsonb_array_length(v_sources),
          (SELECT string_agg(s->>'label', ', ') FROM jsonb_array_elements(v_sources) s)
          USING ERRCODE = 'invalid_parameter_value';
      END IF;
      IF v_rank = 1 AND jsonb_array_length(v_sources) <> 1 THEN
        RAISE EXCEPTION 'model input "%" of % takes one value per row, but inputs maps %', v_name, p_model, jsonb_array_length(v_sources)
          USING ERRCODE = 'invalid_parameter_value';
      END IF;
    END IF;

    v_plan := v_plan || jsonb_build_array(jsonb_build_object(
      'name', v_name, 'type', v_type, 'rank', v_rank,
      'width', CASE WHEN v_array THEN v_width ELSE jsonb_array_length(v_sources) END,
      'array', v_array, 'sources', v_sources));
  END LOOP;
  RETURN v_plan;
END
$$;

CREATE OR REPLACE FUNCTION ml._plan_outputs(p_source regclass, p_model text, p_signature jsonb, p_outputs jsonb, p_taken text[])
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_specs jsonb;
  v_column text;
  v_spec text;
  v_match text[];
  v_out jsonb;
  v_output text;
  v_index int;
  v_rank int;
  v_width int;
  v_array boolean;
  v_sql_type text;
  v_exists boolean;
  v_tensors text;
  v_existing record;
  v_plan jsonb := '[]';
BEGIN
  SELECT string_agg(format('%s %s%s', o->>'name', coalesce(o->>'type', ''), coalesce((o->'shape')::text, '')), ', ')
    INTO v_tensors FROM jsonb_array_elements(p_signature->'outputs') o WHERE (o->>'tensor')::boolean;

  IF p_outputs IS NULL THEN
    SELECT coalesce(jsonb_object_agg(o->>'name', o->>'name'), '{}') INTO v_specs
      FROM jsonb_array_elements(p_signature->'outputs') o WHERE (o->>'tensor')::boolean;
    IF v_specs = '{}' THEN
      RAISE EXCEPTION 'model % has no tensor outputs pgscore can write', p_model USING ERRCODE = 'feature_not_supported';
    END IF;
  ELSIF jsonb_typeof(p_outputs) <> 'object' OR p_outputs = '{}' THEN
    RAISE EXCEPTION 'outputs must be a JSON object that maps prediction columns to model outputs, e.g. {"churn_probability": "probabilities[1]"}'
      USING ERRCODE = 'invalid_parameter_value';
  ELSE
    v_specs := p_outputs;
  END IF;

  FOR v_column, v_spec IN SELECT key, CASE WHEN jsonb_typeof(value) = 'string' THEN value #>> '{}' END FROM jsonb_each(v_specs) LOOP
    v_match := regexp_match(coalesce(v_spec, ''), '^\s*([^\[\]]+?)\s*(?:\[\s*(\d+)\s*\])?\s*$');
    IF v_match IS NULL THEN
      RAISE EXCEPTION 'outputs maps column "%" to %; expected an output name, optionally indexed, like "probabilities[1]"', v_column, v_specs->v_column
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_output := v_match[1];
    v_index := v_match[2]::int;
    SELECT o INTO v_out FROM jsonb_array_elements(p_signature->'outputs') o WHERE o->>'name' = v_output;
    IF v_out IS NULL THEN
      RAISE EXCEPTION 'outputs maps column "%" to "%", but model % has no output "%" (its tensor outputs: %)', v_column, v_spec, p_model, v_output, v_tensors
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT (v_out->>'tensor')::boolean THEN
      RAISE EXCEPTION 'output "%" of model % is not a tensor (skl2onnx''s ZipMap returns a sequence of maps), and onnxruntime-node cannot return it', v_output, p_model
        USING ERRCODE = 'feature_not_supported',
              HINT = format('Map a tensor output instead (%s), or re-export with options={id(model): {"zipmap": False}}.', v_tensors);
    END IF;
    IF ml._sql_type(v_out->>'type') IS NULL THEN
      RAISE EXCEPTION 'output "%" of model % has element type %, which pgscore cannot write', v_output, p_model, v_out->>'type'
        USING ERRCODE = 'feature_not_supported';
    END IF;
    v_rank := jsonb_array_length(v_out->'shape');
    v_width := CASE WHEN v_rank = 1 THEN 1 WHEN jsonb_typeof(v_out->'shape'->1) = 'number' THEN (v_out->'shape'->>1)::int END;
    IF v_rank NOT IN (1, 2) THEN
      RAISE EXCEPTION 'output "%" of model % has shape %; pgscore writes outputs of shape [N] or [N, k]', v_output, p_model, v_out->'shape'
        USING ERRCODE = 'feature_not_supported';
    END IF;
    IF v_index IS NOT NULL AND v_index >= coalesce(v_width, v_index + 1) THEN
      RAISE EXCEPTION 'outputs maps column "%" to "%", but output "%" of model % has % value(s) per row (shape %)', v_column, v_spec, v_output, p_model, v_width, v_out->'shape'
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_array := v_index IS NULL AND coalesce(v_width, 0) <> 1;
    v_sql_type := ml._sql_type(v_out->>'type') || CASE WHEN v_array THEN '[]' ELSE '' END;

    IF octet_length(v_column) > 63 THEN
      RAISE EXCEPTION 'prediction column name "%" is longer than 63 bytes, the most Postgres keeps', v_column
        USING ERRCODE = 'name_too_long';
    END IF;
    IF v_column = ANY (p_taken) THEN
      RAISE EXCEPTION 'column "%" is a primary key or input column of %, so it cannot hold predictions', v_column, p_source
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT a.attnum, format_type(a.atttypid, a.atttypmod) AS type, a.atttypmod AS typmod,
           CASE WHEN t.typcategory = 'A' THEN t.typelem ELSE a.atttypid END AS element, t.typcategory = 'A' AS is_array
      INTO v_existing
      FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
     WHERE a.attrelid = p_source AND a.attname = v_column AND a.attnum > 0 AND NOT a.attisdropped;
    v_exists := FOUND;
    IF v_exists AND (v_existing.is_array <> v_array OR NOT ml._holds(v_out->>'type', v_existing.element, CASE WHEN v_array THEN -1 ELSE v_existing.typmod END)) THEN
      RAISE EXCEPTION 'column "%" of % is %, but output "%" of model % gives % (%)%', v_column, p_source, v_existing.type, v_spec, p_model,
        v_out->>'type', CASE WHEN v_array THEN 'an array per row' ELSE 'one value per row' END,
        CASE WHEN v_existing.is_array = v_array AND v_out->>'type' NOT IN ('bool', 'string')
                  AND (SELECT t.typcategory = 'N' FROM pg_type t WHERE t.oid = v_existing.element)
             THEN format('; writing it into %s would round, truncate or overflow', v_existing.type) ELSE '' END
        USING ERRCODE = 'datatype_mismatch',
              HINT = format('Map another column, make this one %s, or drop it and let ml.deploy create it.', v_sql_type);
    END IF;

    v_plan := v_plan || jsonb_build_array(jsonb_build_object(
      'column', v_column, 'output', v_output, 'index', coalesce(v_index, CASE WHEN v_array THEN NULL ELSE 0 END),
      'type', v_out->>'type', 'sql_type', v_sql_type, 'array', v_array, 'width', v_width, 'exists', v_exists,
      'attnum', CASE WHEN v_exists THEN v_existing.attnum END));
  END LOOP;
  RETURN v_plan;
END
$$;

-- Provenance: by default every prediction records which model version wrote it and when, in
-- "<deployment>_model" (text, 'churn@4') and "<deployment>_scored_at" (timestamptz);
-- options => '{"provenance": false}' turns it off. Returns {"model": {...}, "scored_at": {...}}
-- with each column's name, SQL type and whether it exists, or NULL when turned off.
CREATE OR REPLACE FUNCTION ml._plan_provenance(p_source regclass, p_name text, p_options jsonb, p_plan jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_kind record;
  v_existing record;
  v_result jsonb := '{}';
BEGIN
  IF NOT coalesce((p_options->>'provenance')::boolean, true) THEN
    RETURN NULL;
  END IF;
  FOR v_kind IN
    SELECT * FROM (VALUES ('model', p_name || '_model', 'text', 'the model version that wrote each prediction'),
                          ('scored_at', p_name || '_scored_at', 'timestamp with time zone', 'when each prediction was written'))
                  k(kind, col, sql_type, what)
  LOOP
    IF v_kind.col IN (SELECT k->>'column' FROM jsonb_array_elements(p_plan->'keys') k
                      UNION ALL SELECT s->>'column' FROM jsonb_array_elements(p_plan->'inputs') i, jsonb_array_elements(i->'sources') s
                      UNION ALL SELECT o->>'column' FROM jsonb_array_elements(p_plan->'outputs') o) THEN
      RAISE EXCEPTION 'column "%" of % is mapped, but the deployment records % there', v_kind.col, p_source, v_kind.what
        USING ERRCODE = 'invalid_parameter_value', HINT = 'Map another column, or deploy with options => ''{"provenance": false}''.';
    END IF;
    SELECT format_type(a.atttypid, a.atttypmod) AS type INTO v_existing
      FROM pg_attribute a WHERE a.attrelid = p_source AND a.attname = v_kind.col AND a.attnum > 0 AND NOT a.attisdropped;
    IF FOUND AND v_existing.type NOT IN (v_kind.sql_type, CASE WHEN v_kind.kind = 'model' THEN 'character varying' END) THEN
      RAISE EXCEPTION 'column "%" of % is %, but the deployment records % there (%)', v_kind.col, p_source, v_existing.type, v_kind.what, v_kind.sql_type
        USING ERRCODE = 'datatype_mismatch', HINT = 'Drop or rename that column, or deploy with options => ''{"provenance": false}''.';
    END IF;
    v_result := v_result || jsonb_build_object(v_kind.kind, jsonb_build_object('column', v_kind.col, 'sql_type', v_kind.sql_type, 'exists', FOUND));
  END LOOP;
  RETURN v_result;
END
$$;

-- The layout of plans (and of the queue tables and triggers built from them). Version 2 added
-- attnums (renames are followed), positional queue key columns and queue retry columns.
-- `pgscore migrate` rebuilds every deployment from an older version.
CREATE OR REPLACE FUNCTION ml._plan_version()
RETURNS int
LANGUAGE sql IMMUTABLE
AS $$ SELECT 2 $$;

CREATE OR REPLACE FUNCTION ml._plan(p_source oid, p_model text, p_signature jsonb, p_inputs jsonb, p_outputs jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_source regclass := p_source;
  v_keys jsonb;
  v_inputs jsonb;
  v_taken text[];
BEGIN
  IF ml._relname(p_source) IS NULL THEN
    RAISE EXCEPTION 'the table of this deployment (oid %) no longer exists', p_source USING ERRCODE = 'undefined_table';
  END IF;
  SELECT jsonb_agg(jsonb_build_object('column', a.attname, 'attnum', a.attnum, 'type', format_type(a.atttypid, a.atttypmod)) ORDER BY k.ord)
    INTO v_keys
    FROM pg_index i
    CROSS JOIN unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
   WHERE i.indrelid = p_source AND i.indisprimary;
  IF v_keys IS NULL THEN
    RAISE EXCEPTION 'table % has no primary key', v_source
      USING ERRCODE = 'invalid_table_definition', HINT = 'pgscore writes predictions back by primary key; add one with ALTER TABLE ... ADD PRIMARY KEY.';
  END IF;

  v_inputs := ml._plan_inputs(v_source, p_model, p_signature, p_inputs);
  SELECT array_agg(DISTINCT c) INTO v_taken FROM (
    SELECT k->>'column' AS c FROM jsonb_array_elements(v_keys) k
    UNION ALL
    SELECT s->>'column' FROM jsonb_array_elements(v_inputs) i, jsonb_array_elements(i->'sources') s WHERE s ? 'column'
    UNION ALL
    SELECT c->>'column' FROM jsonb_array_elements(v_inputs) i, jsonb_array_elements(i->'sources') s, jsonb_array_elements(s->'columns') c
     WHERE s ? 'expr') t;

  RETURN jsonb_build_object(
    'version', ml._plan_version(),
    'keys', v_keys,
    'inputs', v_inputs,
    'outputs', ml._plan_outputs(v_source, p_model, p_signature, p_outputs, v_taken));
END
$$;

-- Definition tables: flows, their steps and the dependency edges between them.
-- A definition is immutable in structure once created; only tunables change.
--
-- Versions: a flow *name* (order) may have several versions, each its own
-- immutable definition with its own runs.  Version 1 is the plain slug
-- (order); version N >= 2 is the definition slug order@N, which claims, runs
-- and events use.  flow_name and version say which is which;
-- current_versions pins the version start_flow('order') starts (default:
-- the highest).

CREATE TABLE pgflow.flows (
    flow_slug        text        NOT NULL,
    opt_max_attempts integer     NOT NULL DEFAULT 3,
    opt_base_delay   integer     NOT NULL DEFAULT 1,
    opt_timeout      integer     NOT NULL DEFAULT 60,
    opt_step_events  boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    opt_heartbeat    integer,
    opt_max_delay    integer,
    opt_jitter       boolean     NOT NULL DEFAULT false,
    flow_name        text        NOT NULL,
    version          integer     NOT NULL DEFAULT 1,
    CONSTRAINT flows_pkey PRIMARY KEY (flow_slug),
    CONSTRAINT flows_flow_name_version_key UNIQUE (flow_name, version),
    CONSTRAINT flows_flow_slug_check
        CHECK (flow_name ~ '^[a-zA-Z][a-zA-Z0-9_]{0,127}$' AND flow_name <> 'run'
               AND version >= 1
               AND flow_slug = flow_name || CASE WHEN version = 1 THEN '' ELSE '@' || version END),
    CONSTRAINT flows_opt_max_attempts_check CHECK (opt_max_attempts >= 1),
    CONSTRAINT flows_opt_base_delay_check CHECK (opt_base_delay >= 1),
    CONSTRAINT flows_opt_timeout_check CHECK (opt_timeout >= 3),
    CONSTRAINT flows_opt_heartbeat_check CHECK (opt_heartbeat >= 1),
    CONSTRAINT flows_opt_max_delay_check CHECK (opt_max_delay >= 1)
);

COMMENT ON TABLE pgflow.flows IS
    'flow definitions (one per version) with their default tunables';
COMMENT ON COLUMN pgflow.flows.flow_name IS
    'the stable name of the flow (start_flow(''order'') starts its current version)';
COMMENT ON COLUMN pgflow.flows.version IS
    'the version of this definition: 1 is the plain slug, N >= 2 the slug <name>@N';
COMMENT ON COLUMN pgflow.flows.opt_step_events IS
    'when true, step status changes are announced on the pgflow_events channel';
COMMENT ON COLUMN pgflow.flows.opt_heartbeat IS
    'seconds a started task''s lease lasts before its worker must renew it (NULL: no heartbeat, the lease is the timeout)';
COMMENT ON COLUMN pgflow.flows.opt_max_delay IS
    'longest pause in seconds before a retry (NULL: no cap but 2^31 - 1)';
COMMENT ON COLUMN pgflow.flows.opt_jitter IS
    'when true, each retry waits a random time between 0 and its backoff (full jitter)';

CREATE TABLE pgflow.steps (
    flow_slug               text        NOT NULL,
    step_slug               text        NOT NULL,
    step_type               text        NOT NULL DEFAULT 'single',
    step_index              integer     NOT NULL,
    deps_count              integer     NOT NULL DEFAULT 0,
    opt_max_attempts        integer,
    opt_base_delay          integer,
    opt_timeout             integer,
    opt_start_delay         integer,
    required_input_pattern  jsonb,
    forbidden_input_pattern jsonb,
    when_unmet              text        NOT NULL DEFAULT 'skip',
    when_exhausted          text        NOT NULL DEFAULT 'fail',
    created_at              timestamptz NOT NULL DEFAULT now(),
    opt_heartbeat           integer,
    opt_max_delay           integer,
    opt_jitter              boolean,
    CONSTRAINT steps_pkey PRIMARY KEY (flow_slug, step_slug),
    CONSTRAINT steps_flow_slug_step_index_key UNIQUE (flow_slug, step_index),
    CONSTRAINT steps_flow_slug_fkey FOREIGN KEY (flow_slug)
        REFERENCES pgflow.flows (flow_slug) ON DELETE CASCADE,
    CONSTRAINT steps_step_slug_check
        CHECK (step_slug ~ '^[a-zA-Z][a-zA-Z0-9_]{0,127}$' AND step_slug <> 'run'),
    CONSTRAINT steps_step_type_check CHECK (step_type IN ('single', 'map', 'wait')),
    CONSTRAINT steps_step_index_check CHECK (step_index >= 0),
    CONSTRAINT steps_deps_count_check
        CHECK (deps_count >= 0 AND (step_type <> 'map' OR deps_count <= 1)),
    CONSTRAINT steps_opt_max_attempts_check CHECK (opt_max_attempts >= 1),
    CONSTRAINT steps_opt_base_delay_check CHECK (opt_base_delay >= 1),
    CONSTRAINT steps_opt_timeout_check CHECK (opt_timeout >= 3),
    CONSTRAINT steps_opt_start_delay_check CHECK (opt_start_delay >= 0),
    CONSTRAINT steps_required_input_pattern_check
        CHECK (jsonb_typeof(required_input_pattern) = 'object'),
    CONSTRAINT steps_forbidden_input_pattern_check
        CHECK (jsonb_typeof(forbidden_input_pattern) = 'object'),
    CONSTRAINT steps_when_unmet_check CHECK (when_unmet IN ('skip', 'skip-cascade', 'fail')),
    CONSTRAINT steps_when_exhausted_check
        CHECK (when_exhausted IN ('fail', 'skip', 'skip-cascade')),
    CONSTRAINT steps_opt_heartbeat_check CHECK (opt_heartbeat >= 1),
    CONSTRAINT steps_opt_max_delay_check CHECK (opt_max_delay >= 1)
);

COMMENT ON TABLE pgflow.steps IS
    'steps of each flow in definition (topological) order; NULL opt_* inherit the flow''s';

CREATE TABLE pgflow.deps (
    flow_slug  text        NOT NULL,
    dep_slug   text        NOT NULL,
    step_slug  text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT deps_pkey PRIMARY KEY (flow_slug, step_slug, dep_slug),
    CONSTRAINT deps_dep_fkey FOREIGN KEY (flow_slug, dep_slug)
        REFERENCES pgflow.steps (flow_slug, step_slug) ON DELETE CASCADE,
    CONSTRAINT deps_step_fkey FOREIGN KEY (flow_slug, step_slug)
        REFERENCES pgflow.steps (flow_slug, step_slug) ON DELETE CASCADE,
    CONSTRAINT deps_dep_slug_check CHECK (dep_slug <> step_slug)
);

COMMENT ON TABLE pgflow.deps IS 'dependency edges: step_slug runs after dep_slug';

CREATE INDEX deps_flow_slug_dep_slug_idx ON pgflow.deps (flow_slug, dep_slug);

-- step_waits: what each wait step (step_type 'wait') waits for: an event name
-- and the path of the key in its input ({"run": ..., "<dep>": ...}), e.g.
-- {run,order_id} for run.order_id.
CREATE TABLE pgflow.step_waits (
    flow_slug  text        NOT NULL,
    step_slug  text        NOT NULL,
    event_name text        NOT NULL,
    key_path   text[]      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT step_waits_pkey PRIMARY KEY (flow_slug, step_slug),
    CONSTRAINT step_waits_step_fkey FOREIGN KEY (flow_slug, step_slug)
        REFERENCES pgflow.steps (flow_slug, step_slug) ON DELETE CASCADE,
    CONSTRAINT step_waits_event_name_check
        CHECK (event_name ~ '^[a-zA-Z][a-zA-Z0-9_.:-]{0,127}$'),
    CONSTRAINT step_waits_key_path_check CHECK (cardinality(key_path) >= 1)
);

COMMENT ON TABLE pgflow.step_waits IS
    'what each wait step waits for: emit_event(event_name, <its input at key_path>)';

-- step_subflows: the steps whose work is a run of another flow (added by
-- add_subflow_step).  subflow names the child flow as start_flow takes it: a
-- flow name (its current version when the child starts) or one definition
-- (ingest@2); it references that definition's row, so delete_flow refuses a
-- flow some step runs as a sub-flow.
CREATE TABLE pgflow.step_subflows (
    flow_slug  text        NOT NULL,
    step_slug  text        NOT NULL,
    subflow    text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT step_subflows_pkey PRIMARY KEY (flow_slug, step_slug),
    CONSTRAINT step_subflows_step_fkey FOREIGN KEY (flow_slug, step_slug)
        REFERENCES pgflow.steps (flow_slug, step_slug) ON DELETE CASCADE,
    CONSTRAINT step_subflows_subflow_fkey FOREIGN KEY (subflow)
        REFERENCES pgflow.flows (flow_slug)
);

COMMENT ON TABLE pgflow.step_subflows IS
    'sub-flow steps: each of their tasks is a run of the flow subflow (a name: its current version)';

CREATE INDEX step_subflows_subflow_idx ON pgflow.step_subflows (subflow);

CREATE TABLE pgflow.current_versions (
    flow_name  text        NOT NULL,
    version    integer     NOT NULL,
    pinned_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT current_versions_pkey PRIMARY KEY (flow_name),
    CONSTRAINT current_versions_flow_fkey FOREIGN KEY (flow_name, version)
        REFERENCES pgflow.flows (flow_name, version) ON DELETE CASCADE
);

COMMENT ON TABLE pgflow.current_versions IS
    'the version start_flow starts for a flow name, when pinned by set_current_version (else the highest)';

SELECT pg_catalog.pg_extension_config_dump('pgflow.flows', '');
SELECT pg_catalog.pg_extension_config_dump('pgflow.current_versions', '');
SELECT pg_catalog.pg_extension_config_dump('pgflow.steps', '');
SELECT pg_catalog.pg_extension_config_dump('pgflow.deps', '');
SELECT pg_catalog.pg_extension_config_dump('pgflow.step_waits', '');
SELECT pg_catalog.pg_extension_config_dump('pgflow.step_subflows', '');

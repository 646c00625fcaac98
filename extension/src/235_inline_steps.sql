-- _inline_steps: per step, whether it starts inline: a step that waits on
-- nothing any more becomes started and gets its one task in the statement
-- that finds it ready (start_flow and start_flows for root steps,
-- _steps_finished for dependents).  That holds for a single step without
-- input conditions, concurrency limits (its tasks are parked) or a sub-flow;
-- every other step is started by _start_ready_steps.  One definition for
-- the three statements, so a new kind of step is excluded in one place.  A
-- view (not a function) so that the planner inlines it into each statement.
CREATE VIEW pgflow._inline_steps AS
SELECT s.flow_slug, s.step_slug, s.deps_count, s.opt_start_delay,
       s.step_type = 'single'
       AND s.required_input_pattern IS NULL
       AND s.forbidden_input_pattern IS NULL
       AND s.opt_concurrency IS NULL
       AND NOT EXISTS (SELECT 1 FROM pgflow.flows AS f
                       WHERE f.flow_slug = s.flow_slug AND f.opt_concurrency IS NOT NULL)
       AND NOT EXISTS (SELECT 1 FROM pgflow.step_subflows AS sf
                       WHERE sf.flow_slug = s.flow_slug AND sf.step_slug = s.step_slug) AS inline
FROM pgflow.steps AS s;

COMMENT ON VIEW pgflow._inline_steps IS
    'per step: whether it starts inline (single, no conditions, no concurrency limit, not a sub-flow)';

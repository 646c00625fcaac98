#!/usr/bin/env node
'use strict';
// A pgflow worker in JavaScript: the protocol of docs/howto/workers.md ("A worker in any
// language").  Usage: node worker.js [FLOW ...]  (default: every flow of handlers.js).
// It connects with the libpq environment (PGHOST, PGPORT, PGUSER, ...); see README.md.
const { randomUUID } = require('node:crypto');
const os = require('node:os');
const { Client } = require('pg');

// The arguments naming a task's attempt in complete_task and fail_task (`attempt` fences them: since 0.3.0).
const taskArgs = (t) => ({ run_id: t.run_id, step_slug: t.step_slug, task_index: t.task_index, attempt: t.attempt });
const CLAIM = `SELECT flow_slug, run_id, step_slug, task_index, attempt, input
  FROM pgflow.claim_tasks(flow_slug => $1, qty => $2, worker_id => $3)`;

// One statement at a time per connection (`pg` 8 queues overlapping queries, but deprecates that).
const tails = new Map();
function sql(client, text, values) {
  const result = (tails.get(client) || Promise.resolve()).then(() => client.query(text, values));
  tails.set(client, result.catch(() => {}));
  return result;
}

// SELECT pgflow.fn(name => $1, ...): named arguments, values sent as parameters.
async function call(client, fn, args) {
  const list = Object.keys(args).map((name, i) => `${name} => $${i + 1}`);
  const { rows } = await sql(client, `SELECT pgflow.${fn}(${list.join(', ')}) AS result`, Object.values(args));
  return rows[0].result;
}

const log = (message) => process.stderr.write(`${new Date().toISOString()} pgflow-node-worker: ${message}\n`);
const describe = (err) => (err instanceof Error ? `${err.name}: ${err.message}` : `Error: ${String(err)}`);

async function runWorker(flows, handlers, { concurrency = 10, pollMs = 1000 } = {}) {
  const workerId = randomUUID();
  const work = new Client({ application_name: 'pgflow-node-worker' }); // claims and reports
  const listen = new Client({ application_name: 'pgflow-node-worker listen' }); // LISTEN, idle marks
  for (const client of [work, listen]) {
    // A lost connection ends the worker: its tasks are claimed again when their leases expire.
    client.on('error', (err) => (log(`connection lost: ${err.message}`), process.exit(1)));
    await client.connect();
  }

  // Every step needs a handler; flow_shape also gives each step's timeout.
  const steps = {};
  for (const flow of flows) {
    const shape = await call(work, 'flow_shape', { flow_slug: flow });
    if (shape === null) throw new Error(`flow "${flow}" does not exist: apply its migration first`);
    for (const step of shape.steps) {
      if (step.step_type === 'wait') continue; // no task: pgflow.emit_event completes it
      const where = `step "${step.step_slug}" of flow "${flow}"`;
      if (typeof handlers[flow]?.[step.step_slug] !== 'function') throw new Error(`no handler for ${where}`);
      if (step.heartbeat) throw new Error(`${where} has a heartbeat: this worker does not call extend_leases`);
      (steps[flow] ??= {})[step.step_slug] = { handler: handlers[flow][step.step_slug], seconds: step.timeout };
    }
  }

  // The registry is optional bookkeeping: pgflow.workers, pgflow.active_tasks.
  const registration = { worker_id: workerId, flow_slugs: flows, host: os.hostname(), pid: process.pid };
  await call(work, 'register_worker', registration);
  const beat = () => call(work, 'worker_heartbeat', { worker_id: workerId })
    .then((alive) => alive || call(work, 'register_worker', registration))
    // the maintenance call: wait steps past their deadline time out
    .then(() => call(work, 'expire_waits', {}));
  const heartbeat = setInterval(() => beat().catch((err) => log(`heartbeat failed: ${err.message}`)), 5000);

  // wait() ends early on wake(): a notification for our flows, a finished task, a signal.
  let [woken, wakeUp] = [false, () => {}];
  const wake = () => ((woken = true), wakeUp());
  async function wait(ms) {
    let timer;
    if (!woken) await new Promise((resolve) => ((wakeUp = resolve), (timer = setTimeout(resolve, ms))));
    clearTimeout(timer);
    [woken, wakeUp] = [false, () => {}];
  }
  listen.on('notification', (msg) => flows.includes(msg.payload) && wake());
  await sql(listen, 'LISTEN pgflow_tasks');

  let stopping = false;
  const running = new Set();
  function onSignal(signal) {
    if (stopping) process.exit(128 + os.constants.signals[signal]);
    stopping = true;
    log(`${signal}: claiming nothing more, finishing ${running.size} running task(s)`);
    wake();
  }
  process.on('SIGTERM', onSignal).on('SIGINT', onSignal);

  async function claim(free) {
    const tasks = [];
    for (const flow of flows) {
      if (tasks.length === free) break;
      const { rows } = await sql(work, CLAIM, [flow, free - tasks.length, workerId]);
      tasks.push(...rows);
    }
    return tasks;
  }

  const counts = { completed: 0, failed: 0 };
  async function run(task) {
    const { handler, seconds } = steps[task.flow_slug][task.step_slug];
    let timer;
    try {
      const late = new Error(`timeout: the handler ran longer than ${seconds} s`);
      const overrun = new Promise((_, reject) => (timer = setTimeout(reject, Math.min(seconds * 1000, 2 ** 31 - 1), late)));
      const output = await Promise.race([(async () => handler(task.input, task))(), overrun]);
      // JSON text, not the value: `pg` would send a JS array as a SQL array.
      await call(work, 'complete_task', { ...taskArgs(task), output: JSON.stringify(output ?? null) });
      counts.completed += 1;
    } catch (err) {
      // The handler threw or overran, or PostgreSQL refused its output: a failed attempt.
      counts.failed += 1;
      log(`task failed ${JSON.stringify(taskArgs(task))}: ${describe(err)}`);
      await call(work, 'fail_task', { ...taskArgs(task), error_message: describe(err) });
    } finally {
      clearTimeout(timer);
    }
  }

  log(`worker ${workerId} serving ${flows.join(', ')}`);
  while (!stopping) {
    const free = concurrency - running.size;
    let tasks = free > 0 ? await claim(free) : [];
    if (free === 0) {
      await wait(pollMs); // until a task finishes
    } else if (tasks.length === 0) {
      woken = false;
      await call(listen, 'worker_idle', { flow_slugs: flows });
      tasks = stopping ? [] : await claim(free); // work committed before the mark sent no wake-up
      if (tasks.length === 0) await wait(pollMs);
      await call(listen, 'worker_idle', { flow_slugs: flows, idle: false });
    }
    for (const task of tasks) {
      const done = run(task)
        .catch((err) => log(`could not report a task: ${err.message}`))
        .finally(() => (running.delete(done), wake()));
      running.add(done);
    }
  }
  await Promise.all(running);
  clearInterval(heartbeat);
  await call(work, 'stop_worker', { worker_id: workerId });
  await Promise.all([work.end(), listen.end()]);
  log(`stopped: ${counts.completed} task(s) completed, ${counts.failed} failed`);
}

module.exports = { runWorker };
if (require.main === module) {
  const handlers = require('./handlers');
  const flows = process.argv.length > 2 ? process.argv.slice(2) : Object.keys(handlers);
  const [concurrency, pollMs] = [process.env.PGFLOW_CONCURRENCY || 10, process.env.PGFLOW_POLL_INTERVAL_MS || 1000];
  runWorker(flows, handlers, { concurrency: Number(concurrency), pollMs: Number(pollMs) })
    .then(() => process.exit(0), (err) => (log(`error: ${err.message}`), process.exit(1)));
}

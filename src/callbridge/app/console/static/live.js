// Live calls: the calls up now, kept current by the event stream (no polling). A call appears with its
// first event, its status and IVR node or agent change as events arrive, and it stays listed, ended,
// until the page is left.

import { followEvents, getJSON } from './api.js';
import { announce, formatDuration, h, heading, statusBadge, tableWrap } from './dom.js';

const TICK_MS = 1000; // the duration column's clock (display only: no request)
const MAX_ROWS = 200; // ended calls beyond this are dropped from the page, oldest first
const INITIAL = '/api/calls?limit=100';

/** Where a call is now: the agent it was handed to, else the last IVR node it entered, else its route. */
export function whereNow(record) {
  if (record.handoff && record.handoff.agent) return `agent ${record.handoff.agent}`;
  const nodes = (record.ivr || []).filter((step) => step.type === 'node');
  if (nodes.length) return `IVR ${nodes[nodes.length - 1].node}`;
  return record.route ? `flow ${record.route}` : '—';
}

export async function render(view) {
  const rows = new Map(); // call id -> {record, tr, cells}
  const pending = new Set(); // ids being fetched
  const state = h('p', { class: 'stream-state', role: 'status', text: 'Connecting to the event stream…' });
  const tbody = h('tbody');
  const empty = h('p', { class: 'empty', text: 'No calls right now. New calls appear here as they start.' });
  const table = h('table', { class: 'calls' },
    h('caption', { class: 'visually-hidden', text: 'Calls in progress and recently ended' }),
    h('thead', {}, h('tr', {}, ['Call', 'Direction', 'Caller', 'Called', 'Status', 'Duration', 'Now at', 'Worker']
      .map((label) => h('th', { scope: 'col', text: label })))),
    tbody);
  view.append(heading('Live calls'), state, empty, tableWrap('Live calls', table));
  let stopped = false;

  function refreshEmpty() { empty.hidden = rows.size > 0; }

  function duration(record) {
    const end = record.ended_at || Date.now() / 1000;
    return formatDuration(end - record.created_at);
  }

  function paint(entry) {
    const { record, cells, tr } = entry;
    cells.status.replaceChildren(statusBadge(record.status, record.end_reason));
    cells.now.textContent = whereNow(record);
    cells.worker.textContent = record.worker || '—';
    cells.duration.textContent = duration(record);
    tr.classList.toggle('ended', record.status === 'hangup');
    tr.dataset.status = record.status;
  }

  function add(record, { announceIt = false } = {}) {
    if (rows.has(record.id)) { rows.get(record.id).record = record; paint(rows.get(record.id)); return; }
    const cells = { status: h('td'), duration: h('td', { class: 'num' }), now: h('td'), worker: h('td') };
    const link = h('a', { href: `#/calls/${encodeURIComponent(record.id)}`, text: record.id.slice(0, 8),
                          'aria-label': `Call ${record.caller || ''} to ${record.called || ''}: details` });
    const tr = h('tr', { 'data-call-id': record.id }, h('td', {}, link), h('td', { text: record.direction }),
      h('td', { text: record.caller || '—' }), h('td', { text: record.called || '—' }),
      cells.status, cells.duration, cells.now, cells.worker);
    const entry = { record, tr, cells };
    rows.set(record.id, entry);
    tbody.prepend(tr);
    paint(entry);
    if (announceIt) announce(`New ${record.direction} call from ${record.caller || 'unknown'}`);
    while (rows.size > MAX_ROWS) {
      const oldest = [...rows.values()].find((e) => e.record.status === 'hangup') || [...rows.values()][0];
      oldest.tr.remove();
      rows.delete(oldest.record.id);
    }
    refreshEmpty();
  }

  async function fetchCall(id) {
    if (pending.has(id)) return;
    pending.add(id);
    try {
      const record = await getJSON(`/api/calls/${encodeURIComponent(id)}`);
      if (!stopped) add(record, { announceIt: true });
    } catch (error) {
      console.warn('call', id, error);
    } finally {
      pending.delete(id);
    }
  }

  function onEvent(event) {
    const entry = rows.get(event.call_id);
    if (!entry) { fetchCall(event.call_id); return; }
    const record = entry.record;
    const data = event.data || {};
    switch (event.type) {
      case 'status':
        record.status = data.status;
        if (data.status === 'active' && !record.answered_at) record.answered_at = event.at;
        if (data.status === 'hangup') {
          record.ended_at = event.at;
          record.end_reason = data.end_reason || record.end_reason;
          announce(`Call from ${record.caller || 'unknown'} ended`);
        }
        break;
      case 'route': record.route = data.route; break;
      case 'ivr': (record.ivr = record.ivr || []).push({ type: data.kind, ...data }); break;
      case 'handoff': record.handoff = { agent: data.agent, ...(data.context || {}) }; break;
      default: return;
    }
    paint(entry);
  }

  async function resync() {
    // After (re)connecting: what happened while the stream was down.
    try {
      const { calls } = await getJSON(INITIAL);
      if (stopped) return;
      for (const record of calls.slice().reverse()) {
        if (record.status !== 'hangup' || rows.has(record.id)) add(record);
      }
    } catch (error) {
      state.textContent = `Could not list the calls: ${error.message}`;
    }
  }

  refreshEmpty();
  const stop = followEvents('/api/events', onEvent, (status) => {
    state.textContent = status === 'open' ? 'Live: following call events.' : 'Event stream lost; reconnecting…';
    state.dataset.state = status;
    if (status === 'open') resync();
  });
  const clock = setInterval(() => {
    for (const entry of rows.values()) {
      if (entry.record.status !== 'hangup') entry.cells.duration.textContent = duration(entry.record);
    }
  }, TICK_MS);
  return () => { stopped = true; stop(); clearInterval(clock); };
}

// History: search the stored calls by number, status, end reason and date range, paged by the server.
// The search lives in the URL (#/history?number=…&page=…): a result can be bookmarked and Back works.

import { ApiError, getJSON } from './api.js';
import { clear, errorBox, formatDuration, formatTime, h, heading, statusBadge, tableWrap } from './dom.js';

const PAGE_SIZE = 25;
const STATUSES = ['dialing', 'ringing', 'active', 'hangup'];
const END_REASONS = ['caller_hangup', 'agent_hangup', 'transfer', 'busy', 'no_answer', 'rejected', 'failed',
  'timeout', 'error', 'no_media_ports', 'worker_lost', 'drain_deadline', 'shutdown', 'media_timeout'];
const FIELDS = ['number', 'status', 'end_reason', 'direction', 'since', 'until'];

function field(label, control) {
  return h('div', { class: 'field' }, h('label', { for: control.id, text: label }), control);
}

function select(id, name, values, current) {
  return h('select', { id, name }, h('option', { value: '', text: 'any' }),
    values.map((v) => h('option', { value: v, text: v.replace(/_/g, ' '), selected: v === current })));
}

/** datetime-local (the user's local time) to unix seconds, for the API. */
function toUnix(local) {
  const ms = new Date(local).getTime();
  return Number.isFinite(ms) ? String(Math.floor(ms / 1000)) : null;
}

export async function render(view, { query }) {
  const page = Math.max(1, parseInt(query.get('page') || '1', 10) || 1);
  const form = h('form', { role: 'search', class: 'filters', 'aria-label': 'Search calls' },
    field('Number (caller or called)', h('input', { id: 'f-number', name: 'number', type: 'search', maxlength: '64',
      value: query.get('number') || '', autocomplete: 'off' })),
    field('Status', select('f-status', 'status', STATUSES, query.get('status'))),
    field('End reason', select('f-end-reason', 'end_reason', END_REASONS, query.get('end_reason'))),
    field('Direction', select('f-direction', 'direction', ['inbound', 'outbound'], query.get('direction'))),
    field('From', h('input', { id: 'f-since', name: 'since', type: 'datetime-local', value: query.get('since') || '' })),
    field('Until', h('input', { id: 'f-until', name: 'until', type: 'datetime-local', value: query.get('until') || '' })),
    h('div', { class: 'actions' }, h('button', { type: 'submit', text: 'Search' }),
      h('button', { type: 'button', class: 'secondary', text: 'Clear filters',
        onclick: () => { location.hash = '#/history'; } })));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const name of FIELDS) {
      const value = form.elements[name].value.trim();
      if (value) params.set(name, value);
    }
    const target = '#/history' + (params.toString() ? '?' + params : '');
    if (location.hash === target) location.reload(); else location.hash = target;
  });
  const results = h('div', { class: 'results', 'aria-live': 'polite' });
  view.append(heading('History'), form, results);

  const api = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String((page - 1) * PAGE_SIZE) });
  for (const name of FIELDS) {
    const value = query.get(name);
    if (!value) continue;
    if (name === 'since' || name === 'until') {
      const unix = toUnix(value);
      if (unix) api.set(name, unix);
    } else {
      api.set(name, value);
    }
  }
  let listing;
  try {
    listing = await getJSON('/api/calls?' + api);
  } catch (error) {
    const message = error instanceof ApiError && error.body.field ? `${error.body.error}` : error;
    results.append(errorBox(message));
    return null;
  }
  const { calls, total } = listing;
  const first = total ? (page - 1) * PAGE_SIZE + 1 : 0;
  const last = (page - 1) * PAGE_SIZE + calls.length;
  const summary = h('p', { class: 'count', id: 'history-count', text: total
    ? `Calls ${first}–${last} of ${total}` : 'No calls match.' });
  const table = h('table', { class: 'calls', 'aria-describedby': 'history-count' },
    h('caption', { class: 'visually-hidden', text: 'Calls found' }),
    h('thead', {}, h('tr', {}, ['Started', 'Direction', 'Caller', 'Called', 'Status', 'Duration', 'Details']
      .map((t) => h('th', { scope: 'col', text: t })))),
    h('tbody', {}, calls.map((call) => h('tr', { 'data-call-id': call.id },
      h('td', { text: formatTime(call.created_at) }), h('td', { text: call.direction }),
      h('td', { text: call.caller || '—' }), h('td', { text: call.called || '—' }),
      h('td', {}, statusBadge(call.status, call.end_reason)),
      h('td', { class: 'num', text: formatDuration(call.duration_s) }),
      h('td', {}, h('a', { href: `#/calls/${encodeURIComponent(call.id)}`, text: 'Open',
        'aria-label': `Open call from ${call.caller || 'unknown'} at ${formatTime(call.created_at)}` }))))));
  const pageLink = (n, label) => {
    const params = new URLSearchParams(query);
    params.set('page', String(n));
    return h('a', { href: '#/history?' + params, class: 'button', text: label });
  };
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages' },
    page > 1 ? pageLink(page - 1, 'Previous page') : null,
    h('span', { text: `Page ${page} of ${Math.max(1, Math.ceil(total / PAGE_SIZE))}` }),
    last < total ? pageLink(page + 1, 'Next page') : null);
  clear(results).append(summary, calls.length ? tableWrap('Calls found', table) : null, pager);
  return null;
}

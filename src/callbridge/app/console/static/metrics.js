// Metrics overview: the last hour from the store plus the live calls. Re-read when a call changes status
// (the event stream says so), not on a timer.

import { followEvents, getJSON } from './api.js';
import { clear, errorBox, h, heading, svg, tableWrap } from './dom.js';

const REFRESH_DEBOUNCE_MS = 1000;

function card(label, value) {
  return h('div', { class: 'card' }, h('span', { class: 'card-label', text: label }),
    h('span', { class: 'card-value', text: value }));
}

const ms = (value) => (value === null || value === undefined ? '—' : `${Math.round(value)} ms`);

function perMinute(buckets) {
  const width = 600, height = 120, gap = 1;
  const peak = Math.max(1, ...buckets);
  const bar = width / buckets.length;
  return svg('svg', { class: 'per-minute', viewBox: `0 0 ${width} ${height + 16}`, role: 'img',
    'aria-label': `Calls per minute over the last hour; peak ${peak}` },
  buckets.map((count, i) => {
    const barHeight = (count / peak) * height;
    return svg('rect', { x: String(i * bar), y: String(height - barHeight), width: String(bar - gap),
      height: String(barHeight) }, svg('title', { text: `${60 - i} min ago: ${count} calls` }));
  }),
  svg('text', { x: '0', y: String(height + 14), text: '60 min ago' }),
  svg('text', { x: String(width), y: String(height + 14), 'text-anchor': 'end', text: 'now' }));
}

export async function render(view) {
  const body = h('div', { class: 'metrics' });
  const refresh = h('button', { type: 'button', class: 'secondary', text: 'Refresh now' });
  view.append(heading('Metrics'), h('p', {}, refresh, ' ', h('a', { href: '/metrics', text: 'Prometheus metrics' })), body);
  let stopped = false;
  let timer = null;

  async function draw() {
    let data;
    try { data = await getJSON('/api/overview'); } catch (error) { clear(body).append(errorBox(error)); return; }
    if (stopped) return;
    const reasons = Object.entries(data.end_reasons);
    clear(body).append(
      h('div', { class: 'cards' }, card('Active calls', String(data.active_calls)),
        card('Calls in the last hour', String(data.calls)),
        card('Turn latency p50', ms(data.turn_latency_ms.p50)), card('Turn latency p95', ms(data.turn_latency_ms.p95)),
        card('Agent turns measured', String(data.turn_latency_ms.count))),
      h('section', { class: 'panel', 'aria-labelledby': 'cpm-h' }, h('h2', { id: 'cpm-h', text: 'Calls per minute' }),
        perMinute(data.calls_per_minute)),
      h('section', { class: 'panel', 'aria-labelledby': 'er-h' }, h('h2', { id: 'er-h', text: 'End reasons (last hour)' }),
        reasons.length ? tableWrap('End reasons', h('table', {}, h('thead', {}, h('tr', {},
          h('th', { scope: 'col', text: 'Reason' }), h('th', { scope: 'col', text: 'Calls' }))),
        h('tbody', {}, reasons.map(([reason, count]) => h('tr', {}, h('td', { text: reason.replace(/_/g, ' ') }),
          h('td', { class: 'num', text: String(count) })))))) : h('p', { text: 'No call has ended in the last hour.' })),
      data.truncated ? h('p', { class: 'hint', text: 'Busy hour: only the newest calls were counted.' }) : null);
  }

  function soon() {
    if (timer) return;
    timer = setTimeout(() => { timer = null; draw(); }, REFRESH_DEBOUNCE_MS);
  }
  refresh.addEventListener('click', draw);
  await draw();
  const stop = followEvents('/api/events', (event) => { if (event.type === 'status' || event.type === 'latency') soon(); });
  return () => { stopped = true; stop(); clearTimeout(timer); };
}

// One call: lifecycle, IVR path, handoff, transcript with latency bars and tools, DTMF, media quality and
// the recording. While the call is up, its events re-read the record (no polling).

import { ApiError, followEvents, getJSON } from './api.js';
import { clear, errorBox, formatDuration, formatTime, h, heading, statusBadge, tableWrap } from './dom.js';
import { recordingPlayer } from './waveform.js';

const REFRESH_DEBOUNCE_MS = 250; // a burst of events (a menu choice is five) costs one read
const LATENCY_STAGES = [['vad', 'VAD'], ['stt', 'STT'], ['brain', 'brain'], ['tts_first_audio', 'TTS']];

const seconds = (value) => (value >= 0 ? '+' : '') + value.toFixed(2) + ' s';

function section(title, ...content) {
  const id = 'sec-' + title.toLowerCase().replace(/[^a-z]+/g, '-');
  return h('section', { class: 'panel', 'aria-labelledby': id }, h('h2', { id, text: title }), ...content);
}

function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(([, v]) => v !== undefined)
    .map(([k, v]) => [h('dt', { text: k }), h('dd', {}, v === null || v === '' ? '—' : v)]));
}

function describeEvent(event) {
  const { at, type, seq, ...rest } = event;
  const parts = Object.entries(rest).filter(([, v]) => v !== null && typeof v !== 'object')
    .map(([k, v]) => `${k}=${v}`);
  return parts.join(' ');
}

function lifecycle(record) {
  const start = record.created_at;
  return section('Lifecycle', h('ol', { class: 'timeline' }, (record.events || [])
    .filter((e) => !['ivr', 'transcript', 'turn_updated', 'latency', 'tool_call', 'tool_result'].includes(e.type))
    .map((e) => h('li', {}, h('span', { class: 'time', text: seconds(e.at - start) }), ' ',
      h('strong', { text: e.type }), ' ', describeEvent(e)))));
}

function ivrPath(record) {
  const start = record.created_at;
  const steps = record.ivr || [];
  if (!steps.length) return section('IVR path', h('p', { text: 'This call did not run an IVR flow.' }));
  return section('IVR path', h('ol', { class: 'ivr-path' }, steps.map((step) => {
    const { at, type, ...rest } = step;
    let text;
    if (type === 'choice') text = `${rest.node}: pressed ${rest.digit} — ${rest.label}`;
    else if (type === 'node') text = `${rest.node} (${rest.node_type || ''})`;
    else if (type === 'prompt') text = `“${rest.text || rest.file || ''}”`;
    else text = Object.entries(rest).filter(([, v]) => typeof v !== 'object').map(([k, v]) => `${k}=${v}`).join(' ');
    return h('li', { class: `ivr-${type}` }, h('span', { class: 'time', text: seconds(at - start) }), ' ',
      h('strong', { text: type }), ' ', text);
  })));
}

function handoff(record) {
  const context = record.handoff;
  if (!context) return section('Handoff', h('p', { text: 'No handoff to an agent.' }));
  const path = (context.path || []).map((p) => `${p.menu} ${p.digit} (${p.label})`).join(' → ');
  const simple = Object.entries(context).filter(([k, v]) => k !== 'path' && (v === null || typeof v !== 'object'));
  const nested = Object.entries(context).filter(([k, v]) => k !== 'path' && v && typeof v === 'object'
    && Object.keys(v).length);
  return section('Handoff', facts([...simple.map(([k, v]) => [k.replace(/_/g, ' '), v === null ? null : String(v)]),
    ['path', path || null], ...nested.map(([k, v]) => [k.replace(/_/g, ' '), h('pre', { text: JSON.stringify(v, null, 2) })])]));
}

function latencyBar(latency, scale) {
  const total = latency.total;
  const bar = h('div', { class: 'latency-bar', role: 'img',
    'aria-label': LATENCY_STAGES.filter(([k]) => k in latency).map(([k, l]) => `${l} ${latency[k]} ms`).join(', ')
      + (total !== undefined ? `, total ${total} ms` : '') });
  for (const [key, label] of LATENCY_STAGES) {
    if (!(key in latency)) continue;
    const segment = h('span', { class: `seg seg-${key}`, title: `${label} ${latency[key]} ms` });
    segment.style.width = `${(100 * latency[key]) / scale}%`;
    bar.append(segment);
  }
  const legend = h('p', { class: 'latency-legend' }, LATENCY_STAGES.filter(([k]) => k in latency)
    .map(([k, l]) => h('span', { class: `key key-${k}` }, `${l} ${latency[k]} ms`)),
  total !== undefined ? h('strong', { text: `total ${total} ms` }) : null);
  return h('div', { class: 'latency' }, bar, legend);
}

function transcript(record, player) {
  const turns = record.transcript || [];
  if (!turns.length) return section('Transcript', h('p', { text: 'No conversation with an agent.' }));
  const scale = Math.max(1, ...turns.filter((t) => t.latency_ms).map((t) => LATENCY_STAGES
    .reduce((sum, [k]) => sum + (t.latency_ms[k] || 0), 0)));
  const start = record.created_at;
  const recordingStart = recordingStartOf(record);
  return section('Transcript', h('ol', { class: 'transcript' }, turns.map((turn) => {
    const role = turn.role || 'note';
    const body = [h('div', { class: 'turn-head' }, h('span', { class: `role role-${role}`, text: role }),
      typeof turn.at === 'number' ? h('span', { class: 'time', text: seconds(turn.at - start) }) : null,
      player && typeof turn.at === 'number' && turn.at >= recordingStart
        ? h('button', { type: 'button', class: 'small', text: 'Play from here',
          'aria-label': `Play the recording from this ${role} turn`,
          onclick: () => player.seek(turn.at - recordingStart) }) : null)];
    if (role === 'tool') {
      body.push(h('p', {}, h('strong', { text: `${turn.name}` }), turn.ok === false ? ' failed' : turn.ok ? ' ok' : ' running',
        turn.duration_ms !== undefined ? ` in ${turn.duration_ms} ms` : ''));
      body.push(h('div', { class: 'tool-io' }, h('h3', { text: 'Arguments' }),
        h('pre', { text: typeof turn.arguments === 'string' ? turn.arguments : JSON.stringify(turn.arguments, null, 2) }),
        h('h3', { text: turn.ok === false ? 'Error' : 'Result' }),
        h('pre', { text: turn.ok === false ? String(turn.error) : JSON.stringify(turn.result ?? null, null, 2) })));
    } else if (role === 'renewal') {
      body.push(h('p', { text: `Provider session ${turn.session} (${turn.reason}): prepared in ${turn.prepare_ms} ms, `
        + `handed over in ${turn.handover_ms} ms, ${turn.replayed_ms} ms replayed` }));
    } else {
      body.push(h('p', { class: 'said', text: turn.text || '' }));
      if (turn.interrupted) {
        body.push(h('p', { class: 'barge-in' }, h('strong', { text: 'Barge-in: ' }),
          `the caller talked over it after ${turn.heard_s ?? '?'} s; planned: “${turn.planned || ''}”`));
      }
    }
    if (turn.latency_ms) body.push(latencyBar(turn.latency_ms, scale));
    return h('li', { class: `turn turn-${role}` }, body);
  })));
}

function dtmf(record) {
  const keys = record.dtmf || [];
  if (!keys.length) return section('DTMF', h('p', { text: 'No keys pressed.' }));
  const table = h('table', {}, h('thead', {}, h('tr', {}, ['Time', 'Digit', 'Source', 'Duration']
    .map((t) => h('th', { scope: 'col', text: t })))), h('tbody', {}, keys.map((k) => h('tr', {},
    h('td', { text: seconds(k.at - record.created_at) }), h('td', { text: k.digit }), h('td', { text: k.source }),
    h('td', { text: k.duration_ms !== undefined ? `${k.duration_ms} ms` : '—' })))));
  return section('DTMF', tableWrap('DTMF keys', table));
}

function media(record) {
  const m = record.media;
  if (!m) return section('Media quality', h('p', { text: 'No media stream.' }));
  const received = m.packets_received || 0;
  const lossPct = received + (m.packets_lost || 0) > 0
    ? ((100 * (m.packets_lost || 0)) / (received + (m.packets_lost || 0))).toFixed(2) + ' %' : '—';
  return section('Media quality', facts([
    ['codec', m.codec], ['packets sent', String(m.packets_sent ?? '—')], ['packets received', String(received)],
    ['packets lost', `${m.packets_lost ?? 0} (${lossPct})`], ['jitter', m.jitter_ms != null ? `${m.jitter_ms} ms` : null],
    ['round trip', m.rtt_ms != null ? `${m.rtt_ms} ms` : null], ['concealed frames', String(m.concealed_frames ?? '—')],
    ['SRTP', m.srtp ? JSON.stringify(m.srtp) : 'off'], ['remote', m.remote]]));
}

function recordingStartOf(record) {
  const started = (record.events || []).find((e) => e.type === 'recording_started');
  return started ? started.at : (record.answered_at || record.created_at);
}

async function recording(record) {
  const panel = section('Recording');
  if (!record.recording_url) { panel.append(h('p', { text: 'No recording.' })); return { panel, player: null }; }
  if (record.status !== 'hangup') {
    panel.append(h('p', { text: 'The recording is shown once the call has ended.' }));
    return { panel, player: null };
  }
  const turns = (record.transcript || []).filter((t) => ['user', 'agent', 'tool'].includes(t.role));
  try {
    const player = await recordingPlayer(panel, record.recording_url, turns, recordingStartOf(record));
    return { panel, player };
  } catch (error) {
    panel.append(errorBox(error));
    return { panel, player: null };
  }
}

export async function render(view, { args }) {
  const id = args[0] || '';
  const title = heading(`Call ${id.slice(0, 8)}`);
  const body = h('div', { class: 'detail' });
  const live = h('p', { role: 'status', class: 'stream-state' });
  view.append(h('p', {}, h('a', { href: '#/history', text: '← History' })), title, live, body);
  let stopped = false;
  let timer = null;
  let stopEvents = null;

  async function draw() {
    let record;
    try {
      record = await getJSON(`/api/calls/${encodeURIComponent(id)}`);
    } catch (error) {
      clear(body).append(errorBox(error instanceof ApiError && error.status === 404 ? 'No such call.' : error));
      return null;
    }
    if (stopped) return null;
    const { panel, player } = await recording(record);
    if (stopped) return null;
    title.textContent = `Call ${record.caller || '?'} → ${record.called || '?'}`;
    clear(body).append(
      section('Summary', facts([
        ['status', statusBadge(record.status, record.end_reason)], ['direction', record.direction],
        ['caller', [record.caller || '—', record.caller_name ? ` (${record.caller_name})` : '']], ['called', record.called],
        ['trunk', record.trunk], ['worker', record.worker], ['flow', record.route],
        ['started', formatTime(record.created_at)], ['answered', formatTime(record.answered_at)],
        ['ended', formatTime(record.ended_at)],
        ['duration', formatDuration(record.duration_s ?? ((Date.now() / 1000) - record.created_at))],
        ['call id', h('code', { text: record.id })]])),
      lifecycle(record), ivrPath(record), handoff(record), transcript(record, player), dtmf(record), media(record),
      panel);
    return record;
  }

  function refreshSoon() {
    if (timer) return;
    timer = setTimeout(async () => {
      timer = null;
      const record = await draw();
      if (record && record.status === 'hangup' && stopEvents) {
        // The last events (media stats, recording) come with the end: one more read has them all.
        stopEvents(); stopEvents = null;
        live.textContent = 'The call has ended.';
      }
    }, REFRESH_DEBOUNCE_MS);
  }

  const record = await draw();
  if (record && record.status !== 'hangup' && !stopped) {
    stopEvents = followEvents(`/api/events?call_id=${encodeURIComponent(id)}`, () => refreshSoon(), (state) => {
      live.textContent = state === 'open' ? 'The call is up: this page follows its events.' : 'Reconnecting…';
      if (state === 'open') refreshSoon();
    });
  }
  return () => { stopped = true; if (stopEvents) stopEvents(); clearTimeout(timer); };
}

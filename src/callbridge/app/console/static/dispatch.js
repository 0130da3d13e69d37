// Dispatch: place an outbound call with an agent (POST /api/dispatch) and show the server's answer.

import { getJSON, request } from './api.js';
import { clear, h, heading } from './dom.js';

// Form control id -> the API's field name (as a 422 names it).
const FIELD_IDS = {
  agent_name: 'd-agent', room_name: 'd-room', 'metadata.sip_trunk_id': 'd-trunk', 'metadata.sip_call_to': 'd-to',
  'metadata.participant_identity': 'd-identity', 'metadata.sip_number': 'd-number', 'metadata.dtmf': 'd-dtmf',
  'metadata.ringing_timeout': 'd-ringing', 'metadata.max_call_duration': 'd-max', 'metadata.language': 'd-language',
  'metadata.reason': 'd-reason', 'metadata.wait_until_answered': 'd-wait',
};

function field(label, control, hint) {
  const hintId = hint ? control.id + '-hint' : null;
  if (hintId) control.setAttribute('aria-describedby', hintId);
  return h('div', { class: 'field' }, h('label', { for: control.id, text: label }), control,
    hint ? h('small', { id: hintId, text: hint }) : null);
}

export async function render(view) {
  const [{ agents }, trunks] = await Promise.all([getJSON('/api/agents'), getJSON('/api/trunks')]);
  const input = (id, attrs = {}) => h('input', { id, ...attrs });
  const form = h('form', { class: 'dispatch', novalidate: true },
    field('Agent', h('select', { id: 'd-agent', required: true },
      agents.map((a) => h('option', { value: a.name, text: `${a.name} (${a.provider})` })))),
    field('Outbound trunk', h('select', { id: 'd-trunk', required: true },
      trunks.outbound.length ? trunks.outbound.map((t) => h('option', { value: t.name, text: t.name }))
        : h('option', { value: '', text: 'no outbound trunk configured' }))),
    field('Call to', input('d-to', { type: 'text', required: true, autocomplete: 'off', placeholder: '+15550100000' }),
      'An E.164 number or a sip: URI'),
    field('Participant identity', input('d-identity', { type: 'text', required: true, value: 'console' })),
    field('Caller ID (optional)', input('d-number', { type: 'text' }), 'One of the trunk\'s numbers'),
    field('DTMF after answer (optional)', input('d-dtmf', { type: 'text', pattern: '[0-9*#A-Da-dwW]*' }),
      'Digits, * and #; w pauses half a second'),
    field('Ringing timeout (s)', input('d-ringing', { type: 'number', min: '1', max: '300', value: '30' })),
    field('Maximum duration (s, optional)', input('d-max', { type: 'number', min: '1' })),
    field('Language', input('d-language', { type: 'text', value: 'en' })),
    field('Reason (optional)', input('d-reason', { type: 'text' })),
    field('Room name (optional)', input('d-room', { type: 'text' })),
    h('div', { class: 'field checkbox' }, input('d-wait', { type: 'checkbox' }),
      h('label', { for: 'd-wait', text: 'Wait until answered before replying' })),
    h('div', { class: 'actions' }, h('button', { type: 'submit', text: 'Place call' })));
  const result = h('div', { class: 'result', role: 'status', 'aria-live': 'polite' });
  view.append(heading('Dispatch an outbound call'), form, result);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    for (const control of form.querySelectorAll('[aria-invalid]')) control.removeAttribute('aria-invalid');
    const value = (id) => form.querySelector('#' + id).value.trim();
    const number = (id) => (value(id) === '' ? undefined : Number(value(id)));
    const metadata = { sip_trunk_id: value('d-trunk'), sip_call_to: value('d-to'),
      participant_identity: value('d-identity'), sip_number: value('d-number') || undefined,
      dtmf: value('d-dtmf') || undefined, ringing_timeout: number('d-ringing'), max_call_duration: number('d-max'),
      language: value('d-language') || undefined, reason: value('d-reason') || undefined,
      wait_until_answered: form.querySelector('#d-wait').checked };
    const body = { agent_name: value('d-agent'), room_name: value('d-room') || undefined, metadata };
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    clear(result).append(h('p', { text: 'Placing the call…' }));
    let reply;
    try {
      reply = await request('/api/dispatch', { method: 'POST', body });
    } catch (error) {
      clear(result).append(h('p', { class: 'error', text: `Could not reach the server: ${error.message}` }));
      return;
    } finally {
      button.disabled = false;
    }
    const data = reply.body || {};
    if (reply.status === 201) {
      clear(result).append(h('div', { class: 'outcome ok' },
        h('p', {}, h('strong', { text: `${reply.status} Created: ` }), `call ${data.call_id} is ${data.status}`
          + (data.end_reason ? ` (${data.end_reason})` : '')),
        h('p', {}, h('a', { href: `#/calls/${encodeURIComponent(data.call_id)}`, text: 'Open the call' }))));
      return;
    }
    const controlId = FIELD_IDS[data.field];
    clear(result).append(h('div', { class: 'outcome bad', role: 'alert' },
      h('p', {}, h('strong', { text: `${reply.status}: ` }), data.error || 'the call was not placed'),
      data.field ? h('p', {}, 'Field: ', h('code', { text: data.field })) : null));
    if (controlId) {
      const control = form.querySelector('#' + controlId);
      control.setAttribute('aria-invalid', 'true');
      control.focus();
    }
  });
  return null;
}

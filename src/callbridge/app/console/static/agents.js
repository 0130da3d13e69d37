// Agents (from the config, without secrets) and trunks with their registration state.

import { getJSON } from './api.js';
import { h, heading, tableWrap } from './dom.js';

function table(label, headers, rows) {
  return tableWrap(label, h('table', {}, h('caption', { class: 'visually-hidden', text: label }),
    h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col', text: t })))),
    h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: String(headers.length), text: 'None configured.' })))));
}

const list = (values) => (values && values.length ? values.join(', ') : '—');

function registrationCell(registration) {
  if (!registration) return h('td', { text: 'not registering' });
  const when = registration.expires_in != null ? `, expires in ${Math.round(registration.expires_in)} s` : '';
  const error = registration.last_error ? ` — ${registration.last_error}` : '';
  return h('td', {}, h('span', { class: `badge reg-${registration.state}`, text: registration.state }), when + error);
}

export async function render(view) {
  const [{ agents }, trunks, { registrations }] = await Promise.all([
    getJSON('/api/agents'), getJSON('/api/trunks'), getJSON('/api/trunks/registrations')]);
  const byTrunk = new Map(registrations.map((r) => [r.trunk, r]));
  view.append(heading('Agents and trunks'),
    h('section', { class: 'panel', 'aria-labelledby': 'agents-h' }, h('h2', { id: 'agents-h', text: 'Agents' }),
      table('Agents', ['Name', 'Provider', 'Engine', 'Dispatch', 'Language', 'Voice', 'Tools', 'Fallback'],
        agents.map((a) => h('tr', {}, h('th', { scope: 'row', text: a.name }), h('td', { text: a.provider }),
          h('td', { text: a.llm ? `${a.engine}: ${a.llm.model} at ${a.llm.base_url}` : a.engine }),
          h('td', { text: a.dispatch }), h('td', { text: a.language || 'caller\'s' }),
          h('td', { text: a.voice || 'default' }), h('td', { text: a.tools ? list(a.tools) : 'default' }),
          h('td', { text: a.fallback }))))),
    h('section', { class: 'panel', 'aria-labelledby': 'in-h' }, h('h2', { id: 'in-h', text: 'Inbound trunks' }),
      table('Inbound trunks', ['Name', 'Numbers', 'Flow', 'Routes', 'Allowed networks', 'Digest auth', 'Source'],
        trunks.inbound.map((t) => h('tr', {}, h('th', { scope: 'row', text: t.name }), h('td', { text: list(t.numbers) }),
          h('td', { text: t.flow || 'routing default' }), h('td', { text: Object.keys(t.routes || {}).length }),
          h('td', { text: list(t.allowed_cidrs) }), h('td', { text: t.auth ? `yes (${t.auth.username})` : 'no' }),
          h('td', { text: t.source }))))),
    h('section', { class: 'panel', 'aria-labelledby': 'out-h' }, h('h2', { id: 'out-h', text: 'Outbound trunks' }),
      table('Outbound trunks', ['Name', 'Address', 'Transport', 'Numbers', 'Registration', 'Source'],
        trunks.outbound.map((t) => h('tr', {}, h('th', { scope: 'row', text: t.name }),
          h('td', { text: `${t.host}:${t.port}` }), h('td', { text: t.transport }), h('td', { text: list(t.numbers) }),
          registrationCell(byTrunk.get(t.name)), h('td', { text: t.source }))))));
  return null;
}

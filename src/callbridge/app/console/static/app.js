// The console's hash router: #/live, #/calls/<id>, #/history?…, #/flows, #/agents, #/dispatch, #/metrics.
// Each page module exports render(container, params) and may return a cleanup function (closing its
// event stream, stopping its clock) that runs when the user leaves the page.

import { clear, errorBox } from './dom.js';

const PAGES = {
  live: { module: './live.js', title: 'Live calls' },
  calls: { module: './calldetail.js', title: 'Call' },
  history: { module: './history.js', title: 'History' },
  flows: { module: './flows.js', title: 'Flows' },
  agents: { module: './agents.js', title: 'Agents and trunks' },
  dispatch: { module: './dispatch.js', title: 'Dispatch' },
  metrics: { module: './metrics.js', title: 'Metrics' },
};

let cleanup = null;
let generation = 0;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query = ''] = raw.split('?');
  const [name, ...rest] = path.split('/');
  return { name: name || 'live', args: rest.map(decodeURIComponent), query: new URLSearchParams(query) };
}

async function route() {
  const current = ++generation;
  const { name, args, query } = parseHash();
  const page = PAGES[name];
  if (!page) { location.replace('#/live'); return; }
  if (cleanup) { try { cleanup(); } catch (error) { console.warn(error); } cleanup = null; }
  for (const link of document.querySelectorAll('nav a[data-route]')) {
    if (link.dataset.route === name || (name === 'calls' && link.dataset.route === 'history')) {
      link.setAttribute('aria-current', 'page');
    } else {
      link.removeAttribute('aria-current');
    }
  }
  const view = document.getElementById('view');
  document.title = `${page.title} · callbridge`;
  try {
    const module = await import(page.module);
    if (current !== generation) return; // the user moved on while it loaded
    clear(view);
    const result = await module.render(view, { args, query });
    if (current !== generation) { if (typeof result === 'function') result(); return; }
    cleanup = typeof result === 'function' ? result : null;
  } catch (error) {
    if (current !== generation) return;
    clear(view).append(errorBox(error));
  }
  const title = view.querySelector('h1');
  (title || view).focus({ preventScroll: false });
}

window.addEventListener('hashchange', route);
if (!location.hash) location.replace('#/live');
route();

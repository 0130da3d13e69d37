// Building DOM without innerHTML: every value from the API is text, never markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

function apply(element, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'text') element.textContent = String(value);
    else if (key.startsWith('on') && typeof value === 'function') element.addEventListener(key.slice(2), value);
    else if (key === 'class') element.setAttribute('class', value);
    else element.setAttribute(key, value === true ? '' : String(value));
  }
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** h('a', {href: '#/x', text: 'label'}, ...children) */
export function h(tag, attrs, ...children) {
  const element = document.createElement(tag);
  apply(element, attrs);
  return append(element, children);
}

export function svg(tag, attrs, ...children) {
  const element = document.createElementNS(SVG_NS, tag);
  apply(element, attrs);
  return append(element, children);
}

export function clear(element) {
  while (element.firstChild) element.firstChild.remove();
  return element;
}

export function announce(message) {
  const region = document.getElementById('announce');
  if (region) region.textContent = message;
}

/** A page's heading: the router moves focus here, so screen readers hear where they are. */
export function heading(text) {
  return h('h1', { tabindex: '-1', text });
}

export function formatTime(unix) {
  if (unix === null || unix === undefined) return '—';
  return new Date(unix * 1000).toLocaleString();
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '—';
  const s = Math.max(0, Math.floor(seconds));
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, '0');
  return hours ? `${hours}:${String(minutes).padStart(2, '0')}:${rest}` : `${minutes}:${rest}`;
}

export function statusBadge(status, endReason) {
  const label = status === 'hangup' ? `ended${endReason ? ' (' + endReason.replace(/_/g, ' ') + ')' : ''}` : status;
  return h('span', { class: `badge status-${status}`, text: label });
}

/** A wide table in a scrollable, keyboard-focusable region. */
export function tableWrap(label, table) {
  return h('div', { class: 'table-wrap', role: 'region', 'aria-label': `${label} table`, tabindex: '0' }, table);
}

export function errorBox(error) {
  return h('p', { class: 'error', role: 'alert', text: error && error.message ? error.message : String(error) });
}

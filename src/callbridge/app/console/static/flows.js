// Flows: each running flow drawn as a graph (layered by BFS depth from the start node, left to right),
// and the draft flow files with their validation error at file:line:column.

import { getJSON } from './api.js';
import { h, heading, svg, tableWrap } from './dom.js';

const NODE_W = 190;
const NODE_H = 58;
const GAP_X = 90;
const GAP_Y = 26;
const PAD = 20;
const LABEL_CHARS = 28;

const cut = (text, n) => (text.length > n ? text.slice(0, n - 1) + '…' : text);

/** Layers by breadth-first depth; nodes the start cannot reach go in one last layer. */
export function layout(graph) {
  const out = new Map();
  for (const e of graph.edges) {
    if (!out.has(e.from)) out.set(e.from, []);
    out.get(e.from).push(e.to);
  }
  const depth = new Map([[graph.start, 0]]);
  const queue = [graph.start];
  while (queue.length) {
    const id = queue.shift();
    for (const next of out.get(id) || []) {
      if (!depth.has(next)) { depth.set(next, depth.get(id) + 1); queue.push(next); }
    }
  }
  const deepest = Math.max(0, ...depth.values());
  const layers = [];
  for (const node of graph.nodes) {
    const d = depth.has(node.id) ? depth.get(node.id) : deepest + 1;
    (layers[d] = layers[d] || []).push(node);
  }
  const position = new Map();
  layers.forEach((layer, d) => layer.forEach((node, i) => position.set(node.id, {
    x: PAD + d * (NODE_W + GAP_X), y: PAD + i * (NODE_H + GAP_Y), node })));
  const width = PAD * 2 + layers.length * (NODE_W + GAP_X) - GAP_X;
  const height = PAD * 2 + Math.max(...layers.filter(Boolean).map((l) => l.length)) * (NODE_H + GAP_Y) - GAP_Y + 30;
  return { position, width, height };
}

function drawGraph(graph, titleId) {
  const { position, width, height } = layout(graph);
  const markerId = `arrow-${titleId}`;
  const root = svg('svg', { class: 'flow-graph', viewBox: `0 0 ${width} ${height}`, width: String(width),
    height: String(height), role: 'img', 'aria-labelledby': titleId },
  svg('title', { id: titleId, text: `Flow ${graph.name}: ${graph.nodes.length} nodes, start ${graph.start}` }),
  svg('defs', {}, svg('marker', { id: markerId, viewBox: '0 0 10 10', refX: '10', refY: '5', markerWidth: '7',
    markerHeight: '7', orient: 'auto-start-reverse' }, svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrow' }))));
  const edges = svg('g', { class: 'edges' });
  const labels = svg('g', { class: 'edge-labels' });
  for (const edge of graph.edges) {
    const a = position.get(edge.from);
    const b = position.get(edge.to);
    if (!a || !b) continue;
    let d;
    let mid;
    if (b.x > a.x) { // forward: right side to left side
      const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
      const bend = (x2 - x1) / 2;
      d = `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`;
      // Labelled next to the target: a fan-out's labels (menu keys, branch rules) then never pile up.
      mid = { x: x2 - 12 - cut(edge.label || '', 26).length * 3.2, y: y2 - 9 };
    } else { // back or same layer: loop under the nodes
      const x1 = a.x + NODE_W / 2, y1 = a.y + NODE_H, x2 = b.x + NODE_W / 2, y2 = b.y + NODE_H;
      const low = Math.max(y1, y2) + GAP_Y + 10;
      d = `M ${x1} ${y1} C ${x1} ${low}, ${x2} ${low}, ${x2} ${y2}`;
      mid = { x: (x1 + x2) / 2, y: low - 8 };
    }
    edges.append(svg('path', { d, class: 'edge', 'marker-end': `url(#${markerId})` }));
    if (edge.label) {
      const text = cut(edge.label, 26);
      labels.append(svg('g', { class: 'edge-label' },
        svg('rect', { x: String(mid.x - text.length * 3.2 - 3), y: String(mid.y - 9), width: String(text.length * 6.4 + 6),
          height: '14', rx: '3' }),
        svg('text', { x: String(mid.x), y: String(mid.y + 2), 'text-anchor': 'middle', text })));
    }
  }
  const nodes = svg('g', { class: 'nodes' });
  for (const { x, y, node } of position.values()) {
    nodes.append(svg('g', { class: `node kind-${node.kind}${node.id === graph.start ? ' start' : ''}`,
      'data-node': node.id },
    svg('rect', { x: String(x), y: String(y), width: String(NODE_W), height: String(NODE_H), rx: '6' }),
    svg('text', { x: String(x + 8), y: String(y + 18), class: 'node-id', text: cut(node.id, LABEL_CHARS) }),
    svg('text', { x: String(x + NODE_W - 8), y: String(y + 18), class: 'node-kind', 'text-anchor': 'end',
      text: node.kind }),
    svg('text', { x: String(x + 8), y: String(y + 40), class: 'node-label', text: cut(node.label || '', LABEL_CHARS + 4) },
      svg('title', { text: node.label || '' }))));
  }
  root.append(edges, nodes, labels);
  return root;
}

function nodeTable(graph) {
  const targets = (id) => graph.edges.filter((e) => e.from === id)
    .map((e) => (e.label ? `${e.label} → ${e.to}` : `→ ${e.to}`)).join('; ');
  return h('details', {}, h('summary', { text: `Nodes of ${graph.name} as a table` }),
    tableWrap(`Nodes of ${graph.name}`, h('table', {}, h('thead', {}, h('tr', {}, ['Node', 'Kind', 'What', 'Leads to']
      .map((t) => h('th', { scope: 'col', text: t })))),
    h('tbody', {}, graph.nodes.map((n) => h('tr', {}, h('th', { scope: 'row', text: n.id }), h('td', { text: n.kind }),
      h('td', { text: n.label }), h('td', { text: targets(n.id) })))))));
}

function warnings(list) {
  if (!list || !list.length) return null;
  return h('ul', { class: 'warnings' }, list.map((w) => h('li', {},
    h('code', { text: `${w.file}:${w.line}:${w.column}` }), ` warning: ${w.reason}`)));
}

export async function render(view) {
  view.append(heading('Flows'));
  const { flows, drafts, drafts_truncated: truncated } = await getJSON('/api/flows');
  flows.forEach((graph, index) => {
    const id = `flow-${index}`;
    view.append(h('section', { class: 'panel flow', 'aria-labelledby': `${id}-h` },
      h('h2', { id: `${id}-h` }, graph.configured_as,
        h('span', { class: `badge ${graph.routed ? 'ok' : 'muted'}`, text: graph.routed ? 'routed' : 'not routed' })),
      h('p', { class: 'file' }, h('code', { text: graph.file }), ` — start: ${graph.start}, languages: `
        + graph.languages.join(', ')),
      warnings(graph.warnings),
      h('div', { class: 'graph-wrap', role: 'region', tabindex: '0', 'aria-label': `Graph of ${graph.configured_as}` },
        drawGraph(graph, `${id}-title`)),
      nodeTable(graph)));
  });
  const draftPanel = h('section', { class: 'panel', 'aria-labelledby': 'drafts-h' },
    h('h2', { id: 'drafts-h', text: 'Flow files not in the config' }),
    h('p', { class: 'hint', text: 'YAML flow files next to the configured ones (or in the config folder\'s flows/), '
      + 'checked now. A configured flow that fails validation stops the server at start-up instead.' }));
  if (!drafts.length) draftPanel.append(h('p', { text: 'None.' }));
  drafts.forEach((draft, index) => {
    if (draft.error) {
      const e = draft.error;
      draftPanel.append(h('article', { class: 'draft broken', 'aria-labelledby': `draft-${index}` },
        h('h3', { id: `draft-${index}` }, draft.name, h('span', { class: 'badge bad', text: 'invalid' })),
        h('p', { class: 'error-at' }, h('code', { class: 'position', text: `${e.file}:${e.line}:${e.column}` }),
          ': ', e.reason)));
    } else {
      draftPanel.append(h('article', { class: 'draft', 'aria-labelledby': `draft-${index}` },
        h('h3', { id: `draft-${index}` }, draft.name, h('span', { class: 'badge ok', text: 'valid, not configured' })),
        warnings(draft.flow.warnings),
        h('div', { class: 'graph-wrap', role: 'region', tabindex: '0', 'aria-label': `Graph of ${draft.name}` },
          drawGraph(draft.flow, `draft-${index}-title`))));
    }
  });
  if (truncated) draftPanel.append(h('p', { class: 'hint', text: 'More files than are checked at once; some are not shown.' }));
  view.append(draftPanel);
  return null;
}

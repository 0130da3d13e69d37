// The stereo recording drawn as two waveforms (caller left channel, us right channel) with a marker per
// transcript turn, and played by an <audio> element from the same downloaded bytes.

import { request } from './api.js';
import { h } from './dom.js';

const DECODE_RATE = 8000; // plenty for a picture; decoding at 48 kHz would only cost memory
const LANE_HEIGHT = 70;
const ROLE_COLOURS = { user: '#1d5fbf', agent: '#b04a00', tool: '#5b6b00', renewal: '#7a2f8f' };

/** Fetch, decode (WebAudio) and draw; resolves to {audio, seek(seconds)} or throws with a reason. */
export async function recordingPlayer(container, url, turns, recordingStart) {
  const response = await fetch(url, { credentials: 'same-origin' });
  if (response.status === 401) { await request(url); return null; } // request() sends the user to /login
  if (!response.ok) throw new Error(`recording: HTTP ${response.status}`);
  const bytes = await response.arrayBuffer();
  const audio = h('audio', { controls: true, preload: 'metadata', 'aria-label': 'Call recording' });
  audio.src = URL.createObjectURL(new Blob([bytes], { type: 'audio/wav' }));
  const context = new OfflineAudioContext(1, 1, DECODE_RATE);
  const buffer = await context.decodeAudioData(bytes.slice(0));
  const canvas = h('canvas', { class: 'waveform', role: 'img', height: String(LANE_HEIGHT * 2 + 20),
    'aria-label': `Waveform: caller (left channel) above, callbridge (right channel) below, `
      + `${buffer.duration.toFixed(1)} s, ${turns.length} turn markers` });
  const legend = h('p', { class: 'legend' },
    h('span', { class: 'swatch swatch-user' }), 'caller turn ',
    h('span', { class: 'swatch swatch-agent' }), 'agent turn ',
    h('span', { class: 'swatch swatch-tool' }), 'tool call');
  container.append(canvas, legend, audio);
  const markers = turns.filter((t) => typeof t.at === 'number')
    .map((t) => ({ time: t.at - recordingStart, role: t.role }))
    .filter((m) => m.time >= 0 && m.time <= buffer.duration);
  const draw = () => paint(canvas, buffer, markers, audio.currentTime);
  audio.addEventListener('timeupdate', draw);
  new ResizeObserver(draw).observe(canvas);
  draw();
  canvas.dataset.duration = buffer.duration.toFixed(3);
  canvas.dataset.channels = String(buffer.numberOfChannels);
  canvas.dataset.markers = String(markers.length);
  return {
    audio, duration: buffer.duration,
    seek(seconds) { audio.currentTime = Math.max(0, seconds); audio.play().catch(() => {}); },
  };
}

function paint(canvas, buffer, markers, playhead) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(200, canvas.clientWidth);
  const height = LANE_HEIGHT * 2 + 20;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const g = canvas.getContext('2d');
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const channels = Math.min(buffer.numberOfChannels, 2);
  const labels = ['caller', 'callbridge'];
  for (let c = 0; c < 2; c++) {
    const top = c * (LANE_HEIGHT + 10);
    const middle = top + LANE_HEIGHT / 2;
    g.fillStyle = c === 0 ? '#eef3fb' : '#fbf1ea';
    g.fillRect(0, top, width, LANE_HEIGHT);
    g.fillStyle = '#333';
    g.font = '11px system-ui, sans-serif';
    g.fillText(labels[c], 4, top + 12);
    if (c >= channels) continue;
    const data = buffer.getChannelData(c);
    const step = data.length / width;
    g.fillStyle = c === 0 ? '#1d5fbf' : '#b04a00';
    for (let x = 0; x < width; x++) {
      let low = 0, high = 0;
      const end = Math.min(data.length, Math.floor((x + 1) * step));
      for (let i = Math.floor(x * step); i < end; i++) {
        const v = data[i];
        if (v < low) low = v; else if (v > high) high = v;
      }
      const y1 = middle - high * (LANE_HEIGHT / 2);
      const y2 = middle - low * (LANE_HEIGHT / 2);
      g.fillRect(x, y1, 1, Math.max(1, y2 - y1));
    }
  }
  for (const marker of markers) {
    const x = (marker.time / buffer.duration) * width;
    g.fillStyle = ROLE_COLOURS[marker.role] || '#444';
    g.fillRect(x, 0, 2, height);
  }
  if (playhead > 0) {
    g.fillStyle = '#000';
    g.fillRect((playhead / buffer.duration) * width, 0, 1, height);
  }
}

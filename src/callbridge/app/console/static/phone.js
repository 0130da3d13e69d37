// The browser softphone: call the line with the microphone over WebRTC, press keys (RFC 4733),
// and follow the call's transcript live. Non-trickle ICE: the offer goes out once gathering is done.

const GATHER_TIMEOUT_MS = 5000; // no candidate after this: send what we have (the server's answer decides)
const LEVEL_SAMPLE_MS = 100;
const TONE_MS = 100;
const TONE_GAP_MS = 70;
const LOGIN = '/login?next=' + encodeURIComponent('/phone');

const $ = (id) => document.getElementById(id);
const ui = {
  target: $('target'), call: $('call'), hangup: $('hangup'), mute: $('mute'), status: $('status'),
  keypad: $('keypad'), keys: $('keys-sent'), audio: $('remote-audio'), transcript: $('transcript'),
};
// ?processing=off: the microphone as it is (no echo cancellation, noise suppression or gain control),
// for measurements. A phone call wants all three.
const processing = new URLSearchParams(location.search).get('processing') !== 'off';

const state = { iceServers: [], pc: null, local: null, callId: null, events: null, dtmf: null, levels: null, turns: new Map() };
const seen = []; // every call event the page received, for tests (read-only copies)

class Unauthorized extends Error {}

async function api(path, { method = 'GET', body } = {}) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    location.assign(LOGIN);
    throw new Unauthorized('not logged in');
  }
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  return { status: response.status, ok: response.ok, body: data };
}

function setStatus(text) { ui.status.textContent = text; }

function setInCall(inCall) {
  ui.call.disabled = inCall || !ui.target.value;
  ui.target.disabled = inCall;
  ui.hangup.disabled = !inCall;
  ui.mute.disabled = !inCall;
  for (const key of ui.keypad.querySelectorAll('button')) key.disabled = !inCall;
}

async function loadTargets() {
  try {
    const reply = await api('/api/webrtc/targets');
    const targets = (reply.ok && reply.body && reply.body.targets) || [];
    state.iceServers = (reply.ok && reply.body && reply.body.ice_servers) || [];
    ui.target.replaceChildren(...targets.map((t) => {
      const option = document.createElement('option');
      option.value = t.to;
      option.textContent = t.kind === 'number' ? `${t.to} (${t.flow})` : t.to;
      return option;
    }));
    if (!targets.length) {
      setStatus(reply.body && reply.body.enabled === false ? 'Browser calls are off on this server' : 'Nothing to call');
    }
  } catch (error) {
    if (!(error instanceof Unauthorized)) setStatus('Cannot load the numbers: ' + error.message);
  }
  ui.target.disabled = false;
  setInCall(false);
}

function gatheringDone(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, GATHER_TIMEOUT_MS);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') { clearTimeout(timer); resolve(); }
    });
  });
}

// What the browser receives, measured after decoding: an analyser on the remote stream (which must
// also play in an <audio> element, or Chromium feeds the analyser zeros).
function measure(stream) {
  const context = new AudioContext();
  const analyser = context.createAnalyser();
  analyser.fftSize = 2048;
  context.createMediaStreamSource(stream).connect(analyser);
  const buffer = new Float32Array(analyser.fftSize);
  const levels = { context, analyser, peak: 0, last: 0, timer: 0 };
  const sample = () => {
    analyser.getFloatTimeDomainData(buffer);
    let sum = 0;
    for (const v of buffer) sum += v * v;
    levels.last = Math.sqrt(sum / buffer.length);
    levels.peak = Math.max(levels.peak, levels.last);
  };
  levels.timer = setInterval(sample, LEVEL_SAMPLE_MS);
  state.levels = levels;
}

async function call() {
  const to = ui.target.value;
  if (!to || state.pc) return;
  setInCall(true);
  ui.transcript.replaceChildren();
  state.turns.clear();
  ui.keys.textContent = '';
  setStatus('Calling…');
  try {
    state.local = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: processing, noiseSuppression: processing, autoGainControl: processing },
    });
    const pc = new RTCPeerConnection({ iceServers: state.iceServers });
    state.pc = pc;
    for (const track of state.local.getAudioTracks()) pc.addTrack(track, state.local);
    pc.addEventListener('track', (event) => {
      const stream = event.streams[0] || new MediaStream([event.track]);
      ui.audio.srcObject = stream;
      ui.audio.play().catch(() => {});
      measure(stream);
    });
    pc.addEventListener('connectionstatechange', () => {
      if (pc !== state.pc) return;
      if (pc.connectionState === 'connected') setStatus('Connected');
      else if (pc.connectionState === 'failed' || pc.connectionState === 'closed') finish('Call ended');
    });
    await pc.setLocalDescription(await pc.createOffer());
    await gatheringDone(pc);
    const reply = await api('/api/webrtc/calls', {
      method: 'POST', body: { type: 'offer', sdp: pc.localDescription.sdp, to },
    });
    if (!reply.ok) {
      const why = (reply.body && reply.body.error) || `HTTP ${reply.status}`;
      finish(reply.status === 503 ? `Busy, try again later (${why})` : `Call refused: ${why}`);
      return;
    }
    state.callId = reply.body.call_id;
    follow(state.callId);
    await pc.setRemoteDescription({ type: 'answer', sdp: reply.body.sdp });
    const sender = pc.getSenders().find((s) => s.track && s.track.kind === 'audio');
    state.dtmf = sender ? sender.dtmf : null;
    setStatus('Ringing…');
  } catch (error) {
    if (!(error instanceof Unauthorized)) finish('Call failed: ' + error.message);
  }
}

function follow(callId) {
  const events = new EventSource('/api/events?call_id=' + encodeURIComponent(callId));
  state.events = events;
  const types = ['status', 'ended', 'ivr', 'handoff', 'transcript', 'turn_updated', 'tool_call', 'tool_result', 'dtmf'];
  for (const type of types) {
    events.addEventListener(type, (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch { return; }
      seen.push(event);
      show(event);
    });
  }
  events.addEventListener('error', () => {
    // EventSource reconnects by itself; a closed call closes it in finish().
  });
}

function show(event) {
  const data = event.data || {};
  switch (event.type) {
    case 'status':
      if (data.status === 'active') setStatus('Connected');
      break;
    case 'ended':
      finish('Call ended' + (data.reason ? ` (${data.reason.replace('_', ' ')})` : ''));
      break;
    case 'handoff':
      addLine('note', 'Handed to the assistant' + (data.reason ? `: ${data.reason.replace('_', ' ')}` : ''));
      break;
    case 'transcript':
      if (data.role === 'user' || data.role === 'agent') {
        state.turns.set(data.turn, addLine(data.role, data.text || '…'));
      }
      break;
    case 'turn_updated': {
      const line = state.turns.get(data.turn);
      if (line && typeof data.text === 'string') line.querySelector('.text').textContent = data.text;
      break;
    }
    case 'tool_result':
      addLine('tool', `${data.name}: ` + (data.ok ? JSON.stringify(data.result) : `failed (${data.error})`));
      break;
    default:
      break;
  }
}

function addLine(role, text) {
  const item = document.createElement('li');
  item.className = role;
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = { user: 'You', agent: 'Assistant', tool: 'Tool', note: '' }[role] ?? role;
  const words = document.createElement('span');
  words.className = 'text';
  words.textContent = text;
  item.append(who, words);
  ui.transcript.append(item);
  item.scrollIntoView({ block: 'nearest' });
  return item;
}

function press(key) {
  if (!state.dtmf || !state.pc) return;
  if (!state.dtmf.canInsertDTMF) {
    setStatus('Keys cannot be sent on this call');
    return;
  }
  // Queued after any key still sounding (insertDTMF replaces the queue, so keep what is left).
  state.dtmf.insertDTMF(state.dtmf.toneBuffer + key, TONE_MS, TONE_GAP_MS);
  ui.keys.textContent += key;
}

async function hangUp() {
  const callId = state.callId;
  finish('Call ended');
  if (callId) {
    try { await api(`/api/calls/${encodeURIComponent(callId)}/hangup`, { method: 'POST', body: {} }); } catch { /* gone */ }
  }
}

function finish(text) {
  if (state.events) { state.events.close(); state.events = null; }
  if (state.pc) { state.pc.close(); state.pc = null; }
  if (state.local) { for (const track of state.local.getTracks()) track.stop(); state.local = null; }
  if (state.levels && !state.levels.stopped) {
    state.levels.stopped = true; // the peak stays readable after the call
    clearInterval(state.levels.timer);
    state.levels.context.close().catch(() => {});
  }
  state.dtmf = null;
  ui.mute.setAttribute('aria-pressed', 'false');
  ui.mute.textContent = 'Mute';
  setStatus(text);
  setInCall(false);
}

function toggleMute() {
  if (!state.local) return;
  const muted = ui.mute.getAttribute('aria-pressed') !== 'true';
  for (const track of state.local.getAudioTracks()) track.enabled = !muted;
  ui.mute.setAttribute('aria-pressed', String(muted));
  ui.mute.textContent = muted ? 'Unmute' : 'Mute';
}

ui.call.addEventListener('click', call);
ui.hangup.addEventListener('click', hangUp);
ui.mute.addEventListener('click', toggleMute);
ui.target.addEventListener('change', () => setInCall(Boolean(state.pc)));
ui.keypad.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-key]');
  if (button) press(button.dataset.key);
});
// Keys typed on the keyboard while in a call go out as tones too (the keypad's buttons also take focus).
document.addEventListener('keydown', (event) => {
  if (!state.pc || event.altKey || event.ctrlKey || event.metaKey) return;
  if (/^[0-9*#]$/.test(event.key) && !(event.target instanceof HTMLSelectElement)) {
    if (event.target instanceof HTMLButtonElement && event.target.dataset.key) return; // its click sends it
    press(event.key);
  }
});

// Read-only hooks for tests: what the page heard and received.
window.callbridgePhone = Object.freeze({
  receivedRms: () => (state.levels ? state.levels.last : 0),
  peakReceivedRms: () => (state.levels ? state.levels.peak : 0),
  callId: () => state.callId,
  events: () => seen.map((event) => JSON.parse(JSON.stringify(event))),
});

setInCall(false);
loadTargets();

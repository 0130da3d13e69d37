// Talking to the callbridge API: JSON requests, the login redirect on 401, and the event stream.

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

/** Any 401: the session is gone or was never there; come back here after logging in. */
export function toLogin() {
  const next = location.pathname + location.hash;
  location.assign('/login?next=' + encodeURIComponent(next));
}

/** A request whatever its status: {status, ok, body}. Only a 401 leaves the page. */
export async function request(path, { method = 'GET', body, signal } = {}) {
  const init = { method, signal, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    toLogin();
    throw new ApiError(401, { error: 'not logged in' });
  }
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  return { status: response.status, ok: response.ok, body: data };
}

/** GET JSON; a non-2xx answer is an ApiError carrying the server's {error, field}. */
export async function getJSON(path, options) {
  const reply = await request(path, options);
  if (!reply.ok) throw new ApiError(reply.status, reply.body);
  return reply.body;
}

const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 10000;

/**
 * Follow /api/events (Server-Sent Events) with fetch, so a 401 is seen and the stream's named events
 * (event: status, ivr, transcript...) all arrive through one callback: onEvent({call_id, type, at, data}).
 * Reconnects with back-off; onState('open' | 'reconnecting') lets a page resynchronise what it missed.
 * Returns a function that stops it.
 */
export function followEvents(path, onEvent, onState = () => {}) {
  const controller = new AbortController();
  let stopped = false;
  let delay = RECONNECT_MIN_MS;

  async function readStream() {
    const response = await fetch(path, { signal: controller.signal, credentials: 'same-origin',
                                         headers: { Accept: 'text/event-stream' } });
    if (response.status === 401) { stopped = true; toLogin(); return; }
    if (!response.ok || !response.body) throw new Error(`event stream: HTTP ${response.status}`);
    delay = RECONNECT_MIN_MS;
    onState('open');
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = frame.split('\n').filter((line) => line.startsWith('data:'))
          .map((line) => line.slice(5).replace(/^ /, '')).join('\n');
        if (!data) continue; // a keep-alive comment
        try { onEvent(JSON.parse(data)); } catch (error) { console.warn('bad event', error); }
      }
    }
  }

  (async () => {
    while (!stopped) {
      try { await readStream(); } catch (error) { if (stopped) return; }
      if (stopped) return;
      onState('reconnecting');
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, RECONNECT_MAX_MS);
    }
  })();
  return () => { stopped = true; controller.abort(); };
}

// The gateway's HTTP API as the console uses it: same origin, plain fetch
// and EventSource, no headers a browser could not send.
//
// Every call carries the API key the console logged in with as
// Authorization: Bearer. EventSource cannot send headers, so an event
// stream is opened with a read token instead: a short-lived token that
// reads one request only, passed as ?access_token=. The key itself never
// goes into a URL.

// STATUSES are a request's statuses; the first two are open.
export const STATUSES = ['queued', 'pending', 'replied', 'failed', 'expired', 'unroutable', 'cancelled', 'partial'];

// TERMINAL are the statuses a request never leaves. (partial ends a
// scatter-gather request, CONTRACT §8.)
export const TERMINAL = new Set(['replied', 'failed', 'expired', 'unroutable', 'cancelled', 'partial']);

// EVENT_TYPES are the CloudEvent types the console listens for on a
// request's event stream. EventSource hands a named event only to listeners
// of that name, so the types worth showing are listed; an event without a
// name arrives as 'message'. The final 'reply' event is handled apart.
export const EVENT_TYPES = [
  'progress', 'request.progress', 'request.received', 'request.accepted',
  'request.replied', 'request.failed', 'request.expired', 'request.unroutable',
  'request.cancelled', 'request.partial', 'reply.delivered', 'message',
];

const SEGMENT = '[A-Za-z0-9_-]{1,64}';
const ROUTING_KEY = new RegExp(`^${SEGMENT}(\\.${SEGMENT}){0,7}$`);
// The gateway's own first path segments: a POST there is never a request.
const RESERVED = new Set(['v1', 'healthz', 'readyz', 'metrics', 'ui']);

// checkRoutingKey returns why key cannot be submitted, or '' when it can.
export function checkRoutingKey(key) {
  if (key === '') return 'Enter a routing key, such as workflow.create.';
  if (!ROUTING_KEY.test(key)) {
    return 'A routing key is 1 to 8 dot-separated segments of letters, digits, _ and - (at most 64 each).';
  }
  const first = key.split('.')[0];
  if (RESERVED.has(first)) return `"${first}" is one of the gateway's own paths, not a service's.`;
  return '';
}

// routingPath is the path a routing key is POSTed to: workflow.create is
// /workflow/create. The segments need no escaping (checkRoutingKey).
export function routingPath(key) {
  return '/' + key.split('.').join('/');
}

// The API key calls are made with ('' when the gateway runs without
// auth), and what to do when the gateway refuses it.
let apiKey = '';
let unauthorized = () => {};

// readTokens holds the read tokens at hand, by request id: {token,
// expiresAt}. They live in memory only, and go with the key they were
// minted with.
const readTokens = new Map();

// A read token this close to its expiry is not used: a fresh one is
// minted instead.
const TOKEN_MARGIN_MS = 60 * 1000;

// useKey sets the API key every call sends from now on; '' sends none.
export function useKey(key) {
  if (key !== apiKey) readTokens.clear();
  apiKey = key;
}

// onUnauthorized sets the function called with the problem when the
// gateway answers 401 to a call made with the key in use: the key is no
// good (revoked, expired) or one is needed.
export function onUnauthorized(fn) {
  unauthorized = fn;
}

// call makes one API call. It resolves to {ok, status, headers, data,
// problem}: data is the parsed JSON body, problem an RFC 9457 problem (or
// one made up for a failure that has none). It rejects only when signal
// aborts it.
//
// The call sends the key in use, or key when given ('' for none). A 401 is
// reported to onUnauthorized, unless key was given (a login checking a
// key handles the answer itself) or the key has changed since the call was
// made (it says nothing about the key in use).
export async function call(method, path, { body, headers, signal, key } = {}) {
  const sent = key ?? apiKey;
  const h = new Headers(headers);
  if (sent !== '') h.set('Authorization', `Bearer ${sent}`);
  let res;
  let text;
  try {
    res = await fetch(path, { method, body, headers: h, signal, cache: 'no-store', credentials: 'same-origin' });
    text = await res.text();
  } catch (err) {
    if (signal?.aborted) throw err;
    return {
      ok: false, status: 0, headers: new Headers(), data: null,
      problem: { title: 'Gateway unreachable', detail: `The gateway could not be reached (${err.message}).` },
    };
  }
  const type = res.headers.get('Content-Type') || '';
  let data = null;
  if (text !== '' && type.includes('json')) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (res.ok) return { ok: true, status: res.status, headers: res.headers, data, problem: null };
  const problem = type.includes('application/problem+json') && data && typeof data === 'object'
    ? { ...data, status: data.status || res.status }
    : { status: res.status, title: res.statusText || 'Error', detail: text.slice(0, 500) };
  if (res.status === 401 && key === undefined && sent === apiKey) unauthorized(problem);
  return { ok: false, status: res.status, headers: res.headers, data, problem };
}

// rememberReadToken keeps the read token a submit was answered with
// (the Read-Token and Read-Token-Expires headers), so that following the
// request needs no other call.
export function rememberReadToken(id, headers) {
  const token = headers.get('Read-Token');
  const expiresAt = Number(headers.get('Read-Token-Expires'));
  if (token && Number.isFinite(expiresAt)) readTokens.set(id, { token, expiresAt });
}

// readToken resolves to a read token for request id: one at hand, or one
// minted with POST /v1/requests/{id}/read-token. Without a key there is
// nothing to mint with (the gateway runs without auth, and its streams
// need no token): it resolves to ''. A failure resolves to the call's
// answer instead, {problem, status}. It rejects only when signal aborts it.
export async function readToken(id, signal) {
  const held = readTokens.get(id);
  if (held && held.expiresAt - Date.now() > TOKEN_MARGIN_MS) return held.token;
  readTokens.delete(id);
  if (apiKey === '') return '';
  const key = apiKey;
  const res = await call('POST', `/v1/requests/${encodeURIComponent(id)}/read-token`, { signal });
  if (!res.ok || !res.data || typeof res.data.token !== 'string' || res.data.token === '') {
    return { status: res.status, problem: res.problem || { title: 'Unexpected answer', detail: 'no token in the answer' } };
  }
  if (key === apiKey) readTokens.set(id, { token: res.data.token, expiresAt: Number(res.data.expires_at) || 0 });
  return res.data.token;
}

// FINAL_STATUSES are the answers that asking again will not change: a bad
// or unknown id, no key or a bad one, a key that may not read the request.
const FINAL_STATUSES = new Set([400, 401, 403, 404]);

// sleep waits ms milliseconds, or until signal aborts.
function sleep(ms, signal) {
  return new Promise((resolve) => {
    const abort = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', abort);
      resolve();
    }, ms);
    signal.addEventListener('abort', abort, { once: true });
  });
}

// follow follows request id until it ends and returns a function that stops
// following. It reads the record, then listens to the request's event
// stream (/v1/requests/{id}/events, opened with a read token), which sends
// each stored event and finally a 'reply' event holding the record and
// ends. Should the stream fail, or no read token be had, it long-polls the
// record (?wait=30, with the key) instead.
//
// on has: record(rec) for each fresh copy of the record; event({type, seq,
// data}) for each stream event; final(rec) once, with the ended record;
// transport(kind) with 'stream', 'poll' or 'connecting'; problem(p, fatal)
// for errors, fatal when following is over.
export function follow(id, on) {
  const base = `/v1/requests/${encodeURIComponent(id)}`;
  const ctl = new AbortController();
  let source = null;
  let done = false;

  const closeSource = () => {
    if (source) {
      source.close();
      source = null;
      window.__eventSource = null; // for tests: the stream is closed
    }
  };
  const stop = () => {
    done = true;
    closeSource();
    ctl.abort();
  };
  const finish = (rec) => {
    if (done) return;
    stop();
    on.final(rec);
  };
  const fail = (problem) => {
    if (done) return;
    stop();
    on.problem(problem, true);
  };

  const poll = async () => {
    on.transport('poll');
    let backoff = 1000;
    while (!done) {
      let res;
      const started = performance.now();
      try {
        res = await call('GET', `${base}?wait=30`, { signal: ctl.signal });
      } catch {
        return; // stopped
      }
      if (done) return;
      if (res.ok && res.data) {
        backoff = 1000;
        on.record(res.data);
        if (TERMINAL.has(res.data.status)) {
          finish(res.data);
          return;
        }
        // A gateway whose wait cap is lower answers early: do not spin.
        if (performance.now() - started < 1000) await sleep(1000, ctl.signal);
        continue;
      }
      if (FINAL_STATUSES.has(res.status)) {
        fail(res.problem);
        return;
      }
      on.problem(res.problem, false);
      await sleep(backoff, ctl.signal);
      backoff = Math.min(backoff * 2, 15000);
    }
  };

  const stream = (token) => {
    on.transport('connecting');
    const query = token ? `?access_token=${encodeURIComponent(token)}` : '';
    source = new EventSource(`${base}/events${query}`);
    window.__eventSource = source;
    source.addEventListener('open', () => {
      if (!done) on.transport('stream');
    });
    const handle = (e) => {
      if (done) return;
      let data;
      try {
        data = JSON.parse(e.data);
      } catch {
        data = e.data;
      }
      on.event({ type: e.type, seq: e.lastEventId, data });
    };
    for (const type of EVENT_TYPES) source.addEventListener(type, handle);
    source.addEventListener('reply', (e) => {
      if (done) return;
      // The last event: the stream ends after it, so close before the
      // browser tries to reconnect.
      closeSource();
      let rec = null;
      try {
        rec = JSON.parse(e.data);
      } catch {
        rec = null;
      }
      on.event({ type: 'reply', seq: e.lastEventId, data: rec });
      if (rec && typeof rec === 'object' && rec.status) {
        finish(rec);
      } else {
        poll(); // an unreadable final event: ask for the record itself
      }
    });
    source.addEventListener('error', () => {
      if (done) return;
      // EventSource would retry by itself; a long-poll works wherever a
      // plain GET does, and needs no resume.
      closeSource();
      poll();
    });
  };

  (async () => {
    let res;
    try {
      res = await call('GET', base, { signal: ctl.signal });
    } catch {
      return; // stopped
    }
    if (done) return;
    if (!res.ok) {
      if (FINAL_STATUSES.has(res.status)) {
        fail(res.problem);
      } else {
        on.problem(res.problem, false);
        poll();
      }
      return;
    }
    on.record(res.data);
    let token;
    try {
      token = await readToken(id, ctl.signal);
    } catch {
      return; // stopped
    }
    if (done) return;
    if (typeof token === 'string') {
      stream(token);
    } else if (token.status === 404) {
      // The record was just read, so the request is there: this gateway
      // mints no tokens (it runs without auth), and its streams need none.
      stream('');
    } else if (FINAL_STATUSES.has(token.status)) {
      fail(token.problem);
    } else {
      poll(); // the long-poll needs no token
    }
  })();

  return stop;
}

// The gateway's HTTP API as the console uses it: same origin, plain fetch
// and EventSource, no headers a browser could not send.

// STATUSES are a request's statuses; the first two are open.
export const STATUSES = ['queued', 'pending', 'replied', 'failed', 'expired', 'unroutable', 'cancelled'];

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

// call makes one API call. It resolves to {ok, status, headers, data,
// problem}: data is the parsed JSON body, problem an RFC 9457 problem (or
// one made up for a failure that has none). It rejects only when signal
// aborts it.
export async function call(method, path, { body, headers, signal } = {}) {
  let res;
  let text;
  try {
    res = await fetch(path, { method, body, headers, signal, cache: 'no-store', credentials: 'same-origin' });
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
  return { ok: false, status: res.status, headers: res.headers, data, problem };
}

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
// stream (/v1/requests/{id}/events), which sends each stored event and
// finally a 'reply' event holding the record and ends. Should the stream
// fail, it long-polls the record (?wait=30) instead.
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
      if (res.status === 404 || res.status === 400) {
        fail(res.problem);
        return;
      }
      on.problem(res.problem, false);
      await sleep(backoff, ctl.signal);
      backoff = Math.min(backoff * 2, 15000);
    }
  };

  const stream = () => {
    on.transport('connecting');
    source = new EventSource(`${base}/events`);
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
      if (res.status === 404 || res.status === 400) {
        fail(res.problem);
      } else {
        on.problem(res.problem, false);
        poll();
      }
      return;
    }
    on.record(res.data);
    stream();
  })();

  return stop;
}

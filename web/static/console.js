// The switchboard console: log in with an API key, submit a request,
// follow it live, browse recent requests and dead letters. Views are chosen
// by the URL fragment:
//
//   #/                              submit (and follow, once there is a request)
//   #/requests/<id>                 follow request <id>
//   #/requests?status=..&routing_key=..   recent requests, filtered
//   #/dead-letters                  dead letters
//
// A gateway that needs a key shows the login first, whatever the fragment
// says; the fragment's view follows once logged in. body[data-auth] says
// which: 'login', 'key' (logged in) or 'open' (the gateway needs no key).
//
// For tests, window.__events lists the types of the events the followed
// request's EventSource delivered, window.__progress the progress fractions
// shown, window.__transport how updates arrive ('stream' or 'poll'), and
// window.__eventSource the open EventSource (null once closed).

import { call, checkRoutingKey, follow, onUnauthorized, rememberReadToken, routingPath, useKey } from './api.js';
import { $, el, formatClock, formatTime, pretty, setText, showProblem, statusBadge } from './dom.js';
import { checkKeyFormat, forgetKey, probe, storeKey, storedKey } from './session.js';

const PAGE_SIZE = 50;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// ---- Views and the fragment router ----

const VIEWS = {
  login: 'view-login', submit: 'view-submit', requests: 'view-requests', 'dead-letters': 'view-dead-letters',
};

function showView(name) {
  for (const [view, id] of Object.entries(VIEWS)) $(id).hidden = view !== name;
  for (const link of document.querySelectorAll('nav a[data-view]')) {
    if (link.dataset.view === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  document.body.dataset.view = name;
}

// parseRoute reads location.hash into {view, id, params}.
function parseRoute() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [path, query = ''] = hash.split('?');
  const params = new URLSearchParams(query);
  let parts;
  try {
    parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    parts = []; // a malformed %-escape: not a route
  }
  if (parts[0] === 'requests' && parts[1]) return { view: 'submit', id: parts[1], params };
  if (parts[0] === 'requests') return { view: 'requests', params };
  if (parts[0] === 'dead-letters') return { view: 'dead-letters', params };
  return { view: 'submit', params };
}

function route() {
  if (access === '') return; // the login stays until there is a key
  if (location.hash !== '' && !location.hash.startsWith('#/')) return; // not a route
  const r = parseRoute();
  showView(r.view);
  if (r.view === 'submit' && r.id) startFollowing(r.id);
  if (r.view === 'requests') loadRequests(r.params);
  if (r.view === 'dead-letters') loadDeadLetters();
}

// go sets the fragment, and routes even when it is unchanged (no
// hashchange event fires then).
function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

// ---- Submit ----

function fieldError(id, message) {
  const node = $(`${id}-error`);
  node.textContent = message;
  node.hidden = message === '';
  $(id).setAttribute('aria-invalid', message === '' ? 'false' : 'true');
  return message === '';
}

function checkKey() {
  const key = $('submit-key').value.trim();
  setText('submit-path', checkRoutingKey(key) === '' ? routingPath(key) : '/…');
  return key;
}

function checkBody() {
  const text = $('submit-body').value;
  try {
    JSON.parse(text);
    return fieldError('submit-body', '');
  } catch (err) {
    return fieldError('submit-body', `Not valid JSON: ${err.message}`);
  }
}

function checkTimeout() {
  const raw = $('submit-timeout').value.trim();
  if (raw === '' || /^[1-9][0-9]{0,8}$/.test(raw)) return fieldError('submit-timeout', '');
  return fieldError('submit-timeout', 'Request-Timeout is a whole number of seconds, at least 1.');
}

async function submit(event) {
  event.preventDefault();
  const key = checkKey();
  const keyOK = fieldError('submit-key', checkRoutingKey(key));
  const bodyOK = checkBody();
  const timeoutOK = checkTimeout();
  if (!keyOK || !bodyOK || !timeoutOK) {
    document.querySelector('#submit-form [aria-invalid="true"]')?.focus();
    return;
  }
  const headers = { 'Content-Type': 'application/json' };
  const timeout = $('submit-timeout').value.trim();
  if (timeout !== '') headers['Request-Timeout'] = timeout;

  const button = $('submit-button');
  button.disabled = true;
  $('submit-result').replaceChildren(`Submitting to ${routingPath(key)}…`);
  showProblem($('submit-problem'), null);
  const res = await call('POST', routingPath(key), { body: $('submit-body').value, headers });
  button.disabled = false;
  if (access === '') return; // a 401 logged out: the login says why

  if (res.ok && res.data && res.data.id) {
    const rec = res.data;
    rememberReadToken(rec.id, res.headers);
    $('submit-result').replaceChildren(
      el('p', {},
        el('span', { 'data-testid': 'submit-status' }, `${res.status} ${res.status === 200 ? 'OK' : 'Accepted'}`), ': ',
        el('a', { href: `#/requests/${rec.id}` }, el('code', {}, rec.id)), ' ', statusBadge(rec.status)),
      el('details', {},
        el('summary', {}, 'The record as answered'),
        el('pre', { class: 'json', tabindex: 0, 'data-testid': 'submit-record' }, pretty(rec))),
    );
    go(`#/requests/${rec.id}`);
    return;
  }
  $('submit-result').replaceChildren();
  showProblem($('submit-problem'), res.problem ||
    { status: res.status, title: 'Unexpected answer', detail: 'the gateway answered without a request record' });
  // A refused request may still have been kept (unroutable): link to it.
  const id = res.headers.get('Message-ID');
  if (id && UUID.test(id) && res.headers.get('Location')) {
    $('submit-problem').append(el('p', {}, 'The request is kept: ', el('a', { href: `#/requests/${id}` }, 'see its record'), '.'));
  }
}

// ---- Follow ----

let following = null; // {id, ended, stop}

function resetFollow(id) {
  window.__events = [];
  window.__progress = [];
  window.__transport = '';
  $('follow').hidden = false;
  setText('follow-id', id);
  setStatus('loading');
  for (const field of ['follow-key', 'follow-time', 'follow-expires', 'follow-transport', 'follow-reply', 'follow-request']) {
    setText(field, '');
  }
  setProgress(null);
  $('follow-progress').dataset.state = '';
  $('follow-log').replaceChildren();
  $('follow-log-empty').hidden = false;
  showProblem($('follow-problem'), null);
}

function setStatus(status) {
  const node = $('follow-status');
  node.textContent = status;
  node.dataset.status = status;
}

// setProgress shows the fraction done; null makes the bar indeterminate
// (working, nothing reported yet).
function setProgress(fraction) {
  const bar = $('follow-progress');
  if (fraction === null) {
    bar.removeAttribute('value');
    setText('follow-progress-text', '');
    return;
  }
  const f = Math.min(1, Math.max(0, fraction));
  bar.value = f;
  setText('follow-progress-text', `${Math.round(f * 100)}%`);
}

function showRecord(rec) {
  if (!rec || typeof rec !== 'object') return;
  setStatus(rec.status);
  setText('follow-key', rec.routing_key);
  setText('follow-time', formatTime(rec.time));
  setText('follow-expires', formatTime(rec.expires_at));
  setText('follow-request', pretty(rec.request));
}

function showFinal(rec) {
  showRecord(rec);
  const bar = $('follow-progress');
  bar.dataset.state = rec.status;
  if (rec.status === 'replied') setProgress(1);
  else if (!bar.hasAttribute('value')) setProgress(0);
  let text;
  if (rec.reply) text = pretty(rec.reply.body);
  else if (Array.isArray(rec.replies)) text = pretty(rec.replies.map((r) => r.body));
  else text = `No reply: the request ended ${rec.status}.`;
  setText('follow-reply', text);
  setText('follow-transport', 'ended');
}

const TRANSPORTS = {
  connecting: 'connecting to the event stream…',
  stream: 'live (Server-Sent Events)',
  poll: 'long-polling (the event stream is unavailable)',
};

// describe turns a stream event into a line for the log. The stream's data
// is a CloudEvent whose data says what happened.
function describe(type, data) {
  if (type === 'reply') return { text: data && data.status ? `final status ${data.status}` : 'final record' };
  const payload = data && typeof data === 'object' && 'specversion' in data ? data.data : data;
  if (payload && typeof payload === 'object') {
    const parts = [];
    let progress;
    if (typeof payload.progress === 'number' && Number.isFinite(payload.progress)) {
      progress = payload.progress;
      parts.push(`${Math.round(progress * 100)}%`);
    }
    if (typeof payload.message === 'string') parts.push(payload.message);
    else if (typeof payload.state === 'string') parts.push(payload.state);
    if (type === 'request.accepted') parts.push('accepted');
    else if (typeof payload.status === 'string' && !payload.message) parts.push(`status ${payload.status}`);
    if (typeof payload.via === 'string') parts.push(`via ${payload.via}`);
    return { text: parts.join(' · '), progress };
  }
  return { text: typeof payload === 'string' ? payload : '' };
}

function logEvent({ type, seq, data }) {
  window.__events.push(type);
  const d = describe(type, data);
  if (d.progress !== undefined) {
    window.__progress.push(d.progress);
    setProgress(d.progress);
  }
  // A request.<status> event says the request ended before the final
  // record arrives. (request.accepted carries the status at insertion,
  // which the record has long moved on from.)
  const isEvent = data && typeof data === 'object' && 'specversion' in data;
  const payload = isEvent ? data.data : null;
  if (payload && typeof payload.status === 'string' && type === `request.${payload.status}`) setStatus(payload.status);

  // An event shows when it was made; the final record, when it came.
  const when = isEvent && data.time ? data.time : null;
  $('follow-log-empty').hidden = true;
  $('follow-log').append(el('li', { 'data-testid': 'event', 'data-type': type, 'data-seq': seq || null },
    el('time', { class: 'when' }, formatClock(when)), ' ',
    el('span', { class: 'type' }, type), ' ',
    el('span', { class: 'what', 'data-testid': 'event-text' }, d.text),
  ));
}

// startFollowing follows request id, unless it is being followed already.
// A request that has ended is read again: coming back to it replays its
// history.
function startFollowing(id) {
  if (following && following.id === id && !following.ended) return;
  stopFollowing();
  resetFollow(id);
  const current = { id, ended: false, stop: null };
  current.stop = follow(id, {
    record: showRecord,
    event: logEvent,
    final(rec) {
      current.ended = true;
      showFinal(rec);
    },
    transport(kind) {
      window.__transport = kind;
      setText('follow-transport', TRANSPORTS[kind] || kind);
    },
    problem(problem, fatal) {
      showProblem($('follow-problem'), problem);
      if (fatal) {
        current.ended = true;
        setStatus('unknown');
        setText('follow-transport', 'stopped');
        setProgress(0);
      }
    },
  });
  following = current;
}

function stopFollowing() {
  if (following) following.stop();
  following = null;
}

// ---- Recent requests ----

let requestsQuery = null; // the query string of the list the table shows
let requestsNext = null;

async function loadRequests(params, before) {
  const status = params.get('status') || '';
  const key = params.get('routing_key') || '';
  $('requests-status').value = status;
  $('requests-key').value = key;
  const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (status) q.set('status', status);
  if (key) q.set('routing_key', key);
  if (before) q.set('before', before);
  if (!before) {
    requestsQuery = q.toString();
    $('requests-table').tBodies[0].replaceChildren();
  }
  const query = requestsQuery;
  const table = $('requests-table');
  $('requests-more').disabled = true;
  table.dataset.state = 'loading';
  setText('requests-state', 'Loading…');
  showProblem($('requests-problem'), null);
  const res = await call('GET', `/v1/requests?${q}`);
  if (query !== requestsQuery) return; // a newer load took over
  if (!res.ok || !res.data || !Array.isArray(res.data.requests)) {
    table.dataset.state = 'error';
    setText('requests-state', '');
    showProblem($('requests-problem'), res.problem || { title: 'Unexpected answer', detail: 'no requests list in the answer' });
    return;
  }
  const body = table.tBodies[0];
  for (const rec of res.data.requests) {
    const row = el('tr', { 'data-testid': 'request-row', 'data-id': rec.id, 'data-status': rec.status, class: 'clickable' },
      el('td', {}, formatTime(rec.time)),
      el('td', {}, el('code', {}, rec.routing_key)),
      el('td', {}, statusBadge(rec.status)),
      el('td', {}, el('a', { href: `#/requests/${rec.id}`, 'aria-label': `Follow request ${rec.id}` }, el('code', {}, rec.id))),
    );
    body.append(row);
  }
  requestsNext = res.data.next_before || null;
  $('requests-more').hidden = !requestsNext;
  $('requests-more').disabled = false;
  const n = body.rows.length;
  setText('requests-state', n === 0 ? 'No requests match.' : `${n} request${n === 1 ? '' : 's'}${requestsNext ? ', more available' : ''}.`);
  table.dataset.query = query; // for tests: which list this is
  table.dataset.state = 'loaded';
}

function filterRequests(event) {
  event.preventDefault();
  const q = new URLSearchParams();
  const status = $('requests-status').value;
  const key = $('requests-key').value.trim();
  if (status) q.set('status', status);
  if (key) q.set('routing_key', key);
  const query = q.toString();
  go(query ? `#/requests?${query}` : '#/requests');
}

// ---- Dead letters ----

let deadLettersNext = null;
let deadLettersLoad = 0;

function deadLetterBody(d) {
  if (d.body !== null && d.body !== undefined) return JSON.stringify(d.body);
  if (d.body_base64) return `base64 ${d.body_base64}`;
  return '';
}

function shorten(text, n) {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

async function loadDeadLetters(before) {
  const load = ++deadLettersLoad;
  const table = $('dead-letters-table');
  $('dead-letters-more').disabled = true;
  if (!before) table.tBodies[0].replaceChildren();
  table.dataset.state = 'loading';
  setText('dead-letters-state', 'Loading…');
  showProblem($('dead-letters-problem'), null);
  const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (before) q.set('before', before);
  const res = await call('GET', `/v1/dead-letters?${q}`);
  if (load !== deadLettersLoad) return;
  if (!res.ok || !res.data || !Array.isArray(res.data.dead_letters)) {
    table.dataset.state = 'error';
    setText('dead-letters-state', '');
    showProblem($('dead-letters-problem'), res.problem || { title: 'Unexpected answer', detail: 'no dead_letters list in the answer' });
    return;
  }
  const body = table.tBodies[0];
  for (const d of res.data.dead_letters) {
    const full = deadLetterBody(d);
    const corr = d.correlation_id || '';
    body.append(el('tr', { 'data-testid': 'dead-letter-row', 'data-id': d.id, 'data-correlation-id': corr },
      el('td', {}, formatTime(d.received_at)),
      el('td', {}, d.reason),
      el('td', {}, d.source),
      el('td', {}, UUID.test(corr) ? el('a', { href: `#/requests/${corr}` }, el('code', {}, corr)) : el('code', {}, corr)),
      el('td', { class: 'body-cell', title: shorten(full, 2000) }, el('code', {}, shorten(full, 120))),
    ));
  }
  deadLettersNext = res.data.next_before || null;
  $('dead-letters-more').hidden = !deadLettersNext;
  $('dead-letters-more').disabled = false;
  const n = body.rows.length;
  setText('dead-letters-state', n === 0 ? 'No dead letters.' : `${n} dead letter${n === 1 ? '' : 's'}${deadLettersNext ? ', more available' : ''}.`);
  table.dataset.state = 'loaded';
}

// ---- Session ----

// access is how the console may use the API: 'key' (logged in with a key),
// 'open' (the gateway runs without auth) or '' (logged out).
let access = '';

function setAccess(kind) {
  access = kind;
  document.body.dataset.auth = kind || 'login';
  $('nav').hidden = kind === '';
  $('session').hidden = kind === '';
  $('logout-button').hidden = kind !== 'key';
  setText('session-state', kind === 'open'
    ? 'No API key needed: this gateway runs without auth.'
    : 'Logged in; the key is kept in this tab only.');
}

// showLogin logs out and shows the login, with a note saying why and the
// gateway's problem, if any.
function showLogin(note, problem) {
  setAccess('');
  stopFollowing();
  showView('login');
  setText('login-note', note);
  $('login-note').hidden = !note;
  showProblem($('login-problem'), problem);
  fieldError('login-key', '');
  $('login-key').focus();
}

// enter shows the console, at the view the fragment names.
function enter(kind) {
  setAccess(kind);
  setText('login-note', '');
  $('login-note').hidden = true;
  showProblem($('login-problem'), null);
  route();
}

// forget drops the key and everything the session showed: the next login
// may be another project's.
function forget() {
  forgetKey();
  useKey('');
  stopFollowing();
  $('follow').hidden = true;
  $('submit-result').replaceChildren();
  showProblem($('submit-problem'), null);
  requestsQuery = null;
  requestsNext = null;
  $('requests-table').tBodies[0].replaceChildren();
  $('requests-table').dataset.state = '';
  $('requests-more').hidden = true;
  setText('requests-state', '');
  showProblem($('requests-problem'), null);
  deadLettersLoad++;
  deadLettersNext = null;
  $('dead-letters-table').tBodies[0].replaceChildren();
  $('dead-letters-table').dataset.state = '';
  $('dead-letters-more').hidden = true;
  setText('dead-letters-state', '');
  showProblem($('dead-letters-problem'), null);
}

async function login(event) {
  event.preventDefault();
  const input = $('login-key');
  const key = input.value.trim();
  input.value = ''; // the key does not stay in the page
  if (!fieldError('login-key', checkKeyFormat(key))) {
    input.focus();
    return;
  }
  const button = $('login-button');
  button.disabled = true;
  setText('login-note', 'Checking the key…');
  $('login-note').hidden = false;
  showProblem($('login-problem'), null);
  const res = await probe(key);
  button.disabled = false;
  if (res.access === 'ok') {
    storeKey(key);
    useKey(key);
    enter('key');
    return;
  }
  showLogin(res.access === 'refused'
    ? 'The gateway did not accept this key.'
    : 'The key could not be checked: the gateway did not answer as expected.', res.problem);
}

function logout() {
  forget();
  showLogin('Logged out: this tab no longer holds the key.', null);
}

// unauthorized handles a 401 to any call: the key is gone (revoked,
// expired), or the gateway has started to need one.
function unauthorized(problem) {
  if (access === '') return; // logged out already
  const note = access === 'open'
    ? 'The gateway now needs an API key.'
    : 'The gateway no longer accepts the key (revoked or expired?): log in again.';
  forget();
  showLogin(note, problem);
}

// startSession picks up the key this tab logged in with, if any, and asks
// the gateway whether it is good, or whether one is needed at all.
async function startSession() {
  const key = storedKey();
  const res = await probe(key);
  if (res.access === 'ok') {
    useKey(key);
    enter(key === '' ? 'open' : 'key');
  } else if (res.access === 'refused') {
    forgetKey();
    showLogin(key === '' ? '' : 'The gateway no longer accepts the key (revoked or expired?): log in again.',
      key === '' ? null : res.problem);
  } else if (key !== '') {
    // The gateway could not say: keep the key, and let the views show
    // what fails.
    useKey(key);
    enter('key');
  } else {
    showLogin('Could not find out whether the gateway needs a key.', res.problem);
  }
}

// ---- Wiring ----

async function init() {
  // The skip link moves focus without touching the fragment the views use.
  $('skip-link').addEventListener('click', (event) => {
    event.preventDefault();
    $('main').focus();
  });
  $('submit-form').addEventListener('submit', submit);
  $('submit-key').addEventListener('input', () => {
    checkKey();
    if ($('submit-key').getAttribute('aria-invalid') === 'true') fieldError('submit-key', checkRoutingKey($('submit-key').value.trim()));
  });
  $('submit-body').addEventListener('input', checkBody);
  $('submit-timeout').addEventListener('input', checkTimeout);
  checkKey();

  $('requests-filter').addEventListener('submit', filterRequests);
  $('requests-more').addEventListener('click', () => loadRequests(parseRoute().params, requestsNext));
  // A click anywhere on a row follows it; the id link does the same for
  // the keyboard.
  $('requests-table').addEventListener('click', (event) => {
    const row = event.target.closest('tr[data-id]');
    if (row && !event.target.closest('a')) go(`#/requests/${row.dataset.id}`);
  });

  $('dead-letters-refresh').addEventListener('click', () => loadDeadLetters());
  $('dead-letters-more').addEventListener('click', () => loadDeadLetters(deadLettersNext));

  $('login-form').addEventListener('submit', login);
  $('login-key').addEventListener('input', () => {
    if ($('login-key').getAttribute('aria-invalid') === 'true') fieldError('login-key', '');
  });
  $('logout-button').addEventListener('click', logout);
  onUnauthorized(unauthorized);

  window.addEventListener('hashchange', route);
  window.__events = [];
  window.__eventSource = null;
  window.__progress = [];
  window.__transport = '';
  await startSession();
  document.body.dataset.ready = 'true';
}

init();

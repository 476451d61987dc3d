// The console's session: the API key it logged in with, kept in the tab's
// sessionStorage so that a reload keeps it and closing the tab forgets it.
// Never local storage (it would outlive the tab), never a cookie (it would
// ride along on every request, the page's and everyone else's), never a
// URL, the DOM or the browser's console.

import { call } from './api.js';

const STORAGE_KEY = 'switchboard.api-key';

// KEY_FORMAT is what can be sent as a bearer token at all: visible ASCII,
// no spaces. (The gateway's keys are sb_ and 43 base64url characters; the
// gateway, not the page, says whether a key is good.)
const KEY_FORMAT = /^[\x21-\x7e]{1,512}$/;

// storedKey returns the key this tab logged in with, or ''.
export function storedKey() {
  try {
    return sessionStorage.getItem(STORAGE_KEY) || '';
  } catch {
    return ''; // storage refused (a sandboxed frame, a strict setting)
  }
}

export function storeKey(key) {
  try {
    sessionStorage.setItem(STORAGE_KEY, key);
  } catch {
    // Not kept: this page works until it is reloaded.
  }
}

export function forgetKey() {
  try {
    sessionStorage.removeItem(STORAGE_KEY);
  } catch {
    // Nothing was kept.
  }
}

// checkKeyFormat returns why key cannot be an API key, or '' when it can.
export function checkKeyFormat(key) {
  if (key === '') return 'Enter an API key.';
  if (!KEY_FORMAT.test(key)) return 'An API key is one word of letters, digits and punctuation, such as sb_…';
  return '';
}

// probe asks the gateway whether key ('' for none) may use the API, with
// the cheapest read there is. It resolves to {access, problem}: access is
// 'ok' (the key works, or none is needed), 'refused' (401: the key is
// wrong, revoked or expired, or one is needed) or 'unknown' (the gateway
// could not say: unreachable, or an error).
export async function probe(key) {
  const res = await call('GET', '/v1/requests?limit=1', { key });
  // 403: the key is good but may not list requests; it may still submit,
  // or read what it submitted.
  if (res.ok || (res.status === 403 && key !== '')) return { access: 'ok', problem: null };
  if (res.status === 401) return { access: 'refused', problem: res.problem };
  return { access: 'unknown', problem: res.problem };
}

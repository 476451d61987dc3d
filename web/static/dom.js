// DOM helpers. Every piece of data reaches the page as a text node or an
// attribute value, never as markup, so nothing a request, reply or dead
// letter contains can become HTML.

// el creates an element. attrs are set as attributes (data-*, aria-*, href,
// class, ...); children are nodes or strings, strings becoming text nodes.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// $ finds the element with the given id; a missing one is a bug in the page.
export function $(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`console: no element #${id}`);
  return node;
}

// setText replaces the content of the element with id with text.
export function setText(id, text) {
  $(id).textContent = text ?? '';
}

// pad left-pads a number with zeros to width w.
const pad = (n, w) => String(n).padStart(w, '0');

// formatTime formats Unix milliseconds (or an ISO string) as local
// YYYY-MM-DD HH:MM:SS; '' when absent.
export function formatTime(t) {
  if (t === null || t === undefined || t === '') return '';
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1, 2)}-${pad(d.getDate(), 2)} ` +
    `${pad(d.getHours(), 2)}:${pad(d.getMinutes(), 2)}:${pad(d.getSeconds(), 2)}`;
}

// formatClock formats a time as local HH:MM:SS.mmm, for event logs.
export function formatClock(t) {
  const d = t ? new Date(t) : new Date();
  if (Number.isNaN(d.getTime())) return String(t);
  return `${pad(d.getHours(), 2)}:${pad(d.getMinutes(), 2)}:${pad(d.getSeconds(), 2)}.${pad(d.getMilliseconds(), 3)}`;
}

// pretty formats a JSON value for a <pre>.
export function pretty(value) {
  return JSON.stringify(value, null, 2);
}

// showProblem fills container (an element with role=alert) with an RFC 9457
// problem: its title, status, type and detail. A null problem hides it.
export function showProblem(container, problem) {
  container.replaceChildren();
  if (!problem) {
    container.hidden = true;
    return;
  }
  const title = problem.status ? `${problem.status} ${problem.title || ''}`.trim() : (problem.title || 'Error');
  container.append(
    el('p', { class: 'problem-title', 'data-testid': 'problem-title' }, title),
    el('p', { class: 'problem-detail', 'data-testid': 'problem-detail' }, problem.detail || ''),
  );
  if (problem.type) {
    container.append(el('p', { class: 'problem-type' }, 'type ', el('code', { 'data-testid': 'problem-type' }, problem.type)));
  }
  container.hidden = false;
}

// statusBadge returns a span showing a request status.
export function statusBadge(status) {
  return el('span', { class: 'status', 'data-status': status }, status);
}

// Small helpers shared by the pages: element building and formatting.

/** document.querySelector, throwing when the page lacks the element (a bug in index.html). */
export function $(selector, root = document) {
  const found = root.querySelector(selector);
  if (!found) throw new Error(`no element ${selector}`);
  return found;
}

/** An element with attributes (`data-*`, `aria-*`, `class` ...) and children (nodes or strings). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    node.setAttribute(key, value === true ? '' : String(value));
  }
  node.append(...children.filter((c) => c !== undefined && c !== null && c !== false));
  return node;
}

/** Seconds as m:ss (h:mm:ss from an hour on). */
export function clock(seconds) {
  const total = Math.max(0, Math.floor((Number(seconds) || 0) + 1e-3));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
}

/** A time range as m:ss–m:ss. */
export function span(start, end) {
  return `${clock(start)}\u2013${clock(end)}`;
}

/** A Unix time (seconds) as a local date and time. */
export function when(unix) {
  if (!unix) return 'never';
  return new Date(unix * 1000).toLocaleString(undefined, {dateStyle: 'medium', timeStyle: 'short'});
}

/** Show a message in an element that is hidden while empty. */
export function say(node, message) {
  node.textContent = message || '';
  node.hidden = !message;
}

/** The readable text of an error (ApiError carries the server's own message). */
export function reason(err) {
  return err && err.message ? err.message : String(err);
}

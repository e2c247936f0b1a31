// The search page. Its state lives in the URL: /?q=TEXT&group=moment|video, or /?like=ENTRY_ID&group=...
// (more like this). Back, forward and reload show the same search again.

import {api} from './api.js';
import {openPlayer} from './player.js';
import {$, el, reason, say, span} from './util.js';

const PAGE = 24;
const form = $('#search-form');
const input = $('#q');
const likeSource = $('#like-source');
const status = $('#search-status');
const error = $('#search-error');
const results = $('#results');
const loadMore = $('#load-more');

let navigate = () => {};
let shown = null; // the search on screen: {key, query, group, q, like, source}
let cursor = null;
let count = 0;
let inFlight = null;

/** The URL of a search. */
export function searchURL({q = '', like = null, group = 'moment'}) {
  const params = new URLSearchParams();
  if (like) params.set('like', like);
  else if (q) params.set('q', q);
  if (like || q) params.set('group', group);
  const query = params.toString();
  return query ? `/?${query}` : '/';
}

function group() {
  return form.elements.group.value === 'video' ? 'video' : 'moment';
}

function describe(source) {
  return source && source.path ? `${source.path} ${span(source.start, source.end)}` : null;
}

function card(hit) {
  const img = el('img', {src: hit.thumbnail_url, alt: '', loading: 'lazy', decoding: 'async', width: 320,
                         height: 180});
  img.addEventListener('error', () => img.classList.add('broken'), {once: true});
  const open = el('button', {type: 'button', class: 'card-open', 'data-testid': 'result-open'},
    el('span', {class: 'thumb'}, img),
    el('span', {class: 'card-path', 'data-testid': 'result-path'}, hit.path),
    el('span', {class: 'card-meta'},
      el('span', {'data-testid': 'result-time'}, span(hit.start, hit.end)),
      el('span', {class: 'score', title: 'similarity to the query', 'data-testid': 'result-score'},
        `score ${hit.score.toFixed(3)}`)),
    hit.caption ? el('span', {class: 'card-caption'}, hit.caption) : null);
  open.addEventListener('click', () => openPlayer(hit));
  const like = el('button', {type: 'button', class: 'like', 'data-testid': 'more-like-this',
                             'aria-label': `More like this: ${hit.path} ${span(hit.start, hit.end)}`}, 'More like this');
  like.addEventListener('click', () => {
    navigate(searchURL({like: String(hit.entry_id), group: group()}),
             {source: {entry_id: hit.entry_id, path: hit.path, start: hit.start, end: hit.end}});
    likeSource.focus();
  });
  return el('li', {class: 'card', 'data-testid': 'result-card', 'data-entry-id': hit.entry_id,
                   'data-video-id': hit.video_id, 'data-start': hit.start, 'data-end': hit.end}, open, like);
}

function summary() {
  const noun = shown.group === 'video' ? (count === 1 ? 'video' : 'videos') : (count === 1 ? 'moment' : 'moments');
  if (count === 0) return shown.like ? 'No other moments look like this one.' : `No matches for \u201c${shown.q}\u201d.`;
  const what = shown.like ? 'like this one' : `for \u201c${shown.q}\u201d`;
  return `${count} ${noun} ${what}${cursor ? ' (more below)' : ''}`;
}

async function fetchPage() {
  const mine = {};
  inFlight = mine;
  const controller = new AbortController();
  mine.abort = () => controller.abort();
  say(error, '');
  results.setAttribute('aria-busy', 'true');
  loadMore.disabled = true;
  if (!count) status.textContent = 'Searching\u2026';
  status.dataset.state = 'loading';
  try {
    const page = await api('/api/search', {method: 'POST', signal: controller.signal,
                                           json: {...shown.query, top_k: PAGE, group_by: shown.group, cursor}});
    if (inFlight !== mine) return;
    results.append(...page.hits.map(card));
    count += page.hits.length;
    cursor = page.next_cursor;
    loadMore.hidden = !cursor;
    status.textContent = summary();
    status.dataset.state = count ? 'results' : 'empty';
  } catch (err) {
    if (err.name === 'AbortError' || inFlight !== mine) return;
    status.textContent = '';
    status.dataset.state = 'error';
    say(error, reason(err));
  } finally {
    if (inFlight === mine) {
      inFlight = null;
      results.removeAttribute('aria-busy');
      loadMore.disabled = false;
    }
  }
}

/** Show the search the URL names (run it unless it is on screen already, or `force`). */
export function showSearch(params, state, {force = false} = {}) {
  const q = (params.get('q') || '').trim();
  const like = params.get('like');
  const g = params.get('group') === 'video' ? 'video' : 'moment';
  const key = JSON.stringify([q, like, g]);
  const text = like ? '' : q;
  if (input.value.trim() !== text) input.value = text;
  form.elements.group.value = g;
  if (shown && shown.key === key && !force) return;
  if (inFlight) inFlight.abort();
  inFlight = null;
  const source = state && state.source && String(state.source.entry_id) === like ? state.source : null;
  shown = {key, q, like, group: g, query: like ? {entry_id: Number(like)} : {text: q}};
  cursor = null;
  count = 0;
  results.replaceChildren();
  loadMore.hidden = true;
  say(error, '');
  likeSource.hidden = !like;
  likeSource.textContent = like ? `More like ${describe(source) || `entry ${like}`}` : '';
  if (!q && !like) {
    status.textContent = 'Describe what you are looking for and press Enter.';
    status.dataset.state = 'idle';
    return;
  }
  if (like && !/^[1-9]\d*$/.test(like)) {
    status.textContent = '';
    say(error, `like=${like} is not an entry id`);
    return;
  }
  fetchPage();
}

/** Wire the form (navigate(url, state) pushes a URL and shows it). */
export function initSearch(nav) {
  navigate = nav;
  likeSource.tabIndex = -1;
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const q = input.value.trim();
    if (!q) {
      input.focus();
      return;
    }
    const url = searchURL({q, group: group()});
    if (url === location.pathname + location.search && !location.hash) {
      showSearch(new URLSearchParams(location.search), history.state, {force: true}); // the same search again
    } else {
      navigate(url);
    }
  });
  form.addEventListener('change', (event) => {
    if (event.target.name !== 'group' || !shown || (!shown.q && !shown.like)) return;
    navigate(searchURL({q: shown.q, like: shown.like, group: group()}), history.state);
  });
  loadMore.addEventListener('click', () => {
    if (cursor && !inFlight) fetchPage();
  });
  document.addEventListener('keydown', (event) => {
    const typing = event.target.closest('input, textarea, select, [contenteditable]');
    if (event.key === '/' && !typing && !event.ctrlKey && !event.metaKey && !event.altKey && !$('#search-view').hidden) {
      event.preventDefault();
      input.focus();
      input.select();
    }
  });
}

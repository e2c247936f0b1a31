// The library page: index status, uploads (drag and drop or a file input), rescans, live job progress over
// Server-Sent Events, and the list of videos.

import {api, upload} from './api.js';
import {openPlayer} from './player.js';
import {$, clock, el, reason, say, when} from './util.js';

const POLL_MS = 5000; // how often the open library page looks for a job started elsewhere
const view = $('#library-view');
const statsList = $('#stats');
const statsError = $('#stats-error');
const summary = $('#summary');
const readOnlyNote = $('#read-only-note');
const mutations = $('#mutations');
const drop = $('#drop-zone');
const fileInput = $('#upload-input');
const rescan = $('#rescan');
const jobBox = $('#job');
const bar = $('#job-progress');
const jobStatus = $('#job-status');
const jobError = $('#job-error');
const rows = $('#video-rows');
const videosStatus = $('#videos-status');
const videosMore = $('#videos-more');

const KINDS = {update: 'Rescanning the library', upload: 'Indexing the upload', delete: 'Deleting'};
let watching = null; // {id, stop}
let busy = false; // an upload of ours is in progress
let poll = null;
let videosCursor = null;
let videosLoaded = false;

// ------------------------------------------------------------------ status
function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

function renderStats(s) {
  const items = [
    ['Videos', s.videos], ['Moments', s.entries], ['Model', s.model + (s.pretrained ? ` (${s.pretrained})` : '')],
    ['Per moment', `${s.frames} frames over ${s.segment ? `${s.segment} s` : 'the whole video'}`],
    ['Vector index', `${s.index_kind}${s.captions ? ', with caption words' : ''}`], ['Last update', when(s.last_update)],
  ];
  statsList.replaceChildren(...items.flatMap(([k, v]) => [el('dt', {}, k),
    el('dd', {'data-testid': `stat-${k.toLowerCase().replace(/\s+/g, '-')}`}, String(v ?? '\u2014'))]));
  summary.textContent = `${plural(s.videos, 'video', 'videos')} \u00b7 ${plural(s.entries, 'moment', 'moments')}`
    + (s.read_only ? ' \u00b7 read-only' : '');
  readOnlyNote.hidden = !s.read_only;
  mutations.hidden = Boolean(s.read_only);
  for (const control of [fileInput, rescan]) control.disabled = Boolean(s.read_only);
}

/** Fetch /api/stats: the header summary and the library page; follow a job started elsewhere. */
export async function refreshStats() {
  try {
    const s = await api('/api/stats');
    renderStats(s);
    say(statsError, '');
    if (s.job && !watching && !busy && s.job.state !== 'done' && s.job.state !== 'failed') watch(s.job);
    return s;
  } catch (err) {
    say(statsError, reason(err));
    return null;
  }
}

// ------------------------------------------------------------------ jobs
function renderJob(job) {
  jobBox.hidden = false;
  jobBox.dataset.state = job.state;
  jobBox.dataset.job = job.id;
  bar.value = job.state === 'done' ? 1 : job.progress || 0;
  const label = KINDS[job.kind] || job.kind;
  if (job.state === 'queued') {
    jobStatus.textContent = `${label}: queued\u2026`;
  } else if (job.state === 'running') {
    const count = job.total ? ` ${job.done} of ${job.total}` : '';
    jobStatus.textContent = `${label}\u2026${count}${job.current ? ` \u2014 ${job.current}` : ''}`;
  } else if (job.state === 'done') {
    jobStatus.textContent = `${label}: done${job.message ? ` (${job.message})` : ''}.`;
    const failures = (job.result && job.result.failures) || [];
    say(jobError, failures.map((f) => `${f.path}: ${f.reason}`).join('\n'));
  } else {
    jobStatus.textContent = `${label}: failed.`;
    say(jobError, job.message || 'the job failed');
  }
}

/** Follow a job until it ends (its event stream; polling if the stream breaks). Resolves to the last state. */
function watch(job) {
  if (watching) watching.stop();
  say(jobError, '');
  renderJob(job);
  return new Promise((resolve) => {
    let source = null;
    let timer = null;
    let stopped = false;
    const finish = (last) => {
      resolve(last);
      stop();
      renderJob(last);
      refreshStats();
      loadVideos(true);
    };
    const stop = () => { // also when another job is followed instead: the caller stops waiting
      stopped = true;
      resolve(null);
      if (source) source.close();
      clearTimeout(timer);
      if (watching && watching.id === job.id) watching = null;
    };
    const pollJob = async () => {
      if (stopped) return;
      try {
        const now = await api(`/api/jobs/${job.id}`);
        if (stopped) return;
        if (now.state === 'done' || now.state === 'failed') return finish(now);
        renderJob(now);
      } catch (err) {
        if (stopped) return;
        say(jobError, reason(err));
        if (err.status === 401 || err.status === 404) return stop(); // no key given, or the job is gone
      }
      timer = setTimeout(pollJob, 1000);
    };
    watching = {id: job.id, stop};
    source = new EventSource(`/api/jobs/${job.id}/events`);
    source.addEventListener('progress', (e) => renderJob(JSON.parse(e.data)));
    source.addEventListener('end', (e) => finish(JSON.parse(e.data)));
    source.addEventListener('error', () => { // no stream (a proxy, a key needed): ask now and then instead
      source.close();
      source = null;
      if (!stopped) pollJob();
    });
  });
}

async function startRescan() {
  rescan.disabled = true;
  say(jobError, '');
  try {
    const answer = await api('/api/index/update', {method: 'POST'});
    await watch(answer.job);
  } catch (err) {
    say(jobError, reason(err));
  } finally {
    rescan.disabled = false;
  }
}

async function uploadAll(files) {
  if (busy || !files.length) return;
  busy = true;
  if (watching) watching.stop();
  say(jobError, '');
  try {
    for (const file of files) {
      jobBox.hidden = false;
      jobBox.dataset.state = 'uploading';
      bar.value = 0;
      jobStatus.textContent = `Uploading ${file.name}\u2026`;
      const answer = await upload('/api/videos', file, (f) => {
        bar.value = f;
        jobStatus.textContent = `Uploading ${file.name}\u2026 ${Math.round(f * 100)}%`;
      });
      const last = await watch(answer.job);
      if (last && last.state === 'done') jobStatus.textContent += ` Stored as ${answer.path}.`;
    }
  } catch (err) {
    jobBox.dataset.state = 'failed';
    jobStatus.textContent = 'Upload failed.';
    say(jobError, reason(err));
  } finally {
    busy = false;
    fileInput.value = '';
  }
}

// ------------------------------------------------------------------ videos
function row(v) {
  const open = el('button', {type: 'button', class: 'linkish', 'data-testid': 'video-open'}, v.path);
  open.addEventListener('click', () => openPlayer({video_id: v.id, path: v.path, start: 0, end: v.duration,
    playable: v.playable, stream_url: v.stream_url, preview_url: v.preview_url}, {whole: true}));
  return el('tr', {'data-testid': 'video-row'}, el('th', {scope: 'row'}, open), el('td', {}, clock(v.duration)),
            el('td', {}, String(v.entries)), el('td', {}, when(v.indexed_at)));
}

async function loadVideos(reset = false) {
  if (reset) {
    videosCursor = null;
    if (view.hidden) { // reloaded when the page is next shown
      videosLoaded = false;
      return;
    }
  }
  videosMore.disabled = true;
  try {
    const params = new URLSearchParams({limit: '50'});
    if (videosCursor) params.set('cursor', videosCursor);
    const page = await api(`/api/videos?${params}`);
    if (reset || !videosCursor) rows.replaceChildren();
    rows.append(...page.videos.map(row));
    videosCursor = page.next_cursor;
    videosMore.hidden = !videosCursor;
    videosStatus.textContent = page.total ? `${rows.children.length} of ${page.total}` : 'No videos indexed yet.';
    videosLoaded = true;
  } catch (err) {
    videosStatus.textContent = reason(err);
  } finally {
    videosMore.disabled = false;
  }
}

// ------------------------------------------------------------------ page
/** The library page was shown. */
export function showLibrary() {
  refreshStats();
  if (!videosLoaded) loadVideos(true);
  clearInterval(poll);
  poll = setInterval(() => {
    if (!watching && !busy) refreshStats();
  }, POLL_MS);
}

/** The library page was hidden. */
export function hideLibrary() {
  clearInterval(poll);
  poll = null;
}

export function initLibrary() {
  rescan.addEventListener('click', startRescan);
  fileInput.addEventListener('change', () => uploadAll([...fileInput.files]));
  videosMore.addEventListener('click', () => loadVideos(false));
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    if (!fileInput.disabled) uploadAll([...e.dataTransfer.files]);
  });
  // a file dropped beside the zone must not replace the page
  for (const type of ['dragover', 'drop']) {
    window.addEventListener(type, (e) => {
      if (!drop.contains(e.target)) e.preventDefault();
    });
  }
}

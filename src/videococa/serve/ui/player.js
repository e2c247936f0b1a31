// The player panel: plays one moment (seek to its start, pause at its end) and asks the model about it.

import {api} from './api.js';
import {$, reason, say, span} from './util.js';

const dialog = $('#player');
const video = $('#player-video');
const title = $('#player-title');
const rangeText = $('#player-range');
const replay = $('#player-replay');
const error = $('#player-error');
const captionButton = $('#caption-button');
const captionText = $('#caption-text');
const askForm = $('#ask-form');
const askInput = $('#ask-input');
const answerText = $('#answer-text');

let moment = null; // {video_id, path, start, end, playable, stream_url, preview_url, whole}
let source = 'stream'; // 'stream': the original file; 'preview': a WebM of the moment only (times from 0)
let from = 0; // where the moment starts and ends in the file being played
let to = 0;
let stopAtEnd = false; // pause when playback reaches `to` (until the user plays on or seeks elsewhere)
let seekingOurselves = false;
let opener = null;
let generation = 0; // bumps at each open: answers for a moment closed since are dropped

function play(src) {
  source = src;
  from = source === 'stream' ? moment.start : 0;
  to = source === 'stream' ? moment.end : moment.end - moment.start;
  stopAtEnd = !moment.whole;
  video.dataset.source = source;
  video.src = source === 'stream' ? moment.stream_url : moment.preview_url;
  watchFrames();
}

function restart() {
  stopAtEnd = !moment.whole;
  seekingOurselves = true;
  video.currentTime = from;
  video.play().catch(() => { /* autoplay refused: the controls are there */ });
}

function checkEnd() {
  if (stopAtEnd && !video.paused && video.currentTime >= to - 0.01) {
    stopAtEnd = false;
    video.pause();
  }
}

function watchFrames() {
  // timeupdate fires only every ~250 ms; a frame callback stops the moment within one frame of its end
  if (!('requestVideoFrameCallback' in video)) return;
  const src = video.src;
  const tick = () => {
    if (!dialog.open || video.src !== src) return;
    checkEnd();
    video.requestVideoFrameCallback(tick);
  };
  video.requestVideoFrameCallback(tick);
}

video.addEventListener('loadedmetadata', restart);
video.addEventListener('timeupdate', checkEnd);
video.addEventListener('seeking', () => {
  if (seekingOurselves) seekingOurselves = false;
  else if (video.currentTime < from - 0.05 || video.currentTime >= to) stopAtEnd = false; // the user went elsewhere
});
video.addEventListener('error', async () => {
  if (!moment || !dialog.open || !video.getAttribute('src')) return;
  if (source === 'stream') {
    play('preview'); // the browser cannot play the original: the server converts the moment
    return;
  }
  let message = 'this video cannot be played in the browser';
  try {
    const resp = await fetch(moment.preview_url, {credentials: 'same-origin'});
    const body = resp.ok ? null : await resp.json();
    if (body && body.error) message = body.error;
  } catch { /* keep the general message */ }
  say(error, message);
});

replay.addEventListener('click', () => {
  if (moment) restart();
});

async function ask(output, button, path, body, show) {
  const mine = generation;
  button.disabled = true;
  output.classList.remove('error');
  output.textContent = 'Working\u2026';
  output.setAttribute('aria-busy', 'true');
  try {
    const result = await api(path, {method: 'POST', json: body});
    if (mine === generation) output.textContent = show(result);
  } catch (err) {
    if (mine === generation) {
      output.classList.add('error');
      output.textContent = reason(err);
    }
  } finally {
    if (mine === generation) {
      button.disabled = false;
      output.removeAttribute('aria-busy');
    }
  }
}

function momentWindow() {
  return moment.whole ? {} : {start: moment.start, end: moment.end};
}

captionButton.addEventListener('click', () => {
  if (!moment) return;
  ask(captionText, captionButton, `/api/videos/${moment.video_id}/caption`, momentWindow(),
      (r) => r.caption || '(the model gave an empty caption)');
});

askForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const question = askInput.value.trim();
  if (!moment || !question) return;
  ask(answerText, $('button', askForm), `/api/videos/${moment.video_id}/ask`, {question, ...momentWindow()},
      (r) => r.answer || '(no answer)');
});

$('#player-close').addEventListener('click', () => dialog.close());
dialog.addEventListener('close', () => {
  generation++;
  video.pause();
  video.removeAttribute('src');
  video.load(); // drop the connection to the stream
  moment = null;
  if (opener && opener.isConnected) opener.focus();
});
dialog.addEventListener('click', (event) => {
  if (event.target === dialog) dialog.close(); // a click on the backdrop
});

/** Open the player on a hit (or a whole video with `whole: true`). */
export function openPlayer(hit, {whole = false} = {}) {
  generation++;
  opener = document.activeElement;
  moment = {...hit, whole};
  title.textContent = hit.path;
  rangeText.textContent = whole ? `whole video, ${span(0, hit.end)}` : `moment ${span(hit.start, hit.end)}`;
  replay.hidden = whole;
  replay.textContent = 'Replay moment';
  captionButton.textContent = whole ? 'Caption this video' : 'Caption this moment';
  for (const out of [captionText, answerText]) {
    out.textContent = '';
    out.classList.remove('error');
    out.removeAttribute('aria-busy');
  }
  captionButton.disabled = false;
  $('button', askForm).disabled = false;
  say(error, '');
  if (!dialog.open) dialog.showModal();
  play(hit.playable ? 'stream' : 'preview');
  video.focus();
}

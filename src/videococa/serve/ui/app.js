// The web UI of `videococa serve`: a small router over two pages (search at /, the library at /#library),
// and the API key form shown when the server answers 401.

import {ApiError, onKeyNeeded, sendKey} from './api.js';
import {hideLibrary, initLibrary, refreshStats, showLibrary} from './library.js';
import {initSearch, showSearch} from './search.js';
import {$, reason, say} from './util.js';

const pages = {search: $('#search-view'), library: $('#library-view')};
let lastSearch = '/';

function route() {
  const page = location.hash === '#library' ? 'library' : 'search';
  for (const [name, node] of Object.entries(pages)) node.hidden = name !== page;
  for (const link of document.querySelectorAll('nav a[data-nav]')) {
    if (link.dataset.nav === page) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (page === 'search') {
    lastSearch = location.pathname + location.search;
    for (const link of document.querySelectorAll('a[data-nav=search]')) link.href = lastSearch; // new tabs, copies
    const params = new URLSearchParams(location.search);
    const q = params.get('q');
    document.title = q ? `${q} \u2013 videococa` : 'videococa';
    hideLibrary();
    showSearch(params, history.state);
  } else {
    document.title = 'Library \u2013 videococa';
    showLibrary();
  }
}

function navigate(url, state = null) {
  history.pushState(state, '', url);
  route();
}

document.addEventListener('click', (event) => {
  const link = event.target.closest('a[data-nav]');
  if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  const url = link.dataset.nav === 'library' ? '/#library' : lastSearch;
  if (url !== location.pathname + location.search + location.hash) navigate(url);
  $('#main').focus({preventScroll: true});
});
window.addEventListener('popstate', route);

// ------------------------------------------------------------------ the API key form
const login = $('#login');
const loginForm = $('#login-form');
const keyInput = $('#login-key');
const loginError = $('#login-error');

/** Show the key form; resolves once the server accepted the key, rejects if the form is closed. */
function askForKey(why) {
  return new Promise((resolve, reject) => {
    let accepted = false;
    say(loginError, '');
    keyInput.value = '';
    const submit = async (event) => {
      event.preventDefault();
      const button = $('button[type=submit]', loginForm);
      button.disabled = true;
      try {
        await sendKey(keyInput.value);
        accepted = true;
        login.close();
      } catch (err) {
        say(loginError, reason(err));
        keyInput.select();
      } finally {
        button.disabled = false;
      }
    };
    loginForm.addEventListener('submit', submit);
    login.addEventListener('close', () => {
      loginForm.removeEventListener('submit', submit);
      if (accepted) resolve();
      else reject(new ApiError(401, why));
    }, {once: true});
    login.showModal();
    keyInput.focus();
  });
}

onKeyNeeded(askForKey);
initSearch(navigate);
initLibrary();
route();
if (!pages.search.hidden) refreshStats(); // the header summary (the library page fetches it itself)
document.documentElement.dataset.ready = 'true';

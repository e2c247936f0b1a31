// The JSON API: every call goes through here. Errors become ApiError with the server's own `error` text;
// a 401 asks for the API key once (however many calls failed) and then retries the calls.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
  }
}

let askForKey = null; // (reason) => Promise that resolves once logged in, rejects when the user gives up
let pendingLogin = null;

/** Register the function that shows the key form (app.js). */
export function onKeyNeeded(fn) {
  askForKey = fn;
}

function login(reason) {
  if (!askForKey) return Promise.reject(new ApiError(401, reason));
  pendingLogin ??= askForKey(reason).finally(() => { pendingLogin = null; });
  return pendingLogin;
}

async function errorText(resp) {
  try {
    const body = await resp.json();
    if (body && typeof body.error === 'string') return body.error;
  } catch { /* not JSON: fall through */ }
  return `the server answered ${resp.status} ${resp.statusText}`.trim();
}

/** Send the API key for a session cookie; throws ApiError (e.g. "wrong API key"). */
export async function sendKey(key) {
  let resp;
  try {
    resp = await fetch('/api/login', {
      method: 'POST', credentials: 'same-origin',
      headers: {'Content-Type': 'application/json', Accept: 'application/json'},
      body: JSON.stringify({key}),
    });
  } catch (err) {
    throw new ApiError(0, `cannot reach the server (${err.message})`);
  }
  if (!resp.ok) throw new ApiError(resp.status, await errorText(resp));
}

/** Call the API: `json` is sent as a JSON body; the parsed JSON answer is returned. */
export async function api(path, {method = 'GET', json, signal} = {}) {
  for (let attempt = 0; ; attempt++) {
    const init = {method, signal, credentials: 'same-origin', headers: {Accept: 'application/json'}};
    if (json !== undefined) {
      init.body = JSON.stringify(json);
      init.headers['Content-Type'] = 'application/json';
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (err) {
      if (err.name === 'AbortError') throw err;
      throw new ApiError(0, `cannot reach the server (${err.message})`);
    }
    if (resp.status === 401 && attempt < 3) {
      await login(await errorText(resp));
      continue;
    }
    if (!resp.ok) throw new ApiError(resp.status, await errorText(resp));
    return resp.json();
  }
}

/** Upload one file as multipart `file` (XHR, for upload progress): onProgress(fraction). */
export async function upload(path, file, onProgress) {
  for (let attempt = 0; ; attempt++) {
    const {status, body} = await new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      const form = new FormData();
      form.append('file', file, file.name);
      xhr.open('POST', path);
      xhr.setRequestHeader('Accept', 'application/json');
      xhr.upload.addEventListener('progress', (e) => {
        if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total);
      });
      xhr.addEventListener('load', () => {
        let parsed = null;
        try { parsed = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
        resolve({status: xhr.status, body: parsed});
      });
      xhr.addEventListener('error', () => reject(new ApiError(0, 'the upload was interrupted (network error)')));
      xhr.addEventListener('abort', () => reject(new ApiError(0, 'the upload was cancelled')));
      xhr.send(form);
    });
    const message = body && typeof body.error === 'string' ? body.error : `the server answered ${status}`;
    if (status === 401 && attempt < 3) {
      await login(message);
      continue;
    }
    if (status < 200 || status >= 300) throw new ApiError(status, message);
    return body;
  }
}

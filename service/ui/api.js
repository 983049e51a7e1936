// The API client: the bearer key (sessionStorage), JSON calls, blob downloads, and an SSE reader
// over fetch() (EventSource cannot send an Authorization header).

const KEY = "reluswap.apiKey";

export function getKey() {
  return sessionStorage.getItem(KEY);
}

export function setKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function clearKey() {
  sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || null;
    this.param = err.param || null;
  }
}

// Listeners told when the key is refused (the app then asks for it again).
const unauthorizedListeners = [];
export function onUnauthorized(fn) {
  unauthorizedListeners.push(fn);
}

function headers(extra = {}) {
  const h = { ...extra };
  const key = getKey();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function check(response) {
  if (response.ok) return response;
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const error = new ApiError(response.status, body);
  if (response.status === 401) unauthorizedListeners.forEach((fn) => fn(error));
  throw error;
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

export async function getJSON(path, params) {
  const response = await fetch(path + query(params), { headers: headers({ Accept: "application/json" }) });
  return (await check(response)).json();
}

export async function postJSON(path, body, extraHeaders = {}) {
  const init = { method: "POST", headers: headers({ Accept: "application/json", ...extraHeaders }) };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return (await check(await fetch(path, init))).json();
}

export async function postForm(path, formData, extraHeaders = {}) {
  // No Content-Type: the browser writes multipart/form-data with its boundary.
  const init = { method: "POST", headers: headers({ Accept: "application/json", ...extraHeaders }), body: formData };
  return (await check(await fetch(path, init))).json();
}

export async function getBlob(path) {
  const response = await check(await fetch(path, { headers: headers() }));
  return response.blob();
}

// ---- the API's routes, in one place ----------------------------------------------------------

const enc = encodeURIComponent;

export const api = {
  activations: () => getJSON("/activations"),
  jobs: (params) => getJSON("/jobs", params),
  job: (id) => getJSON(`/jobs/${enc(id)}`),
  events: (id, params) => getJSON(`/jobs/${enc(id)}/events`, params),
  cancel: (id) => postJSON(`/jobs/${enc(id)}/cancel`),
  artifacts: (id) => getJSON(`/jobs/${enc(id)}/artifacts`),
  artifactPath: (id, name) => `/jobs/${enc(id)}/artifacts/${enc(name)}`,
  artifact: (id, name) => getBlob(`/jobs/${enc(id)}/artifacts/${enc(name)}`),
  eventsStreamPath: (id) => `/jobs/${enc(id)}/events`,
  compares: (params) => getJSON("/compare", params),
  compare: (id) => getJSON(`/compare/${enc(id)}`),
  cancelCompare: (id) => postJSON(`/compare/${enc(id)}/cancel`),
  compareArtifacts: (id) => getJSON(`/compare/${enc(id)}/artifacts`),
  compareArtifact: (id, name) => getBlob(`/compare/${enc(id)}/artifacts/${enc(name)}`),
};

// ---- server-sent events over fetch -----------------------------------------------------------

// Feed text chunks; calls onEvent({event, data, id}) for each complete frame (a blank line ends one).
// The first `pages` pages of a cursor-paged list (GET /jobs, GET /compare): {rows, hasMore}.
export async function collectPages(fetchPage, pages) {
  const rows = [];
  let after;
  let hasMore = false;
  for (let i = 0; i < pages; i++) {
    const page = await fetchPage({ limit: 20, after });
    rows.push(...page.data);
    hasMore = page.has_more;
    if (!hasMore || !page.data.length) break;
    after = page.data[page.data.length - 1].id;
  }
  return { rows, hasMore };
}

export function sseParser(onEvent) {
  let buffer = "";
  let frame = { event: "message", data: [], id: null };
  function line(text) {
    if (text === "") {
      if (frame.data.length) onEvent({ event: frame.event, data: frame.data.join("\n"), id: frame.id });
      frame = { event: "message", data: [], id: null };
      return;
    }
    if (text.startsWith(":")) return; // a comment (keep-alive)
    const colon = text.indexOf(":");
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") frame.event = value;
    else if (field === "data") frame.data.push(value);
    else if (field === "id") frame.id = value;
    // "retry" and unknown fields: ignored
  }
  return function feed(chunk) {
    buffer += chunk;
    let nl;
    while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const text = buffer.slice(0, nl);
      buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
      line(text);
    }
  };
}

// Read the job's event stream until it ends or `signal` aborts. Resolves with the last event id
// seen, so a caller can resume with ?after=<id>.
export async function streamEvents(path, { after, signal, onEvent }) {
  const response = await check(await fetch(path + query({ after }), {
    headers: headers({ Accept: "text/event-stream" }),
    signal,
  }));
  if (!response.body) throw new Error("this browser cannot stream responses");
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let last = after;
  const feed = sseParser((e) => {
    if (e.id) last = e.id;
    let data = e.data;
    try {
      data = JSON.parse(e.data);
    } catch {
      // leave it as text
    }
    onEvent(e.event, data);
  });
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    feed(value);
  }
  return last;
}

// aise dashboard: projects, agents and tasks of aise-server, live.
// Plain JS, no framework, no build step. Every value from the server is put
// on the page with textContent (never innerHTML), so nothing it says can
// run as code; the Content-Security-Policy allows scripts from 'self' only.
'use strict';

// ===================================================================
// The protocol-specific part: login, tokens and the WebSocket. Change
// this block, not the rest, when those routes change (server/README.md,
// "Dashboard", lists what is used).
// ===================================================================
const proto = {
  loginPath: '/api/v1/auth/login',     // POST {username, password}
  refreshPath: '/api/v1/auth/refresh', // POST {refresh_token}
  logoutPath: '/api/v1/auth/logout',   // POST {refresh_token}
  mePath: '/api/v1/me',                // GET → {username, ...}
  // POST login/refresh answer {access_token, refresh_token, ...}.
  tokensFrom(body) {
    return { access: body.access_token, refresh: body.refresh_token || null };
  },
  // The WebSocket URL: same origin; the token as ?access_token= (browsers
  // cannot set headers on a WebSocket).
  wsUrl(token) {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const q = token ? '?access_token=' + encodeURIComponent(token) : '';
    return scheme + '//' + location.host + '/api/v1/ws' + q;
  },
  wsUnauthorized: 4001,                // close code for a refused token
  // Messages to send once the socket is open.
  subscribe(project, after) {
    return [{ type: 'subscribe', project, after }, { type: 'subscribe', agents: true }];
  },
  // One frame → the events in it. A frame holds one or more JSON messages,
  // one per line; {"type": "event", "event": E} carries an event as the
  // events route returns it. Errors are reported through onError.
  eventsIn(frame, onError) {
    const out = [];
    for (const line of String(frame).split('\n')) {
      if (!line.trim()) continue;
      let m;
      try { m = JSON.parse(line); } catch { continue; }
      if (m.type === 'event' && m.event) out.push(m.event);
      else if (m.type === 'error' && m.error) onError(m.error);
    }
    return out;
  },
};
// ===================================================================

const $ = (id) => document.getElementById(id);

const state = {
  access: sessionStorage.getItem('aise.access'),
  refresh: sessionStorage.getItem('aise.refresh'),
  project: null,       // selected project id
  lastSeq: 0,          // last event sequence applied for `project`
  tasks: new Map(),    // id → task
  events: new Map(),   // task id → [event] (what this page has seen)
  agents: [],
  selected: null,      // task id in the detail pane
  ws: null,
  pollTimer: null,
  wsRetryTimer: null,
  generation: 0,       // bumps on every project switch; stale work checks it
  pending: new Set(),  // task ids to fetch again
  flushTimer: null,
  agentsTimer: null,
};

// ---- messages ----

function showError(err) {
  const m = $('message');
  m.className = '';
  m.textContent = err.code ? err.code + ': ' + err.message : String(err.message || err);
  m.hidden = false;
}
function showInfo(text) {
  const m = $('message');
  m.className = 'info';
  m.textContent = text;
  m.hidden = false;
}
function clearMessage() { $('message').hidden = true; }

// ---- HTTP ----

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function setTokens(t) {
  state.access = t ? t.access : null;
  state.refresh = t ? t.refresh : null;
  for (const [k, v] of [['aise.access', state.access], ['aise.refresh', state.refresh]]) {
    if (v) sessionStorage.setItem(k, v); else sessionStorage.removeItem(k);
  }
}

async function rawCall(method, path, body) {
  const headers = {};
  if (state.access) headers.Authorization = 'Bearer ' + state.access;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  return fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  });
}

async function tryRefresh() {
  if (!state.refresh) return false;
  const res = await fetch(proto.refreshPath, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ refresh_token: state.refresh }),
  });
  if (!res.ok) { setTokens(null); return false; }
  setTokens(proto.tokensFrom(await res.json()));
  return true;
}

// A JSON call; throws ApiError with the server's {"error": {code, message}}.
// A 401 tries the refresh token once, then shows the login form.
async function api(method, path, body) {
  let res = await rawCall(method, path, body);
  if (res.status === 401 && await tryRefresh()) res = await rawCall(method, path, body);
  if (res.status === 401) {
    showLogin();
    throw new ApiError(401, 'unauthorized', 'please log in');
  }
  let data = null;
  const text = await res.text();
  if (text) { try { data = JSON.parse(text); } catch { data = null; } }
  if (!res.ok) {
    const e = data && data.error ? data.error : { code: 'http_' + res.status, message: res.statusText };
    throw new ApiError(res.status, e.code, e.message);
  }
  return data;
}

// Every item of a paginated listing.
async function listAll(path, max = 10000) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const page = await api('GET', path + sep + 'limit=1000' +
      (cursor === null ? '' : '&cursor=' + encodeURIComponent(cursor)));
    items.push(...page.items);
    cursor = page.next;
  } while (cursor !== null && cursor !== undefined && items.length < max);
  return items;
}

const enc = encodeURIComponent;

// ---- small DOM helpers (text only) ----

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function row(cells) {
  const tr = document.createElement('tr');
  for (const c of cells) {
    const td = document.createElement('td');
    if (c instanceof Node) td.append(c); else td.textContent = c === null || c === undefined ? '' : String(c);
    tr.append(td);
  }
  return tr;
}
function statusBadge(s) {
  return el('span', s, 'status' + (/^[a-z_]+$/.test(s || '') ? ' s-' + s : ''));
}
function pretty(v) { return v === null || v === undefined ? '' : JSON.stringify(v, null, 2); }
function time(t) {
  if (!t) return '';
  const d = new Date(t);
  return isNaN(d) ? String(t) : d.toLocaleTimeString();
}

// ---- login ----

function showLogin() {
  stopLive();
  $('app').hidden = true;
  $('logout').hidden = true;
  $('user').textContent = '';
  $('login').hidden = false;
}

async function onLogin(ev) {
  ev.preventDefault();
  clearMessage();
  const res = await fetch(proto.loginPath, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username: $('login-user').value, password: $('login-password').value }),
  });
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    showError(data && data.error ? data.error : { message: 'login failed (' + res.status + ')' });
    return;
  }
  setTokens(proto.tokensFrom(data));
  $('login-password').value = '';
  $('login').hidden = true;
  start();
}

async function onLogout() {
  if (state.refresh) {
    await rawCall('POST', proto.logoutPath, { refresh_token: state.refresh }).catch(() => {});
  }
  setTokens(null);
  showLogin();
}

// ---- projects ----

async function start() {
  let projects;
  try {
    projects = await listAll('/api/v1/projects');
  } catch (e) {
    if (e.status !== 401) showError(e);
    return;
  }
  $('login').hidden = true;
  $('app').hidden = false;
  if (state.access) {
    $('logout').hidden = false;
    api('GET', proto.mePath).then((me) => { $('user').textContent = me.username || ''; }).catch(() => {});
  }
  const ul = $('projects');
  ul.replaceChildren();
  for (const p of projects) {
    const li = el('li', p.name + (p.archived ? ' (archived)' : ''));
    li.title = p.id;
    li.dataset.id = p.id;
    li.addEventListener('click', () => selectProject(p));
    ul.append(li);
  }
  loadAgents();
  const wanted = location.hash.slice(1);
  const first = projects.find((p) => p.id === wanted) || projects[0];
  if (first) selectProject(first);
}

async function selectProject(p) {
  stopLive();
  const gen = ++state.generation;
  state.project = p.id;
  state.tasks.clear();
  state.events.clear();
  state.selected = null;
  state.lastSeq = 0;
  history.replaceState(null, '', '#' + p.id);
  for (const li of $('projects').children) li.classList.toggle('selected', li.dataset.id === p.id);
  $('project').hidden = false;
  $('detail').hidden = true;
  $('project-title').textContent = p.name;
  $('project-description').textContent = p.description || '';
  try {
    // The event log first (what the page has seen of each task, and where
    // live updates continue), then the tasks: an event between the two is
    // applied again, which only fetches its task once more.
    await catchUp(gen);
    const tasks = await listAll('/api/v1/projects/' + enc(p.id) + '/tasks');
    if (gen !== state.generation) return;
    for (const t of tasks) state.tasks.set(t.id, t);
    renderTasks();
    startLive(gen);
  } catch (e) {
    if (e.status !== 401) showError(e);
  }
}

// ---- tasks ----

function renderTasks() {
  const tbody = $('tasks').tBodies[0];
  const tasks = [...state.tasks.values()].sort((a, b) =>
    (b.created_at || '').localeCompare(a.created_at || '') || a.id.localeCompare(b.id));
  tbody.replaceChildren(...tasks.map((t) => {
    const tr = row([t.id, t.kind, statusBadge(t.status || t.state), t.attempt, t.agent, time(t.updated_at)]);
    tr.dataset.id = t.id;
    if (t.id === state.selected) tr.classList.add('selected');
    tr.addEventListener('click', () => selectTask(t.id));
    return tr;
  }));
}

// Fetches the tasks events named, at most every 100 ms.
function touchTask(id) {
  state.pending.add(id);
  if (state.flushTimer) return;
  state.flushTimer = setTimeout(flushTasks, 100);
}

async function flushTasks() {
  state.flushTimer = null;
  const gen = state.generation;
  const ids = [...state.pending];
  state.pending.clear();
  const fetched = await Promise.all(ids.map((id) =>
    api('GET', '/api/v1/tasks/' + enc(id)).catch(() => null)));
  if (gen !== state.generation) return;
  for (const t of fetched) {
    if (!t || t.project !== state.project) continue;
    const old = state.tasks.get(t.id);
    if (!old || (t.version || 0) >= (old.version || 0)) state.tasks.set(t.id, t);
  }
  renderTasks();
  if (state.selected && ids.includes(state.selected)) renderDetail();
}

// ---- the detail pane ----

function selectTask(id) {
  state.selected = id;
  for (const tr of $('tasks').tBodies[0].rows) tr.classList.toggle('selected', tr.dataset.id === id);
  $('detail').hidden = false;
  renderDetail();
}

async function renderDetail() {
  const id = state.selected;
  const gen = state.generation;
  if (!id) return;
  let t, attempts, artifacts;
  try {
    [t, attempts, artifacts] = await Promise.all([
      api('GET', '/api/v1/tasks/' + enc(id)),
      api('GET', '/api/v1/tasks/' + enc(id) + '/attempts'),
      listAll('/api/v1/projects/' + enc(state.project) + '/artifacts').catch(() => []),
    ]);
  } catch (e) {
    if (e.status !== 401) showError(e);
    return;
  }
  if (gen !== state.generation || id !== state.selected) return;
  const status = t.status || t.state;
  $('d-id').textContent = t.id;
  const badge = $('d-status');
  badge.textContent = status;
  badge.className = statusBadge(status).className;
  const dl = $('d-fields');
  dl.replaceChildren();
  for (const [k, v] of [['kind', t.kind], ['capability', t.capability], ['priority', t.priority],
    ['attempt', t.attempt + ' of ' + t.max_attempts], ['agent', t.agent],
    ['depends on', (t.depends_on || []).join(', ')], ['parent', t.parent],
    ['description', t.description], ['created', t.created_at], ['updated', t.updated_at]]) {
    if (v === '' || v === null || v === undefined) continue;
    dl.append(el('dt', k), el('dd', v));
  }
  $('d-payload').textContent = pretty(t.payload);
  $('d-result').textContent = pretty(t.result);
  $('d-error').textContent = pretty(t.error);
  $('d-attempts').tBodies[0].replaceChildren(...attempts.items.map((a) =>
    row([a.number, a.agent, time(a.started_at), time(a.finished_at), a.outcome,
      a.error ? a.error.message : ''])));
  $('d-events').tBodies[0].replaceChildren(...(state.events.get(id) || []).map((e) =>
    row([e.sequence, time(e.at), e.type, e.data === null ? '' : JSON.stringify(e.data)])));
  const ul = $('d-artifacts');
  ul.replaceChildren(...artifacts.filter((a) => a.task === id).map(artifactLink));
  if (!ul.children.length) ul.append(el('li', 'none'));
  const terminal = ['succeeded', 'failed', 'cancelled'].includes(status);
  $('b-cancel').disabled = terminal;
  $('b-retry').disabled = !(status === 'failed' || status === 'cancelled');
  $('b-approve').disabled = status !== 'awaiting_approval';
  $('b-reject').disabled = status !== 'awaiting_approval';
}

function artifactLink(a) {
  const li = document.createElement('li');
  const link = el('a', a.name + ' (v' + a.version + ', ' + a.size + ' bytes)');
  const url = '/api/v1/artifacts/' + enc(a.id) + '/content';
  link.href = url;
  link.download = a.name;
  if (state.access) {
    // A link cannot carry the bearer token: fetch the bytes, then save them.
    link.addEventListener('click', async (ev) => {
      ev.preventDefault();
      const res = await rawCall('GET', url);
      if (!res.ok) { showError({ message: 'download failed (' + res.status + ')' }); return; }
      const blobUrl = URL.createObjectURL(await res.blob());
      const save = el('a');
      save.href = blobUrl;
      save.download = a.name;
      save.click();
      setTimeout(() => URL.revokeObjectURL(blobUrl), 10000);
    });
  }
  li.append(link);
  return li;
}

async function act(what) {
  const id = state.selected;
  if (!id) return;
  clearMessage();
  let body;
  if (what === 'reject' || what === 'cancel') {
    const reason = $('d-reason').value.trim();
    body = reason ? { reason } : {};
  }
  try {
    const t = await api('POST', '/api/v1/tasks/' + enc(id) + '/' + what, body);
    $('d-reason').value = '';
    state.tasks.set(t.id, t);
    renderTasks();
    if (what === 'retry') showInfo('retried as ' + t.id);
    selectTask(what === 'retry' ? t.id : id);
  } catch (e) {
    if (e.status !== 401) showError(e);
  }
}

async function onNewTask(ev) {
  ev.preventDefault();
  clearMessage();
  let payload;
  try {
    payload = JSON.parse($('nt-payload').value || '{}');
  } catch (e) {
    showError({ code: 'bad_json', message: 'payload: ' + e.message });
    return;
  }
  const spec = { kind: $('nt-kind').value, priority: Number($('nt-priority').value || 0), payload };
  if ($('nt-capability').value) spec.capability = $('nt-capability').value;
  if ($('nt-approval').checked) spec.requires_approval = true;
  try {
    const t = await api('POST', '/api/v1/projects/' + enc(state.project) + '/tasks', spec);
    state.tasks.set(t.id, t);
    renderTasks();
    selectTask(t.id);
  } catch (e) {
    if (e.status !== 401) showError(e);
  }
}

// ---- agents ----

function loadAgents() {
  clearTimeout(state.agentsTimer);
  state.agentsTimer = setTimeout(async () => {
    try {
      const data = await api('GET', '/api/v1/agents');
      $('agents').tBodies[0].replaceChildren(...data.items.map((a) =>
        row([a.name, a.kind, statusBadge(a.status), time(a.last_heartbeat)])));
    } catch (e) {
      if (e.status !== 401) showError(e);
    }
    // Heartbeats make no events: refresh now and then anyway.
    state.agentsTimer = setTimeout(loadAgents, 10000);
  }, 100);
}

// ---- live updates: the WebSocket, or polling the event log ----

function apply(e) {
  if (e.project && e.project !== state.project) {
    if (String(e.type).startsWith('agent.')) loadAgents();
    return;
  }
  if (typeof e.sequence === 'number') {
    if (e.sequence <= state.lastSeq) return;  // seen (a replay after a reconnect)
    state.lastSeq = e.sequence;
  }
  const type = String(e.type || '');
  if (type.startsWith('task.') && e.subject) {
    const list = state.events.get(e.subject) || [];
    list.push(e);
    if (list.length > 500) list.shift();
    state.events.set(e.subject, list);
    touchTask(e.subject);
  } else if (type.startsWith('agent.')) {
    loadAgents();
  }
}

// Reads the event log after lastSeq to its end.
async function catchUp(gen) {
  for (;;) {
    const page = await api('GET', '/api/v1/projects/' + enc(state.project) +
      '/events?limit=1000&after=' + state.lastSeq);
    if (gen !== state.generation) return;
    for (const e of page.items) apply(e);
    if (page.next === null || page.next === undefined || !page.items.length) return;
  }
}

function setLive(mode) {
  const b = $('live');
  b.textContent = mode;
  b.className = 'badge ' + mode;
}

function startLive(gen) {
  if (gen !== state.generation) return;
  let ws;
  try {
    ws = new WebSocket(proto.wsUrl(state.access));
  } catch {
    startPolling(gen);
    return;
  }
  state.ws = ws;
  let opened = false;
  ws.onopen = () => {
    opened = true;
    stopPolling();
    for (const m of proto.subscribe(state.project, state.lastSeq)) ws.send(JSON.stringify(m));
    setLive('websocket');
  };
  ws.onmessage = (m) => {
    if (gen !== state.generation) return;
    for (const e of proto.eventsIn(m.data, showError)) apply(e);
  };
  ws.onclose = async (ev) => {
    if (state.ws !== ws) return;  // replaced on purpose
    state.ws = null;
    if (gen !== state.generation) return;
    // No WebSocket here (or it dropped): poll, and try the socket again later.
    startPolling(gen);
    // 4001: the token was refused; a fresh one may do.
    if (ev.code === proto.wsUnauthorized && !(await tryRefresh().catch(() => false))) return;
    state.wsRetryTimer = setTimeout(() => startLive(gen), opened ? 1000 : 15000);
  };
}

function startPolling(gen) {
  if (state.pollTimer || gen !== state.generation) return;
  setLive('polling');
  const tick = async () => {
    try {
      await catchUp(gen);
    } catch (e) {
      if (e.status === 401) return;
    }
    if (gen === state.generation && state.pollTimer) state.pollTimer = setTimeout(tick, 1000);
  };
  state.pollTimer = setTimeout(tick, 1000);
}

function stopPolling() {
  clearTimeout(state.pollTimer);
  state.pollTimer = null;
}

function stopLive() {
  stopPolling();
  clearTimeout(state.wsRetryTimer);
  if (state.ws) {
    const ws = state.ws;
    state.ws = null;
    ws.close();
  }
  setLive('offline');
}

// ---- wiring ----

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', onLogin);
  $('logout').addEventListener('click', onLogout);
  $('new-task-form').addEventListener('submit', onNewTask);
  for (const what of ['cancel', 'retry', 'approve', 'reject']) {
    $('b-' + what).addEventListener('click', () => act(what));
  }
  start();
});

// LNM reading station: the browser app (no framework, nothing fetched from elsewhere).
// The server sends a snapshot of every tile, then deltas (Server-Sent Events); the focus
// view asks for the whole case so far and for single stimuli. Read-only but for messages.
"use strict";

const S = { me: null, tiles: {}, focus: null, serverOffset: 0, caseView: null, stim: null };
const SIDES = ["L", "R"];
const SIDE_WORD = { L: "Left", R: "Right" };
const QUIET_S = 5;
const STEPS = ["L1", "V1", "S1", "R1", "R2", "S2", "V2", "L2"];

function $(id) { return document.getElementById(id); }
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const k of kids) if (k !== null && k !== undefined && k !== false) e.append(k);
  return e;
}
function num(x, d) { return (x === null || x === undefined || Number.isNaN(x)) ? "-" : Number(x).toFixed(d); }
function hms(t) {
  if (t === null || t === undefined) return "-";
  t = Math.max(0, Math.floor(t));
  const h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), s = t % 60;
  return (h ? h + ":" + String(m).padStart(2, "0") : String(m)) + ":" + String(s).padStart(2, "0");
}
function clock(wall) { return wall ? new Date(wall * 1000).toLocaleTimeString() : "-"; }
function now() { return Date.now() / 1000 + S.serverOffset; }

async function api(path, opts) {
  opts = opts || {};
  opts.headers = Object.assign({ "X-CSRF-Token": S.me ? S.me.csrf : "" }, opts.headers || {});
  opts.credentials = "same-origin";
  const r = await fetch(path, opts);
  if (r.status === 401) { location.href = "/login"; throw new Error("logged out"); }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

// ------------------------------------------------------------------ live stream

function connect() {
  const es = new EventSource("/api/stream");
  es.addEventListener("snapshot", (e) => {
    const snap = JSON.parse(e.data);
    S.serverOffset = snap.now - Date.now() / 1000;
    S.tiles = snap.tiles;
    setBroker(snap.broker);
    renderAll();
  });
  es.addEventListener("beat", (e) => {
    const b = JSON.parse(e.data);
    S.serverOffset = b.now - Date.now() / 1000;
    setBroker(b.broker);
    for (const id of Object.keys(S.tiles)) renderQuiet(id);
  });
  es.onmessage = (e) => { for (const d of JSON.parse(e.data)) apply(d); };
  es.onerror = () => { $("broker").textContent = "station connection lost: reconnecting"; $("broker").className = "pill bad"; };
}

function setBroker(b) {
  const p = $("broker");
  if (!b) { p.textContent = "no broker"; p.className = "pill bad"; return; }
  p.textContent = b.connected ? "broker connected" : ("broker unreachable" + (b.refused ? ": " + b.refused : ""));
  p.className = "pill " + (b.connected ? "ok" : "bad");
}

function apply(d) {
  const t = S.tiles[d.or];
  if (!t) return;
  t.last_seen = now();
  switch (d.kind) {
    case "case":
      t.case_id = d.data.case_id; t.events = []; t.waveforms = {}; t.trend = { L: emptyTrend(), R: emptyTrend() };
      t.messages = null;
      if (S.focus === d.or) loadCase(d.or);
      break;
    case "status": t.status = d.data; break;
    case "state": t.state = d.data; break;
    case "alarm": t.alarms = d.data; break;
    case "health": t.health = d.data; break;
    case "messages": t.messages = d.data; break;
    case "event":
      // live and backfilled events may cross: kept in the journal's sequence order
      t.events.push(d.data); t.events.sort((a, b) => a.seq - b.seq); if (t.events.length > 50) t.events.shift();
      if (S.focus === d.or && S.caseView) {
        const evs = S.caseView.events;
        if (!evs.some((e) => e.seq === d.data.seq)) { evs.push(d.data); evs.sort((a, b) => a.seq - b.seq); }
        renderEvents(); drawTrend();
      }
      break;
    case "measurement":
      if (d.data.source === "APS") {
        const tr = t.trend[d.data.side];
        for (const k of Object.keys(tr)) { tr[k].push(d.data[k]); if (tr[k].length > 600) tr[k].shift(); }
      }
      if (S.focus === d.or && S.caseView) { S.caseView.measurements.push(d.data); addStimulusRow(d.data); drawTrend(); }
      break;
    case "waveform": t.waveforms[d.data.side] = d.data; break;
    case "emg":
      if (S.focus === d.or && S.caseView) { S.caseView.emg.push(d.data); if (S.caseView.emg.length > 100) S.caseView.emg.shift(); drawEmg(); }
      return;
    case "backfilled":
      if (S.focus === d.or && d.data.last) loadCase(d.or);
      return;
    default: return;
  }
  renderTile(d.or);
  if (S.focus === d.or) renderFocusLive();
}

function emptyTrend() { return { index: [], t_s: [], amplitude_pct: [], latency_pct: [], amplitude_uV: [], latency_ms: [] }; }

// ------------------------------------------------------------------ tiles

function renderAll() {
  const main = $("tiles");
  for (const id of S.me.ors) {
    if (!main.querySelector(`[data-or="${id}"]`)) main.append(makeTile(id));
    renderTile(id);
  }
}

function makeTile(id) {
  const tile = el("article", { class: "tile", "data-or": id, tabIndex: 0, title: "Open " + id });
  tile.append(
    el("div", { class: "tile-head" }, el("h2", { text: id }), el("span", { class: "pill status" }), el("span", { class: "quiet" })),
    el("div", { class: "case" }),
    el("ul", { class: "alarms" }),
    el("div", { class: "sides" }, ...SIDES.map((s) => el("div", { class: "side", "data-side": s },
      el("div", { class: "side-head", text: SIDE_WORD[s] }),
      el("canvas", { class: "wave", width: 220, height: 80 }),
      el("div", { class: "values" }),
      el("canvas", { class: "trend", width: 220, height: 50 }),
      el("div", { class: "steps" })))),
    el("div", { class: "health" }),
    el("div", { class: "msg-state" }));
  tile.addEventListener("click", () => openFocus(id));
  tile.addEventListener("keydown", (e) => { if (e.key === "Enter") openFocus(id); });
  return tile;
}

function renderQuiet(id) {
  const tile = document.querySelector(`[data-or="${id}"]`);
  const t = S.tiles[id];
  if (!tile || !t) return;
  const q = tile.querySelector(".quiet");
  const age = t.last_seen ? now() - t.last_seen : null;
  if (age === null) { q.textContent = "no data yet"; tile.classList.add("stale"); }
  else if (age > QUIET_S) { q.textContent = "no data since " + clock(t.last_seen) + " (" + Math.round(age) + " s)"; tile.classList.add("stale"); }
  else { q.textContent = ""; tile.classList.remove("stale"); }
}

function alarmItems(alarms) {
  const items = [];
  for (const a of (alarms && alarms.active) || []) {
    const ack = a.acknowledged ? "acknowledged" + (a.acknowledged_by ? " by " + a.acknowledged_by : "") : "NOT acknowledged";
    const li = el("li", { class: "alarm " + a.priority + (a.acknowledged ? " acked" : ""), "data-alarm-id": a.id },
      el("strong", { text: a.title || a.name || a.kind }), " ",
      el("span", { class: "where", text: [a.side ? SIDE_WORD[a.side] : "", a.site || ""].join(" ").trim() }), " ",
      el("span", { class: "ack", text: ack + (a.latched ? ", condition ended" : "") }));
    items.push(li);
  }
  return items;
}

function stepsLine(state, side) {
  const done = ((state && state.steps) || {})[side] || {};
  return STEPS.map((s) => {
    const v = done[s];
    const cls = v ? (v.response === false || v.finding === "palsy" ? "step bad" : "step done") : "step";
    return el("span", { class: cls, text: s, title: v ? JSON.stringify(v) : s + " not done" });
  });
}

function renderTile(id) {
  const tile = document.querySelector(`[data-or="${id}"]`);
  const t = S.tiles[id];
  if (!tile || !t) return;
  const st = t.state || {};
  const online = t.status && t.status.status === "online";
  const pill = tile.querySelector(".status");
  pill.textContent = t.status ? (online ? "online" : "OFFLINE" + (t.status.reason ? ": " + t.status.reason : "")) : "unknown";
  pill.className = "pill status " + (online ? "ok" : "bad");
  const c = st.case;
  tile.querySelector(".case").textContent = c ? `Patient ${c.patient_id} · ${c.procedure || "procedure not given"} · case time ${hms(c.t_s)}`
    : (t.case_id ? "case " + t.case_id : "no case open");
  tile.querySelector(".alarms").replaceChildren(...alarmItems(t.alarms));
  const top = (t.alarms && t.alarms.active || [])[0];
  tile.classList.toggle("alarm-high", !!top && top.priority === "high" && !top.acknowledged);
  for (const s of SIDES) {
    const box = tile.querySelector(`.side[data-side="${s}"]`);
    const last = (st.last || {})[s];
    const aps = (st.aps || {})[s] || {};
    const vals = box.querySelector(".values");
    vals.replaceChildren(
      el("span", { class: "amp", text: last ? num(last.amplitude_uV, 0) + " uV" : "- uV" }), " ",
      el("span", { class: "pct", text: aps.amplitude_pct != null ? num(aps.amplitude_pct, 0) + " %" : "" }), " · ",
      el("span", { class: "lat", text: last ? num(last.latency_ms, 2) + " ms" : "- ms" }), " ",
      el("span", { class: "pct", text: aps.latency_pct != null ? num(aps.latency_pct, 0) + " %" : "" }),
      el("div", { class: "site", text: last ? `${last.source} ${last.site}` + (last.response === false ? " · no response" : "") : "" }));
    drawWave(box.querySelector(".wave"), t.waveforms[s], s);
    drawSpark(box.querySelector(".trend"), t.trend[s]);
    box.querySelector(".steps").replaceChildren(...stepsLine(st, s));
  }
  const board = st.board || {}, storage = st.storage || {}, h = t.health || {};
  const pills = [];
  if (t.state) {
    pills.push(el("span", { class: "pill " + (board.connected ? "ok" : "bad"), text: "board " + (board.connected ? "linked" : "NOT linked") }),
      el("span", { class: "pill " + (storage.ok === false ? "bad" : "ok"), text: "record " + (storage.ok === false ? "PROBLEM" : "ok") }),
      el("span", { class: "pill " + (t.gap ? "warn" : "ok"), text: t.gap ? "events catching up" : "events complete" }));
    if (h.dropped && Object.keys(h.dropped).length) pills.push(el("span", { class: "pill warn", text: "some traces dropped" }));
    if (h.notice) pills.push(el("span", { class: "pill warn", text: "OR reports a slow link" }));
  }
  tile.querySelector(".health").replaceChildren(...pills.flatMap((p) => [p, " "]));
  const msgs = (t.messages && t.messages.messages) || [];
  const open = msgs.filter((m) => !m.acknowledged).length;
  tile.querySelector(".msg-state").textContent = msgs.length ? `${msgs.length} message(s), ${open} not yet acknowledged` : "";
  renderQuiet(id);
}

function drawWave(cv, w, side) {
  const g = cv.getContext("2d");
  g.clearRect(0, 0, cv.width, cv.height);
  if (!w) return;
  const ch = w.channels["EMG " + side] || Object.values(w.channels)[0];
  if (!ch || !ch.length) return;
  const peak = Math.max(50, ...ch.map(Math.abs));
  g.strokeStyle = "#8ab4f8"; g.beginPath();
  ch.forEach((v, i) => { const x = i / (ch.length - 1) * cv.width, y = cv.height / 2 - v / peak * cv.height / 2.2; i ? g.lineTo(x, y) : g.moveTo(x, y); });
  g.stroke();
}

function drawSpark(cv, tr) {
  const g = cv.getContext("2d");
  g.clearRect(0, 0, cv.width, cv.height);
  const ys = tr.amplitude_pct;
  g.strokeStyle = "#555"; g.beginPath(); const y50 = cv.height - 50 / 150 * cv.height; g.moveTo(0, y50); g.lineTo(cv.width, y50); g.stroke();
  if (!ys.length) return;
  g.strokeStyle = "#7bd88f"; g.beginPath();
  ys.forEach((v, i) => { if (v == null) return; const x = i / Math.max(1, ys.length - 1) * cv.width, y = cv.height - Math.min(150, v) / 150 * cv.height; i ? g.lineTo(x, y) : g.moveTo(x, y); });
  g.stroke();
}

// ------------------------------------------------------------------ focus view

function openFocus(id) {
  S.focus = id; S.stim = null;
  $("tiles").hidden = true; $("focus").hidden = false; $("back").hidden = false;
  $("f-title").textContent = id;
  $("f-stim-title").textContent = "(click a point on the trend or a row below)";
  $("f-stim-table").replaceChildren();
  loadCase(id);
}

function closeFocus() {
  S.focus = null; S.caseView = null;
  $("tiles").hidden = false; $("focus").hidden = true; $("back").hidden = true;
}

async function loadCase(id) {
  try {
    const cv = await api(`/api/or/${id}/case`);
    if (S.focus !== id) return;
    S.caseView = cv;
    renderFocusLive(); renderEvents(); drawTrend(); drawEmg();
    const body = $("f-stimuli").tBodies[0];
    body.replaceChildren();
    for (const m of cv.measurements.slice(-400)) addStimulusRow(m);
  } catch (e) { $("f-case").textContent = "could not load the case: " + e.message; }
}

function renderFocusLive() {
  const t = S.tiles[S.focus];
  if (!t) return;
  const st = t.state || {}, c = st.case;
  $("f-case").textContent = c ? `Patient ${c.patient_id} · ${c.procedure || ""} · planned ${(c.planned_sides || []).join(", ")} · case time ${hms(c.t_s)}` : "no case open";
  const online = t.status && t.status.status === "online";
  $("f-status").textContent = online ? "online" : "OFFLINE"; $("f-status").className = "pill " + (online ? "ok" : "bad");
  $("f-alarms").replaceChildren(...alarmItems(t.alarms));
  $("f-steps").replaceChildren(...SIDES.map((s) => el("div", { class: "steps" }, el("b", { text: SIDE_WORD[s] + " " }), ...stepsLine(st, s))));
  const msgs = (t.messages && t.messages.messages) || [];
  $("f-messages").replaceChildren(...msgs.slice().reverse().map((m) => el("li", { class: m.acknowledged ? "acked" : "open", "data-message-id": m.id },
    el("span", { text: `${m.from}: ${m.text}` }), " ",
    el("em", { text: m.acknowledged ? `acknowledged by ${m.acknowledged_by || "the OR"}` : "shown at the OR, not yet acknowledged" }))));
}

function renderEvents() {
  const cv = S.caseView;
  if (!cv) return;
  const list = $("f-events");
  const evs = cv.events.slice().sort((a, b) => b.seq - a.seq);
  list.replaceChildren(...evs.map((e) => el("li", { class: "ev " + (e.category || "") + " " + (e.priority || ""), "data-seq": e.seq },
    el("span", { class: "t", text: hms(e.t_s) }), " ", el("span", { text: e.text }))));
  const missing = (cv.missing || []).length;
  $("f-gap").textContent = missing ? "(some events still on their way)" : "";
}

function addStimulusRow(m) {
  const body = $("f-stimuli").tBodies[0];
  const tr = el("tr", { "data-index": m.index, class: m.response === false ? "noresp" : "" },
    el("td", { text: m.index }), el("td", { text: hms(m.t_s) }), el("td", { text: `${m.source} ${m.site} ${m.side}` }),
    el("td", { text: num(m.amplitude_uV, 0) }), el("td", { text: num(m.latency_ms, 2) }), el("td", { text: num(m.amplitude_pct, 0) }));
  tr.addEventListener("click", () => explore(m.index));
  body.prepend(tr);
  while (body.rows.length > 400) body.deleteRow(body.rows.length - 1);
}

function drawTrend() {
  const cv = S.caseView, canvas = $("f-trend");
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  if (!cv) return;
  const pts = cv.measurements.filter((m) => m.source === "APS" && m.amplitude_pct != null);
  const evs = cv.events.filter((e) => e.category === "rule" || (e.kind === "alarm" && (e.detail || {}).transition === "raised"));
  const ts = pts.map((m) => m.t_s).concat(evs.map((e) => e.t_s));
  const t0 = ts.length ? Math.min(...ts) : 0, t1 = ts.length ? Math.max(...ts, t0 + 1) : 1;
  const X = (t) => 40 + (t - t0) / (t1 - t0) * (canvas.width - 50), Y = (v) => canvas.height - 20 - Math.min(160, v) / 160 * (canvas.height - 30);
  g.strokeStyle = "#444"; g.fillStyle = "#aaa"; g.font = "11px sans-serif";
  for (const v of [50, 100, 150]) { g.beginPath(); g.moveTo(40, Y(v)); g.lineTo(canvas.width, Y(v)); g.stroke(); g.fillText(v + " %", 2, Y(v) + 4); }
  for (const e of evs) {
    g.strokeStyle = e.priority === "high" ? "#ff5c5c" : "#e0b000"; g.beginPath(); g.moveTo(X(e.t_s), 10); g.lineTo(X(e.t_s), canvas.height - 20); g.stroke();
  }
  const colors = { L: ["#7bd88f", "#3d8c4f"], R: ["#8ab4f8", "#4a6fb0"] };
  S.trendPts = [];
  for (const s of SIDES) {
    const ps = pts.filter((m) => m.side === s);
    for (const [k, ci] of [["amplitude_pct", 0], ["latency_pct", 1]]) {
      g.strokeStyle = colors[s][ci]; g.beginPath();
      ps.forEach((m, i) => { if (m[k] == null) return; const x = X(m.t_s), y = Y(m[k]); i ? g.lineTo(x, y) : g.moveTo(x, y); });
      g.stroke();
    }
    for (const m of ps) S.trendPts.push([X(m.t_s), Y(m.amplitude_pct), m.index]);
  }
  g.fillStyle = "#ccc"; g.fillText("amplitude (bright) and latency (dark), left green, right blue; lines: events", 44, canvas.height - 4);
}

function drawEmg() {
  const cv = S.caseView, canvas = $("f-emg");
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  if (!cv || !cv.emg.length) return;
  const chunks = cv.emg.slice(-50);
  ["EMG L", "EMG R"].forEach((name, row) => {
    const mins = [], maxs = [];
    for (const c of chunks) { const ch = c.channels[name]; if (ch) { mins.push(...ch.min); maxs.push(...ch.max); } }
    if (!maxs.length) return;
    const peak = Math.max(20, ...maxs.map(Math.abs), ...mins.map(Math.abs));
    const mid = canvas.height / 4 * (row * 2 + 1), half = canvas.height / 4.4;
    g.strokeStyle = row ? "#8ab4f8" : "#7bd88f"; g.beginPath();
    maxs.forEach((v, i) => { const x = i / maxs.length * canvas.width; g.moveTo(x, mid - v / peak * half); g.lineTo(x, mid - mins[i] / peak * half); });
    g.stroke();
    g.fillStyle = "#aaa"; g.fillText(name + " ±" + Math.round(peak) + " uV", 4, mid - half + 10);
  });
}

async function explore(index) {
  const id = S.focus;
  $("f-stim-title").textContent = `#${index}: asking the OR...`;
  try {
    const r = await api(`/api/or/${id}/stimulus/${index}`);
    if (S.focus !== id) return;
    S.stim = r;
    const m = r.measurement || {};
    $("f-stim-title").textContent = `#${index} ${m.source} ${m.site} ${SIDE_WORD[m.side] || ""} at ${hms(m.t_s)}` + (r.baseline ? ` over the baseline (#${r.baseline.index})` : " (no baseline yet)");
    const rows = [["set / delivered", `${num(m.set_mA, 2)} / ${num(m.delivered_mA, 2)} mA`], ["response", m.response ? "yes" : "no"],
      ["amplitude", num(m.amplitude_uV, 0) + " uV"], ["latency", num(m.latency_ms, 2) + " ms"], ["valid", m.valid ? "yes" : "no: " + (m.invalid_reason || "")]];
    if (r.baseline) rows.push(["baseline", `${num(r.baseline.measurement.amplitude_uV, 0)} uV, ${num(r.baseline.measurement.latency_ms, 2)} ms`]);
    $("f-stim-table").replaceChildren(...rows.map(([k, v]) => el("tr", {}, el("th", { text: k }), el("td", { text: v }))));
    drawStimulus(r, m.side);
  } catch (e) { $("f-stim-title").textContent = `#${index}: ${e.message}`; }
}

function drawStimulus(r, side) {
  const canvas = $("f-stim"), g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  const pick = (w) => w && (w.channels["EMG " + side] || Object.values(w.channels)[0]);
  const cur = pick(r.waveform), base = r.baseline ? pick(r.baseline.waveform) : null;
  const all = (cur || []).concat(base || []);
  if (!all.length) return;
  const peak = Math.max(50, ...all.map(Math.abs));
  const draw = (ys, w, color) => {
    if (!ys) return;
    const rate = w.sample_rate_hz, t0 = w.t0_ms, dur = ys.length / rate * 1000;
    g.strokeStyle = color; g.beginPath();
    ys.forEach((v, i) => { const t = t0 + i / rate * 1000, x = (t - t0) / dur * canvas.width, y = canvas.height / 2 - v / peak * canvas.height / 2.2; i ? g.lineTo(x, y) : g.moveTo(x, y); });
    g.stroke();
  };
  draw(base, r.baseline && r.baseline.waveform, "#777");
  draw(cur, r.waveform, "#ffd866");
  g.fillStyle = "#ccc"; g.font = "11px sans-serif"; g.fillText(`yellow: this stimulus, grey: baseline; ±${Math.round(peak)} uV`, 6, 14);
}

function onTrendClick(ev) {
  if (!S.trendPts || !S.trendPts.length) return;
  const rect = ev.target.getBoundingClientRect();
  const x = (ev.clientX - rect.left) * (ev.target.width / rect.width), y = (ev.clientY - rect.top) * (ev.target.height / rect.height);
  let best = null, bd = 1e9;
  for (const [px, py, idx] of S.trendPts) { const d = (px - x) ** 2 + (py - y) ** 2; if (d < bd) { bd = d; best = idx; } }
  if (best !== null) explore(best);
}

async function sendMessage(ev) {
  ev.preventDefault();
  const text = $("f-text").value.trim();
  if (!text) return;
  $("f-send-result").textContent = "sending...";
  try {
    await api(`/api/or/${S.focus}/message`, { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text, kind: $("f-kind").value }) });
    $("f-text").value = ""; $("f-send-result").textContent = "sent: waiting for the OR to acknowledge";
  } catch (e) { $("f-send-result").textContent = "NOT sent: " + e.message; }
}

async function main() {
  S.me = await api("/api/me");
  $("who").textContent = `${S.me.name} · ${S.me.ors.length} OR(s)`;
  for (const id of S.me.ors) S.tiles[id] = { appliance: id, events: [], waveforms: {}, trend: { L: emptyTrend(), R: emptyTrend() } };
  renderAll();
  connect();
  $("back").addEventListener("click", closeFocus);
  $("logout").addEventListener("click", async () => { await api("/logout", { method: "POST" }).catch(() => null); location.href = "/login"; });
  $("f-send").addEventListener("submit", sendMessage);
  $("f-trend").addEventListener("click", onTrendClick);
  setInterval(() => { for (const id of Object.keys(S.tiles)) renderQuiet(id); }, 1000);
}

document.addEventListener("DOMContentLoaded", main);

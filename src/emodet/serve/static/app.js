// The page: the microphone streamed to WS /stream (AudioWorklet, 16 kHz float32), or a dropped file
// posted to /predict; live probability bars, the current label, a scrolling timeline, a file's segments.
"use strict";

const $ = (id) => document.getElementById(id);
const CALIBRATION_SECONDS = 5;
const COLUMN_PX = 6;          // timeline width of one hop
const KEEP_WINDOWS = 600;     // timeline entries kept (5 minutes at a 0.5 s hop)
const COLOURS = {
  neutral: "#98a2b3", calm: "#5fb3a8", happy: "#f5b700", sad: "#3b7dd8", angry: "#d64545",
  fearful: "#8e5cc4", disgust: "#4f9d4f", surprised: "#ef7fb3", boredom: "#a0785a", uncertain: "#d0d5dd",
};
const SPARE = ["#1aa6b7", "#e07b39", "#6b8e23", "#b5179e", "#577590", "#c9a227"];

const state = { labels: [], model: null, ws: null, audio: null, timeline: [], recording: false };

function colour(label) {
  if (COLOURS[label]) return COLOURS[label];
  const i = state.labels.indexOf(label);
  return SPARE[(i < 0 ? 0 : i) % SPARE.length];
}

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
function say(text) { $("status").textContent = text; }
function fail(text) { $("error").textContent = text || ""; }

// -- the model ----------------------------------------------------------------------------------
async function loadModel() {
  const token = new URLSearchParams(location.search).get("token");
  if (token) history.replaceState(null, "", location.pathname);  // the cookie carries it from now on
  const response = await fetch("model");
  const body = await response.json().catch(() => ({}));
  if (!response.ok) { fail(body.detail || `GET /model: HTTP ${response.status}`); return; }
  state.model = body;
  state.labels = body.labels;
  const needs = body.calibrated ? "" : ` · calibrates on the first ${CALIBRATION_SECONDS} s of each recording`;
  const name = body.model || (body.members || []).map((m) => m.model).join(" + ");
  $("model").textContent = `${name} · ${body.labels.join(", ")}${needs}`;
  drawBars(Object.fromEntries(body.labels.map((l) => [l, 0])));
  drawLegend();
  $("record").disabled = !(navigator.mediaDevices && window.AudioWorkletNode);
  if ($("record").disabled) say("This browser cannot record here (it needs a secure page: https or localhost).");
}

// -- bars, current label, timeline --------------------------------------------------------------
function drawBars(probabilities) {
  const bars = $("bars");
  if (!bars.children.length) {
    for (const label of state.labels) {
      bars.insertAdjacentHTML("beforeend",
        `<span>${esc(label)}</span><div class="track"><div class="fill"></div></div><span class="pct">0%</span>`);
    }
  }
  const fills = bars.querySelectorAll(".fill"), pcts = bars.querySelectorAll(".pct");
  state.labels.forEach((label, i) => {
    const p = probabilities[label] || 0;
    fills[i].style.width = `${(100 * p).toFixed(1)}%`;
    fills[i].style.background = colour(label);
    pcts[i].textContent = `${Math.round(100 * p)}%`;
  });
}

function showCurrent(label, confidence) {
  $("current-label").textContent = label;
  $("current-label").style.color = colour(label);
  $("current-confidence").textContent = confidence == null ? "" : `${Math.round(100 * confidence)}%`;
}

function drawLegend() {
  $("legend").innerHTML = [...state.labels, "uncertain"]
    .map((l) => `<span><span class="swatch" style="background:${colour(l)}"></span>${esc(l)}</span>`).join("");
}

function drawTimeline() {
  const canvas = $("timeline");
  const width = canvas.clientWidth, height = canvas.clientHeight, dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  const ctx = canvas.getContext("2d");
  ctx.scale(dpr, dpr);
  ctx.clearRect(0, 0, width, height);
  const shown = state.timeline.slice(-Math.floor(width / COLUMN_PX));
  shown.forEach((entry, i) => {
    const x = width - (shown.length - i) * COLUMN_PX;
    const h = Math.max(4, entry.confidence * height);
    ctx.fillStyle = colour(entry.label);
    ctx.fillRect(x, height - h, COLUMN_PX - 1, h);
  });
  canvas.dataset.windows = String(state.timeline.length);
  if (shown.length) {
    $("axis-start").textContent = `${shown[0].end.toFixed(1)} s`;
    $("axis-end").textContent = `${shown[shown.length - 1].end.toFixed(1)} s`;
  }
}

// -- the microphone -----------------------------------------------------------------------------
async function startRecording() {
  fail("");
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  const context = new AudioContext();
  await context.audioWorklet.addModule("static/worklet.js");
  const source = context.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(context, "emodet-capture", { processorOptions: { targetRate: 16000, chunkMs: 100 } });
  const mute = context.createGain();
  mute.gain.value = 0;
  source.connect(node).connect(mute).connect(context.destination);
  await context.resume();
  state.audio = { stream, context, node };
  state.timeline = [];
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/stream?format=f32le&sample_rate=16000`);
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  let calibrating = 0;  // samples of calibration still to send (0: live)
  node.port.onmessage = (event) => {
    if (ws.readyState !== WebSocket.OPEN || !state.ready) return;
    if (ws.bufferedAmount > 64000) return;  // the network is behind: drop rather than queue without end
    ws.send(event.data);
    if (calibrating > 0) {
      calibrating -= event.data.byteLength / 4;
      if (calibrating <= 0) { ws.send(JSON.stringify({ type: "calibrate_end" })); say("Calibrating…"); }
    }
  };
  ws.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    if (msg.type === "ready") {
      state.ready = true;
      if (!msg.calibrated) {
        ws.send(JSON.stringify({ type: "calibrate" }));
        calibrating = CALIBRATION_SECONDS * 16000;
        say(`Speak naturally for ${CALIBRATION_SECONDS} s: the model calibrates to your voice…`);
      } else say("Listening…");
    } else if (msg.type === "calibrated") say(`Calibrated on ${msg.seconds.toFixed(1)} s. Listening…`);
    else if (msg.type === "prediction") onPrediction(msg);
    else if (msg.type === "dropped") say(`Listening… (${msg.total_s.toFixed(1)} s skipped: ${msg.reason})`);
    else if (msg.type === "summary") onSummary(msg);
    else if (msg.type === "error") fail(msg.message);
  };
  ws.onclose = (event) => {
    if (state.recording) { fail(event.reason || "The connection to the server closed."); stopRecording(false); }
  };
  state.recording = true;
  $("record").textContent = "Stop";
  $("record").classList.add("recording");
}

function onPrediction(msg) {
  drawBars(msg.probabilities);
  showCurrent(msg.current.label, msg.current.confidence);
  state.timeline.push({ end: msg.end, label: msg.current.label, confidence: msg.current.confidence });
  if (state.timeline.length > KEEP_WINDOWS) state.timeline.shift();
  drawTimeline();
}

function onSummary(msg) {
  const parts = Object.entries(msg.labels).map(([l, s]) => `${l} ${s.toFixed(1)} s`);
  say(`Recorded ${msg.seconds.toFixed(1)} s: ${parts.join(", ") || "shorter than one window"}.`);
}

function stopRecording(sayEnd = true) {
  state.recording = false;
  state.ready = false;
  if (state.ws && state.ws.readyState === WebSocket.OPEN && sayEnd) state.ws.send(JSON.stringify({ type: "end" }));
  if (state.audio) {
    state.audio.stream.getTracks().forEach((t) => t.stop());
    state.audio.context.close();
    state.audio = null;
  }
  $("record").textContent = "Record";
  $("record").classList.remove("recording");
}

// -- a dropped file -----------------------------------------------------------------------------
async function predictFile(file) {
  fail("");
  $("file-summary").textContent = `${file.name}: sending ${(file.size / 1e6).toFixed(1)} MB…`;
  const form = new FormData();
  form.append("file", file, file.name);
  const response = await fetch("predict?window=2&hop=0.5", { method: "POST", body: form });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) { $("file-summary").textContent = ""; fail(body.detail || `HTTP ${response.status}`); return; }
  showFile(body);
}

function showFile(result) {
  const segments = result.segments, windows = result.windows;
  const end = segments.length ? segments[segments.length - 1].end : 0;
  const mean = Object.fromEntries(state.labels.map((l) => [l, 0]));
  windows.forEach((w) => state.labels.forEach((l) => { mean[l] += w.probabilities[l] / windows.length; }));
  const time = {};
  segments.forEach((s) => { time[s.label] = (time[s.label] || 0) + s.end - s.start; });
  const top = Object.entries(time).sort((a, b) => b[1] - a[1])[0];
  if (!state.recording) {  // the bars and label are the microphone's while it records
    drawBars(mean);
    if (top) showCurrent(top[0], mean[top[0]]);
  }
  $("file-summary").textContent = `${result.file}: ${end.toFixed(1)} s, ` +
    Object.entries(time).sort((a, b) => b[1] - a[1]).map(([l, s]) => `${l} ${s.toFixed(1)} s`).join(", ") +
    (state.recording ? "" : " (bars: the mean over its windows)");
  $("segments").innerHTML = segments.map((s) =>
    `<div class="segment" data-label="${esc(s.label)}" title="${s.start.toFixed(2)}–${s.end.toFixed(2)} s: ${esc(s.label)} ` +
    `(${s.confidence.toFixed(2)})" style="flex:${Math.max(s.end - s.start, 0.001)};background:${colour(s.label)}"></div>`).join("");
  $("segments-start").textContent = "0 s";
  $("segments-end").textContent = `${end.toFixed(1)} s`;
  $("segment-list").innerHTML = segments.map((s) =>
    `<li><span class="swatch" style="background:${colour(s.label)}"></span>${s.start.toFixed(2)}–${s.end.toFixed(2)} s ` +
    `${esc(s.label)} (${s.confidence.toFixed(2)})</li>`).join("");
}

// -- wiring -------------------------------------------------------------------------------------
$("record").addEventListener("click", () => {
  if (state.recording) stopRecording();
  else startRecording().catch((e) => { fail(`Cannot record: ${e.message || e}`); stopRecording(false); });
});
$("file").addEventListener("change", (e) => { if (e.target.files[0]) predictFile(e.target.files[0]); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) predictFile(e.dataTransfer.files[0]);
});
window.addEventListener("resize", drawTimeline);
loadModel().catch((e) => fail(`Cannot reach the server: ${e.message || e}`));

// The playground page: settings (held in the URL) -> WebSocket /ws -> a training on the server, streamed
// back as history rows, int8 weights and a confusion matrix, drawn on plain canvases. No network
// requests besides this server.
"use strict";

const ROW = {};  // a history row's column of each value, from the server's hello
const MAX_ARCHIVED = 8;       // earlier runs kept (faded) for comparison
const ARCHIVE_POINTS = 1500;  // points per series kept of an earlier run
const FADED = ["#8e44ad", "#16a085", "#d35400", "#7f8c8d", "#2c3e50", "#27ae60", "#b7950b", "#a93226"];

const form = document.getElementById("settings");
const $ = (id) => document.getElementById(id);
const page = {
  hello: null, preset: "default", experiment: null, socket: null, run: null, archived: [], weights: null,
  config: null, command: null, pending: false, cursor: { loss: null, accuracy: null }, updates: [],
  runCount: 0, hover: { loss: null, accuracy: null },
};
window.playground = page;  // for tests and benchmarks: the page's own data

// --- settings <-> form <-> URL -------------------------------------------------------------------------
const NUMBER_FIELDS = ["train_size", "val_size", "momentum", "lr", "batch_size", "weight_decay", "l1", "seed",
                       "eval_every"];
const INTEGER_FIELDS = ["train_size", "val_size", "batch_size", "seed", "eval_every"];
const LIVE = ["lr", "batch_size", "weight_decay", "l1"];

function presetValues() { return page.hello.presets[page.preset]; }

function fillForm(values) {
  // values: a full config (a preset's, with overrides)
  for (const name of NUMBER_FIELDS) form.elements[name].value = values[name] == null ? "" : values[name];
  form.elements.optimizer.value = values.optimizer ?? "";  // "": the preset leaves it to the data
  form.elements.schedule.value = values.schedule ?? "";
  for (const name of NUMBER_FIELDS) {
    if (name !== "lr") form.elements[name].placeholder = presetValues()[name] == null ? "auto" : "";
  }
  form.elements.span.placeholder = presetValues().epochs == null && presetValues().iters == null ? "auto" : "";
  form.elements.nesterov.checked = !!values.nesterov;
  const byIters = values.iters != null;
  form.elements.unit.value = byIters ? "iters" : "epochs";
  form.elements.span.value = byIters ? values.iters : values.epochs;
  if (values.dataset && page.hello.datasets.includes(values.dataset)) form.elements.dataset.value = values.dataset;
}

function readForm() {
  // the settings the form shows, as TrainConfig fields (null: the preset's None)
  const values = {};
  for (const name of NUMBER_FIELDS) {
    const text = form.elements[name].value.trim();
    values[name] = text === "" ? null : Number(text);
  }
  values.optimizer = form.elements.optimizer.value || null;
  values.schedule = form.elements.schedule.value || null;
  values.nesterov = form.elements.nesterov.checked;
  const length = form.elements.span.value.trim() === "" ? null : Number(form.elements.span.value);
  values.epochs = form.elements.unit.value === "epochs" ? length : null;
  values.iters = form.elements.unit.value === "iters" ? length : null;
  return values;
}

function differences() {
  // the settings that differ from the preset: what the URL and the server get
  const base = presetValues(), values = readForm(), out = {};
  for (const [name, value] of Object.entries(values)) {
    if (value !== base[name] && !(value === null && base[name] === undefined)) out[name] = value;
  }
  if (out.epochs === null && values.iters !== null) delete out.epochs;
  if (out.iters === null && values.epochs !== null) delete out.iters;
  for (const [name, value] of Object.entries(out)) if (value === null) delete out[name];
  return out;
}

function request() {
  return { preset: page.preset, dataset: form.elements.dataset.value, settings: differences() };
}

function writeUrl() {
  const params = new URLSearchParams();
  params.set("preset", page.preset);
  params.set("dataset", form.elements.dataset.value);
  for (const [name, value] of Object.entries(differences())) params.set(name, String(value));
  history.replaceState(null, "", `${location.pathname}?${params}`);
}

function readUrl() {
  const params = new URLSearchParams(location.search);
  const preset = params.get("preset");
  page.preset = preset && page.hello.presets[preset] ? preset : "default";
  const values = { ...presetValues() };
  for (const [name, text] of params) {
    if (NUMBER_FIELDS.includes(name) || name === "epochs" || name === "iters") values[name] = Number(text);
    else if (name === "nesterov") values[name] = text === "true";
    else if (name === "optimizer" || name === "schedule" || name === "dataset") values[name] = text;
  }
  if (params.has("epochs")) values.iters = null;
  if (params.has("iters")) values.epochs = null;
  fillForm(values);
}

// --- the connection -------------------------------------------------------------------------------------
function send(message) {
  if (page.socket && page.socket.readyState === WebSocket.OPEN) page.socket.send(JSON.stringify(message));
}

function connect() {
  const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  socket.binaryType = "arraybuffer";
  page.socket = socket;
  socket.onmessage = (event) => {
    if (event.data instanceof ArrayBuffer) { page.weights = decodeWeights(event.data); return; }
    const message = JSON.parse(event.data);
    const handler = HANDLERS[message.type];
    if (handler) handler(message);
  };
  socket.onclose = () => status("The connection to the server closed; reload the page to go on.");
}

const HANDLERS = {
  hello(message) {
    page.hello = message;
    message.columns.forEach((name, index) => { ROW[name] = index; });
    const select = form.elements.dataset;
    select.replaceChildren(...message.datasets.map((name) => new Option(name, name)));
    $("presets").replaceChildren(...Object.keys(message.presets).map((name) => {
      const button = Object.assign(document.createElement("button"), { type: "button", textContent: name });
      button.dataset.preset = name;
      button.addEventListener("click", () => choosePreset(name));
      return button;
    }));
    $("experiments").replaceChildren(...message.experiments.map((experiment, index) => {
      const button = Object.assign(document.createElement("button"),
                                   { type: "button", textContent: experiment.name });
      button.dataset.experiment = String(index);
      button.addEventListener("click", () => chooseExperiment(index));
      return button;
    }));
    readUrl();
    markPreset();
    settingsChanged();
    updateControls();
  },
  config(message) {
    page.config = message.config;
    page.command = message.command;
    $("command").textContent = message.command || "(no train command gives these settings exactly)";
    const rate = message.config.learning_rate;  // the optimizer's default, or none until the data rules
    form.elements.lr.placeholder = rate == null ? "auto (by the data)" : `default (${rate})`;
  },
  run(message) {
    const run = page.run;
    Object.assign(run, { classNames: message.class_names, shape: message.image_shape, total: message.total,
                         nTrain: message.n_train, summary: summary(message.used) });
    status(`Training ${run.summary}`, true);  // the values used, those left to the data included
    $("sample-name").textContent = `(${message.sample} images)`;
    buildTemplates(message.class_names, message.image_shape);
    const dark = message.background === "dark";
    padColors = dark ? { paper: "#000", ink: "#fff" } : { paper: "#fff", ink: "#000" };
    clearPad();
  },
  frame(message) {
    const run = page.run;
    if (!run) return;
    for (const row of message.rows) {
      run.rows.push(row);
      if (row[ROW.train_accuracy] !== null || row[ROW.val_loss] !== null) run.checks.push(row);
    }
    for (const change of message.changes) run.changes.push(change);
    Object.assign(run, { state: message.state, iteration: message.iteration, epoch: message.epoch,
                         samples: message.samples, lrNow: message.lr, total: message.total,
                         settings: message.settings });
    if (message.confusion) run.measure = message;
    if (message.metrics) { run.metrics = message.metrics; run.changed = message.changed; }
    if (message.error) status(message.error);
    if (message.state === "finished") finished(run);
    scheduleDraw();
    updateControls();
  },
  changing(message) { status(`Changes apply from the next step: ${describe(message.settings)}`, true); },
  saved(message) { status(`Saved the run in ${message.folder}`, true); },
  prediction(message) {
    $("answer").textContent = message.label;
    $("answer").dataset.label = message.label;
    const top = message.top_k.map((item) => `${item.label} ${(100 * item.probability).toFixed(1)}%`).join(", ");
    $("answer-detail").textContent = `at iteration ${message.iteration}: ${top}`;
  },
  error(message) { status(message.message); },
};

function decodeWeights(buffer) {
  const scale = new DataView(buffer).getFloat32(0, true);
  return { scale, values: new Int8Array(buffer, 4) };
}

function status(text, ok = false) {
  $("status").textContent = text;
  $("status").classList.toggle("ok", ok);
}

// --- choosing settings ------------------------------------------------------------------------------------
function markPreset() {
  for (const button of $("presets").children) {
    button.setAttribute("aria-pressed", String(button.dataset.preset === page.preset && page.experiment === null));
  }
  for (const button of $("experiments").children) {
    button.setAttribute("aria-pressed", String(Number(button.dataset.experiment) === page.experiment));
  }
}

function choosePreset(name) {
  page.preset = name;
  page.experiment = null;
  const dataset = form.elements.dataset.value;
  fillForm({ ...presetValues(), dataset });
  $("look").hidden = true;
  markPreset();
  settingsChanged();
}

function chooseExperiment(index) {
  const experiment = page.hello.experiments[index];
  page.preset = experiment.preset;
  page.experiment = index;
  const values = { ...presetValues(), dataset: form.elements.dataset.value, ...experiment.settings };
  if ("epochs" in experiment.settings) values.iters = null;
  fillForm(values);
  $("look").textContent = experiment.look + (experiment.then ? " Press Start: the second run follows by itself." : "");
  $("look").hidden = false;
  markPreset();
  settingsChanged();
}

function settingsChanged() {
  writeUrl();
  page.command = null;  // until the server has checked these settings
  $("command").textContent = "…";
  send({ type: "check", ...request() });
}

form.addEventListener("change", (event) => {
  const name = event.target.name;
  const run = page.run;
  if (run && ["ready", "running", "paused"].includes(run.state) && LIVE.includes(name)) {
    const value = readForm()[name];
    send({ type: "change", settings: { [name]: value } });
    return;
  }
  if (event.target.closest("form")) { page.experiment = null; markPreset(); }
  settingsChanged();
});

// --- the run's life ---------------------------------------------------------------------------------------
function newRun() {
  page.runCount += 1;
  page.run = { number: page.runCount, rows: [], checks: [], changes: [], state: "starting", iteration: 0, epoch: 0,
               startedAt: performance.now(), finishedAt: null,
               samples: 0, request: request(), summary: summary(page.config || {}), measure: null, metrics: null,
               changed: false };
  page.weights = null;
  $("changed-note").hidden = true;
  $("test-accuracy").textContent = "—";
}

function summary(c) {
  // the settings a run trained with (from the server: fields left to the data have their values)
  const lengthText = c.iters != null ? `${c.iters} it` : c.epochs != null ? `${c.epochs} ep` : "auto length";
  const size = c.train_size != null ? `${c.train_size} imgs, ` : "";
  const name = String(c.dataset || "").split("/").pop();  // a dataset folder by its name
  const momentum = c.optimizer === "sgd" && c.momentum ? ` m${c.momentum}` : "";
  const batch = c.optimizer === "lbfgs" ? "whole set" : `batch ${c.batch_size ?? "auto"}`;
  return `${name}: ${size}${c.optimizer ?? "auto"}${momentum} lr ${c.learning_rate ?? c.lr ?? "auto"}, ${batch}, ` +
         `wd ${c.weight_decay ?? "auto"}, l1 ${c.l1}, ${lengthText}`;
}

function start(steps = null) {
  writeUrl();
  const run = page.run;
  if (run && (run.state === "paused" || run.state === "ready")) {
    send(steps ? { type: "step" } : { type: "start" });
    return;
  }
  if (run) archive();
  newRun();
  send({ type: "start", ...page.run.request, ...(steps ? { steps } : {}) });
  updateControls();
}

function finished(run) {
  if (run.finishedShown) return;
  run.finishedShown = true;
  run.finishedAt = performance.now();
  const test = run.metrics && run.metrics.test;
  $("test-accuracy").textContent = test ? `${(100 * test.accuracy).toFixed(2)}%` : "—";
  status(`Finished: test accuracy ${test ? (100 * test.accuracy).toFixed(2) : "?"}% in ` +
         `${run.metrics.train_seconds.toFixed(2)} s of training`, true);
  const experiment = page.experiment !== null ? page.hello.experiments[page.experiment] : null;
  if (experiment && experiment.then && !run.followUp) {
    run.followUp = true;
    page.experiment = null;  // the second run is the last
    markPreset();
    const values = { ...readForm(), ...experiment.then, dataset: form.elements.dataset.value };
    fillForm(values);
    writeUrl();
    send({ type: "check", ...request() });
    setTimeout(() => start(), 0);
  }
}

$("start").addEventListener("click", () => {
  const run = page.run;
  if (run && run.state === "running") send({ type: "pause" });
  else start();
});
$("step").addEventListener("click", () => start(1));
$("reset").addEventListener("click", () => {
  if (page.run) archive();
  send({ type: "reset" });
  page.run = null;
  page.weights = null;
  clearPanels();
  updateControls();
  scheduleDraw();
});
$("save").addEventListener("click", () => send({ type: "save" }));
$("copy").addEventListener("click", async () => {
  const text = page.command;
  if (!text) { status("No train command gives these settings exactly."); return; }
  try {
    await navigator.clipboard.writeText(text);
    status("Copied the command: it trains this run's settings from the start.", true);
  } catch (error) {
    const range = document.createRange();
    range.selectNodeContents($("command"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    status("Selected the command: copy it with Ctrl+C.", true);
  }
});

function updateControls() {
  const run = page.run;
  const state = run ? run.state : "none";
  const active = ["starting", "ready", "running", "paused"].includes(state);
  $("start").textContent = state === "running" ? "Pause" : state === "paused" ? "Resume" : "Start";
  $("step").disabled = state === "running" || state === "starting";
  $("save").disabled = !(state === "paused" || state === "finished");
  for (const element of form.elements) {
    element.disabled = active && !LIVE.includes(element.name);
  }
  $("state").textContent = run ? state : "—";
  $("changed-note").hidden = !(run && run.changes.length);
}

// --- earlier runs ------------------------------------------------------------------------------------------
function archive() {
  const run = page.run;
  if (!run || !run.rows.length) return;
  const color = FADED[(run.number - 1) % FADED.length];
  page.archived.push({ number: run.number, color, summary: run.summary, rows: thin(run.rows, ARCHIVE_POINTS),
                       checks: thin(run.checks, ARCHIVE_POINTS),
                       metrics: run.metrics, changed: run.changes.length > 0, state: run.state });
  while (page.archived.length > MAX_ARCHIVED) page.archived.shift();
  renderRuns();
}

function thin(rows, count) {
  if (rows.length <= count) return rows.slice();
  const step = rows.length / count, out = [];
  for (let i = 0; i < count; i++) out.push(rows[Math.floor(i * step)]);
  out.push(rows[rows.length - 1]);
  return out;
}

function renderRuns() {
  const body = $("runs").tBodies[0];
  body.replaceChildren(...page.archived.map((run) => {
    const row = document.createElement("tr");
    const val = run.metrics && run.metrics.val ? `${(100 * run.metrics.val.accuracy).toFixed(2)}%` : "—";
    const test = run.metrics && run.metrics.test ? `${(100 * run.metrics.test.accuracy).toFixed(2)}%` : run.state;
    const cells = [`#${run.number}`, run.summary + (run.changed ? " (changed mid-run)" : ""), val, test];
    cells.forEach((text, i) => {
      const cell = Object.assign(document.createElement("td"), { textContent: text });
      if (i === 0) { cell.className = "swatch"; cell.style.color = run.color; }
      row.append(cell);
    });
    const clear = Object.assign(document.createElement("button"),
                                { type: "button", textContent: "Clear", ariaLabel: `clear run ${run.number}` });
    clear.addEventListener("click", () => {
      page.archived = page.archived.filter((other) => other !== run);
      renderRuns();
      scheduleDraw();
    });
    const cell = document.createElement("td");
    cell.append(clear);
    row.append(cell);
    return row;
  }));
  $("no-runs").hidden = page.archived.length > 0;
}

// --- drawing ------------------------------------------------------------------------------------------------
let drawQueued = false;
function scheduleDraw() {
  if (drawQueued) return;
  drawQueued = true;
  requestAnimationFrame(() => { drawQueued = false; draw(); });
}

function draw() {
  const run = page.run;
  drawCharts();
  if (run) {
    $("iteration").textContent = `${run.iteration}${run.total ? ` / ${run.total}` : ""}`;
    $("epoch").textContent = run.epoch.toFixed(2);
    $("samples").textContent = run.samples.toLocaleString("en");
    $("lr-now").textContent = run.lrNow == null ? "—" : Number(run.lrNow).toPrecision(4);
    if (page.weights) drawTemplates(run);
    if (run.measure && run.measure !== run.measureShown) {  // rebuilt only when a new one came
      drawMeasure(run.measure, run.classNames || []);
      run.measureShown = run.measure;
    }
    page.updates.push(performance.now());
    if (page.updates.length > 20000) page.updates.splice(0, 10000);
  }
}

function xOf(row) { return row[$("x-axis").value === "epoch" ? ROW.epoch : ROW.iteration]; }

const CHARTS = {
  loss: { canvas: "loss-chart", readout: "loss-readout", batch: ROW.loss, val: ROW.val_loss, label: "loss" },
  accuracy: { canvas: "accuracy-chart", readout: "accuracy-readout", batch: ROW.train_accuracy,
              val: ROW.val_accuracy, label: "accuracy" },
};

function drawCharts() {
  for (const [name, chart] of Object.entries(CHARTS)) drawChart(name, chart);
}

function sizeCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.round(canvas.clientWidth * ratio), height = Math.round(canvas.clientHeight * ratio);
  if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
  return ratio;
}

function series(rows, column) {
  const points = [];
  for (const row of rows) if (row[column] !== null) points.push([xOf(row), row[column]]);
  return points;
}

function bounds(name, chart, runs) {
  let xMax = 0, yMax = name === "accuracy" ? 1 : 0, yMin = name === "accuracy" ? 1 : 0;
  const losses = [];
  for (const rows of runs) {
    for (const row of rows) {
      xMax = Math.max(xMax, xOf(row));
      for (const column of [chart.batch, chart.val]) {
        const value = row[column];
        if (value === null) continue;
        if (name === "accuracy") yMin = Math.min(yMin, value); else losses.push(value);
      }
    }
  }
  if (name === "loss") {
    if (losses.length > 4000) {  // the 99th percentile of a thinned copy: a sort per redraw stays cheap
      const step = losses.length / 4000;
      losses.splice(0, losses.length, ...Array.from({ length: 4000 }, (_, i) => losses[Math.floor(i * step)]));
    }
    losses.sort((a, b) => a - b);
    const high = losses.length ? losses[Math.floor(0.99 * (losses.length - 1))] : 1;
    yMax = Math.max(0.1, high * 1.1);
    return { xMax: Math.max(xMax, 1e-9), yMin: 0, yMax };
  }
  yMin = Math.max(0, Math.floor(yMin * 20) / 20 - 0.05);
  return { xMax: Math.max(xMax, 1e-9), yMin, yMax: 1 };
}

function drawChart(name, chart) {
  const canvas = $(chart.canvas);
  const ratio = sizeCanvas(canvas);
  const context = canvas.getContext("2d");
  const width = canvas.width, height = canvas.height;
  context.clearRect(0, 0, width, height);
  const run = page.run;
  // each run as its rows (the current one thinned to about two per pixel) and its checks
  const runs = page.archived.map((archived) => ({ ...archived, alpha: [0.25, 0.45] }));
  if (run) {
    runs.push({ rows: thin(run.rows, 2 * width), checks: run.checks, alpha: [name === "loss" ? 0.55 : 1, 1],
                color: getVar("--batch"), checkColor: getVar("--val") });
  }
  const box = bounds(name, chart, runs.flatMap((each) => [each.rows, each.checks]));
  const pad = { left: 44 * ratio, right: 10 * ratio, top: 8 * ratio, bottom: 20 * ratio };
  const plot = { x: (x) => pad.left + (width - pad.left - pad.right) * x / box.xMax,
                 y: (y) => height - pad.bottom - (height - pad.top - pad.bottom) * (y - box.yMin) / (box.yMax - box.yMin) };
  axes(context, plot, box, width, height, pad, ratio);
  if (run) for (const change of run.changes) mark(context, plot, change, height, pad, ratio);
  for (const each of runs) {
    const batchRows = name === "loss" ? each.rows : each.checks;  // training accuracy: at checks only
    line(context, plot, series(batchRows, chart.batch), each.color, each.alpha[0], ratio, box);
    line(context, plot, series(each.checks, chart.val), each.checkColor || each.color, each.alpha[1], ratio, box, true);
  }
  if (run) cursor(name, chart, context, plot, height, pad, ratio);
}

function xMaxOf() {
  const lasts = page.archived.map((archived) => archived.rows[archived.rows.length - 1]);
  if (page.run && page.run.rows.length) lasts.push(page.run.rows[page.run.rows.length - 1]);
  return Math.max(1e-9, ...lasts.map(xOf));
}

function getVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

function axes(context, plot, box, width, height, pad, ratio) {
  context.strokeStyle = "#ccc";
  context.fillStyle = "#666";
  context.lineWidth = ratio;
  context.font = `${11 * ratio}px system-ui, sans-serif`;
  for (let i = 0; i <= 4; i++) {
    const value = box.yMin + (box.yMax - box.yMin) * i / 4;
    const y = plot.y(value);
    context.beginPath(); context.moveTo(pad.left, y); context.lineTo(width - pad.right, y); context.stroke();
    context.fillText(value.toPrecision(3), 2 * ratio, y + 4 * ratio);
  }
  const unit = $("x-axis").value === "epoch" ? "epoch" : "iteration";
  context.fillText(`${unit} ${Number(box.xMax.toPrecision(4))}`, width - pad.right - 90 * ratio, height - 5 * ratio);
  context.fillText("0", pad.left, height - 5 * ratio);
}

function line(context, plot, points, color, alpha, ratio, box, dots = false) {
  if (!points.length) return;
  const maxPoints = 4 * context.canvas.width;
  const stride = Math.max(1, Math.floor(points.length / maxPoints));
  context.globalAlpha = alpha;
  context.strokeStyle = color;
  context.fillStyle = color;
  context.lineWidth = (dots ? 2 : 1.2) * ratio;
  context.beginPath();
  for (let i = 0; i < points.length; i += stride) {
    const [x, y] = points[i];
    const py = plot.y(Math.min(Math.max(y, box.yMin), box.yMax));
    if (i === 0) context.moveTo(plot.x(x), py); else context.lineTo(plot.x(x), py);
  }
  const [lx, ly] = points[points.length - 1];
  context.lineTo(plot.x(lx), plot.y(Math.min(Math.max(ly, box.yMin), box.yMax)));
  context.stroke();
  if (dots && points.length < 200) {
    for (const [x, y] of points) {
      context.beginPath();
      context.arc(plot.x(x), plot.y(Math.min(Math.max(y, box.yMin), box.yMax)), 2.5 * ratio, 0, 2 * Math.PI);
      context.fill();
    }
  }
  context.globalAlpha = 1;
}

function mark(context, plot, change, height, pad, ratio) {
  const x = plot.x($("x-axis").value === "epoch" ? change.epoch : change.iteration);
  context.save();
  context.setLineDash([4 * ratio, 3 * ratio]);
  context.strokeStyle = "#444";
  context.lineWidth = ratio;
  context.beginPath(); context.moveTo(x, pad.top); context.lineTo(x, height - pad.bottom); context.stroke();
  context.restore();
  context.fillStyle = "#222";
  context.font = `${10 * ratio}px system-ui, sans-serif`;
  context.fillText(describe(change), x + 3 * ratio, pad.top + 10 * ratio);
}

function describe(settings) {
  return Object.entries(settings).filter(([name]) => LIVE.includes(name))
    .map(([name, value]) => `${name.replace("_", " ")} ${value}`).join(", ");
}

// --- exact values: hover and keys ----------------------------------------------------------------------------
function cursor(name, chart, context, plot, height, pad, ratio) {
  const index = page.cursor[name];
  const rows = page.run.rows;
  if (index === null || !rows.length) return;
  const row = rows[Math.min(index, rows.length - 1)];
  const x = plot.x(xOf(row));
  context.strokeStyle = "rgba(0,0,0,0.5)";
  context.lineWidth = ratio;
  context.beginPath(); context.moveTo(x, pad.top); context.lineTo(x, height - pad.bottom); context.stroke();
  const parts = [`iteration ${row[ROW.iteration]}`, `epoch ${row[ROW.epoch]}`, `lr ${row[ROW.lr]}`];
  if (name === "loss") {
    parts.push(`batch loss ${row[ROW.loss]}`);
    if (row[ROW.val_loss] !== null) parts.push(`val loss ${row[ROW.val_loss]}`);
  } else {
    const last = lastCheck(rows, index);
    if (last) {
      parts.push(`train acc. ${last[ROW.train_accuracy]}`);
      if (last[ROW.val_accuracy] !== null) parts.push(`val acc. ${last[ROW.val_accuracy]} (iteration ${last[ROW.iteration]})`);
    }
  }
  $(chart.readout).textContent = parts.join(" · ");
}

function lastCheck(rows, index) {
  for (let i = Math.min(index, rows.length - 1); i >= 0; i--) if (rows[i][ROW.train_accuracy] !== null) return rows[i];
  return null;
}

function nearest(rows, x) {
  let low = 0, high = rows.length - 1;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (xOf(rows[middle]) < x) low = middle + 1; else high = middle;
  }
  return low;
}

for (const [name, chart] of Object.entries(CHARTS)) {
  const canvas = $(chart.canvas);
  canvas.addEventListener("mousemove", (event) => {
    const run = page.run;
    if (!run || !run.rows.length) return;
    const box = canvas.getBoundingClientRect();
    const left = 44, right = 10;
    const xMax = xMaxOf();
    const x = (event.clientX - box.left - left) / (box.width - left - right) * xMax;
    page.cursor[name] = nearest(run.rows, x);
    scheduleDraw();
  });
  canvas.addEventListener("keydown", (event) => {
    const run = page.run;
    if (!run || !run.rows.length) return;
    const last = run.rows.length - 1;
    const big = Math.max(1, Math.round(run.rows.length / 50));
    let index = page.cursor[name] === null ? last : page.cursor[name];
    const moves = { ArrowLeft: -1, ArrowRight: 1, PageDown: -big, PageUp: big };
    if (event.key in moves) index += event.shiftKey ? moves[event.key] * big : moves[event.key];
    else if (event.key === "Home") index = 0;
    else if (event.key === "End") index = last;
    else return;
    event.preventDefault();
    page.cursor[name] = Math.max(0, Math.min(last, index));
    scheduleDraw();
  });
}
$("x-axis").addEventListener("change", scheduleDraw);
window.addEventListener("resize", scheduleDraw);

// --- templates, confusion, mistakes ------------------------------------------------------------------------------
function buildTemplates(names, shape) {
  $("templates").replaceChildren(...names.map((name) => {
    const figure = document.createElement("figure");
    const canvas = Object.assign(document.createElement("canvas"), { width: shape[1], height: shape[0] });
    canvas.setAttribute("aria-label", `weights of class ${name}`);
    figure.append(canvas, Object.assign(document.createElement("figcaption"), { textContent: name }));
    return figure;
  }));
}

function drawTemplates(run) {
  const { values } = page.weights;
  const canvases = $("templates").querySelectorAll("canvas");
  const size = run.shape[0] * run.shape[1];
  canvases.forEach((canvas, index) => {
    if ((index + 1) * size > values.length) return;
    const row = values.subarray(index * size, (index + 1) * size);
    // each template on its own scale, its 99th percentile of |weight| as full colour: a few large
    // weights on rarely lit border pixels would otherwise leave the digit's shape too dark to see
    const sorted = Float32Array.from(row, Math.abs).sort();
    const scale = Math.max(1, sorted[Math.floor(0.99 * (size - 1))]);
    const context = canvas.getContext("2d");
    const image = context.createImageData(canvas.width, canvas.height);
    for (let i = 0; i < size; i++) {
      const v = Math.max(-1, Math.min(1, row[i] / scale));
      const o = 4 * i;
      if (v >= 0) { image.data[o] = 255 * v; image.data[o + 1] = 40 * v; image.data[o + 2] = 30 * v; }
      else { image.data[o] = -30 * v; image.data[o + 1] = -90 * v; image.data[o + 2] = -255 * v; }
      image.data[o + 3] = 255;
    }
    context.putImageData(image, 0, 0);
  });
}

function drawMeasure(measure, names) {
  const table = $("confusion");
  const k = measure.confusion.length;
  const head = document.createElement("tr");
  head.append(Object.assign(document.createElement("th"), { textContent: "true↓ pred→" }));
  for (let j = 0; j < k; j++) head.append(Object.assign(document.createElement("th"), { textContent: names[j] ?? j }));
  const rows = [head];
  let max = 1;
  for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) if (i !== j) max = Math.max(max, measure.confusion[i][j]);
  for (let i = 0; i < k; i++) {
    const row = document.createElement("tr");
    row.append(Object.assign(document.createElement("th"), { textContent: names[i] ?? i }));
    for (let j = 0; j < k; j++) {
      const count = measure.confusion[i][j];
      const cell = Object.assign(document.createElement("td"), { textContent: count });
      if (i === j) cell.className = "diag";
      else if (count) cell.style.background = `rgba(192, 57, 43, ${Math.min(0.85, 0.1 + count / max * 0.75)})`;
      row.append(cell);
    }
    rows.push(row);
  }
  table.replaceChildren(...rows);
  $("sample-accuracy").textContent = `${(100 * measure.accuracy).toFixed(1)}% right on these ${measure.sample} images now`;
  const run = page.run;
  $("mistakes").replaceChildren(...measure.mistakes.map((mistake) => {
    const figure = document.createElement("figure");
    const [height, width] = run.shape;
    const canvas = Object.assign(document.createElement("canvas"), { width, height });
    const pixels = Uint8Array.from(atob(mistake.image), (c) => c.charCodeAt(0));
    const context = canvas.getContext("2d");
    const image = context.createImageData(width, height);
    pixels.forEach((v, i) => image.data.set([v, v, v, 255], 4 * i));
    context.putImageData(image, 0, 0);
    const label = `${names[mistake.label] ?? mistake.label} → ${names[mistake.predicted] ?? mistake.predicted}`;
    canvas.setAttribute("aria-label", `a ${names[mistake.label]} taken for ${names[mistake.predicted]}`);
    figure.append(canvas, Object.assign(document.createElement("figcaption"), { textContent: label }));
    return figure;
  }));
}

function clearPanels() {
  for (const id of ["templates", "mistakes", "confusion"]) $(id).replaceChildren();
  $("sample-accuracy").textContent = "";
  for (const id of ["iteration", "epoch", "samples"]) $(id).textContent = "0";
  $("lr-now").textContent = "—";
  $("test-accuracy").textContent = "—";
  for (const chart of Object.values(CHARTS)) $(chart.readout).textContent = "";
  page.cursor = { loss: null, accuracy: null };
}

// --- the drawing pad: the model as it trains -------------------------------------------------------------------
const pad = $("pad");
const ink = pad.getContext("2d");
let stroke = null;
let padColors = { paper: "#fff", ink: "#000" };  // a run on light digits on black draws so (run message)
function clearPad() { ink.fillStyle = padColors.paper; ink.fillRect(0, 0, pad.width, pad.height); }
function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width, (event.clientY - box.top) * pad.height / box.height];
}
pad.addEventListener("pointerdown", (event) => {
  pad.setPointerCapture(event.pointerId);
  stroke = padPoint(event);
  ink.fillStyle = padColors.ink;
  ink.beginPath(); ink.arc(stroke[0], stroke[1], pad.width / 28, 0, 2 * Math.PI); ink.fill();
});
pad.addEventListener("pointermove", (event) => {
  if (!stroke) return;
  const next = padPoint(event);
  ink.strokeStyle = padColors.ink; ink.lineWidth = pad.width / 14; ink.lineCap = "round";
  ink.beginPath(); ink.moveTo(...stroke); ink.lineTo(...next); ink.stroke();
  stroke = next;
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => {
    if (!stroke) return;
    stroke = null;
    pad.toBlob(async (blob) => page.socket.send(await blob.arrayBuffer()), "image/png");
  });
}
$("clear-pad").addEventListener("click", () => { clearPad(); $("answer").textContent = "?"; $("answer-detail").textContent = ""; });

clearPad();
connect();

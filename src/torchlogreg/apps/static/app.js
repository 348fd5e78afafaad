// Drawing pad -> POST /api/predict -> probability bars, the model's input and evidence maps, sized to
// the run's input shape (from /api/model; 28x28 for MNIST).
"use strict";

const MAPS = ["seen", "evidence-predicted", "evidence-runner-up"];
const MAP_SIZE = 112;  // CSS pixels of a map's longer side

const pad = document.getElementById("pad");
const ink = pad.getContext("2d");
const strokes = [];
let current = null;
let inFlight = false;
let pending = false;
let colors = { paper: "#fff", ink: "#000" };  // the run's training pictures' way round (/api/model)

function clearPad() {
  ink.fillStyle = colors.paper;
  ink.fillRect(0, 0, pad.width, pad.height);
}

function redraw() {
  clearPad();
  ink.strokeStyle = colors.ink;
  ink.lineWidth = pad.width / 14;
  ink.lineCap = "round";
  ink.lineJoin = "round";
  for (const stroke of strokes) {
    ink.beginPath();
    ink.moveTo(stroke[0].x, stroke[0].y);
    for (const point of stroke.slice(1)) ink.lineTo(point.x, point.y);
    if (stroke.length === 1) ink.lineTo(stroke[0].x + 0.1, stroke[0].y);
    ink.stroke();
  }
}

function position(event) {
  const box = pad.getBoundingClientRect();
  return { x: (event.clientX - box.left) * pad.width / box.width,
           y: (event.clientY - box.top) * pad.height / box.height };
}

pad.addEventListener("pointerdown", (event) => {
  pad.setPointerCapture(event.pointerId);
  current = [position(event)];
  strokes.push(current);
  redraw();
  predictSoon();
});
pad.addEventListener("pointermove", (event) => {
  if (!current) return;
  current.push(position(event));
  redraw();
  predictSoon();
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => { current = null; predictSoon(); });
}

document.getElementById("clear").addEventListener("click", () => { strokes.length = 0; redraw(); showEmpty(); });
document.getElementById("undo").addEventListener("click", () => {
  strokes.pop();
  redraw();
  if (strokes.length) predictSoon(); else showEmpty();
});

function predictSoon() {
  if (inFlight) { pending = true; return; }
  if (!strokes.length) return;
  inFlight = true;
  pad.toBlob(async (blob) => {
    try {
      const form = new FormData();
      form.append("file", blob, "drawing.png");
      const response = await fetch("/api/predict", { method: "POST", body: form });
      const data = await response.json();
      if (response.ok) show(data); else showMessage(data.error || response.statusText);
    } catch (error) {
      showMessage(String(error));
    } finally {
      inFlight = false;
      if (pending) { pending = false; predictSoon(); }
    }
  }, "image/png");
}

function showEmpty() {
  const label = document.getElementById("label");
  label.textContent = "?";
  label.dataset.label = "";
  document.getElementById("confidence").textContent = "";
  document.getElementById("bars").replaceChildren();
  for (const id of MAPS) {
    const canvas = document.getElementById(id);
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  }
  showMessage("");
}

let askLine = "Draw a digit.";  // what the page asks for: a digit, or the run's classes (loadModelInfo)

function showMessage(text) {
  document.getElementById("status").textContent = text.includes("no digit found") ? askLine : text;
}

// "Draw a digit" for a run of digits; else its class names, the first few ("Draw one of: circles,
// squares, triangles"): a run of shapes had asked for a digit
function askFor(classes) {
  if (classes.every((name) => /^[0-9]$/.test(name))) return "Draw a digit";
  const shown = classes.length > 6 ? [...classes.slice(0, 5), "…"] : classes;
  return `Draw one of: ${shown.join(", ")}`;
}

function show(data) {
  showMessage("");
  const label = document.getElementById("label");
  label.textContent = data.label;
  label.dataset.label = data.label;
  document.getElementById("confidence").textContent = `${(100 * data.probability).toFixed(1)}%`;
  const bars = document.getElementById("bars");
  const ranked = Object.entries(data.probabilities).sort((a, b) => b[1] - a[1]).slice(0, 5);
  bars.replaceChildren(...ranked.map(([name, p]) => {
    const item = document.createElement("li");
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${Math.max(1, 100 * p)}%`;
    const track = document.createElement("div");
    track.append(bar);
    item.append(Object.assign(document.createElement("span"), { textContent: name }), track,
                Object.assign(document.createElement("span"), { textContent: `${(100 * p).toFixed(1)}%` }));
    return item;
  }));
  paint("seen", data.image, (v) => [255 * v, 255 * v, 255 * v]);
  const all = data.evidence.predicted.flat().concat(data.evidence.runner_up.flat());
  const scale = Math.max(1e-9, ...all.map(Math.abs));
  const diverging = (v) => v >= 0 ? [255 * v / scale, 40 * v / scale, 30 * v / scale]
                                   : [30 * -v / scale, 90 * -v / scale, 255 * -v / scale];
  paint("evidence-predicted", data.evidence.predicted, diverging);
  paint("evidence-runner-up", data.evidence.runner_up, diverging);
  document.getElementById("caption-predicted").textContent = `Evidence for ${data.label}`;
  document.getElementById("caption-runner-up").textContent = `Evidence for ${data.runner_up} (runner-up)`;
}

function sizeMap(canvas, height, width) {
  // one canvas pixel per image pixel, shown at MAP_SIZE on the longer side with the image's proportions
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const scale = MAP_SIZE / Math.max(height, width);
  canvas.style.width = `${Math.round(width * scale)}px`;
  canvas.style.height = `${Math.round(height * scale)}px`;
}

function paint(id, grid, color) {
  const canvas = document.getElementById(id);
  sizeMap(canvas, grid.length, grid[0].length);
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(canvas.width, canvas.height);
  grid.flat().forEach((value, i) => {
    const [r, g, b] = color(value);
    pixels.data.set([r, g, b, 255], 4 * i);
  });
  context.putImageData(pixels, 0, 0);
}

async function loadModelInfo() {
  const info = document.getElementById("model-info");
  try {
    const { input_shape: shape, dataset, class_names: classes, metrics, background } =
      await (await fetch("/api/model")).json();
    if (background === "dark") {  // light strokes on black, as the run's training pictures
      colors = { paper: "#000", ink: "#fff" };
      redraw();
    }
    const ask = askFor(classes);
    document.querySelector("h1").textContent = ask;
    document.title = `torchlogreg: ${ask.toLowerCase()}`;
    askLine = `${ask}.`;
    const [height, width] = shape || [28, 28];
    for (const id of MAPS) sizeMap(document.getElementById(id), height, width);
    document.getElementById("caption-seen").textContent = `What the model sees (${height}×${width})`;
    const test = metrics && metrics.test;
    const accuracy = test && test.accuracy != null ? `, ${(100 * test.accuracy).toFixed(2)}% test accuracy` : "";
    info.textContent = `${dataset}: ${classes.length} classes${accuracy}. ` +
                       "Draw with a mouse or a finger; the answer updates as you draw.";
  } catch (error) {
    info.textContent = "Could not load the model's details.";
  }
}

redraw();
loadModelInfo();

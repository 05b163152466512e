// cellhop's GpuMonitor front end (an anywidget ES module; no imports, no network).
// The model holds the GPUs and each one's newest sample (`latest`); the samples themselves come
// as custom messages, only the new ones each tick ({type: "samples", time, samples: {uuid: readings}}),
// and the sparklines' ring buffer lives here, one per model (shared by its views). On attaching,
// the front end says {type: "hello"} and the kernel answers once with what it has buffered
// ({type: "history", history: {uuid: {time: [...], <reading>: [...]}}}).

const SVG = "http://www.w3.org/2000/svg";
const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

function bytes(n) {
  if (n === null || n === undefined) return "–";
  let v = n, u = 0;
  while (Math.abs(v) >= 1024 && u < UNITS.length - 1) { v /= 1024; u++; }
  return `${v.toFixed(u === 0 || v >= 100 ? 0 : 1)} ${UNITS[u]}`;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// A sparkline of `values` (nulls are gaps) between 0 and `max`, newest at the right;
// `span` values fill the width.
function sparkline(values, max, span) {
  const w = 120, h = 24;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "cellhop-gpumon-spark");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const n = Math.max(span, values.length, 2);
  const step = w / (n - 1), offset = n - values.length;
  let d = "", pen = false;
  const top = max || Math.max(1, ...values.filter((v) => v !== null && v !== undefined));
  values.forEach((v, i) => {
    if (v === null || v === undefined) { pen = false; return; }
    const y = h - (Math.min(Math.max(v, 0), top) / top) * h;
    d += `${pen ? "L" : "M"}${((offset + i) * step).toFixed(1)} ${y.toFixed(1)} `;
    pen = true;
  });
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", d.trim());
  svg.append(path);
  return svg;
}

function cell(text, values, max, span, kind) {
  const td = el("td", `cellhop-gpumon-metric cellhop-gpumon-${kind}`);
  td.append(el("div", "cellhop-gpumon-value", text));
  if (values && values.some((v) => v !== null && v !== undefined)) td.append(sparkline(values, max, span));
  return td;
}

const READINGS = ["utilization", "memory_used", "power_w", "temperature_c"];
const buffers = new WeakMap(); // model -> {history: {uuid: {time, <reading>...}}, listeners: Set}

function emptySeries() {
  const h = { time: [] };
  for (const k of READINGS) h[k] = [];
  return h;
}

// Drop what is older than history_seconds before the newest time.
function trim(h, horizon) {
  let keep = 0;
  while (keep < h.time.length && h.time[keep] < horizon) keep++;
  if (keep) for (const k of ["time", ...READINGS]) h[k].splice(0, keep);
}

function bufferOf(model) {
  let buffer = buffers.get(model);
  if (buffer) return buffer;
  buffer = { history: {}, listeners: new Set() };
  buffers.set(model, buffer);
  model.on("msg:custom", (msg) => {
    if (!msg || typeof msg !== "object") return;
    if (msg.type === "history") {
      const history = {};
      for (const [uuid, h] of Object.entries(msg.history || {})) {
        history[uuid] = { time: [...(h.time || [])] };
        for (const k of READINGS) history[uuid][k] = [...(h[k] || [])];
      }
      // samples that arrived after the kernel answered stay
      for (const [uuid, h] of Object.entries(buffer.history)) {
        const last = history[uuid] && history[uuid].time.length ? history[uuid].time[history[uuid].time.length - 1] : -Infinity;
        const into = history[uuid] || (history[uuid] = emptySeries());
        h.time.forEach((t, i) => {
          if (t > last) { into.time.push(t); for (const k of READINGS) into[k].push(h[k][i]); }
        });
      }
      buffer.history = history;
    } else if (msg.type === "samples") {
      const horizon = msg.time - (model.get("history_seconds") || 300);
      for (const [uuid, s] of Object.entries(msg.samples || {})) {
        const h = buffer.history[uuid] || (buffer.history[uuid] = emptySeries());
        h.time.push(msg.time);
        for (const k of READINGS) h[k].push(s[k] === undefined ? null : s[k]);
        trim(h, horizon);
      }
    } else return;
    for (const listener of buffer.listeners) listener();
  });
  model.send({ type: "hello" }); // the kernel answers with what it has buffered, once
  return buffer;
}

function initialize({ model }) {
  bufferOf(model);
}

function render({ model, el: root }) {
  const buffer = bufferOf(model);
  root.classList.add("cellhop-gpumon");
  const header = el("div", "cellhop-gpumon-header");
  const title = el("span", "cellhop-gpumon-title");
  const badge = el("span", "cellhop-gpumon-badge", "simulated");
  badge.title = "No real GPU: utilization and memory are the CPU use and memory of the container holding it";
  const spacer = el("span", "cellhop-gpumon-spacer");
  const label = el("label", "cellhop-gpumon-interval", "every ");
  const input = el("input");
  input.type = "number"; input.min = "0.1"; input.max = "60"; input.step = "0.1";
  label.append(input, " s");
  const pause = el("button", "cellhop-gpumon-button");
  pause.type = "button";
  header.append(title, badge, spacer, label, pause);
  const message = el("div", "cellhop-gpumon-message");
  const table = el("table", "cellhop-gpumon-table");
  root.append(header, message, table);

  input.addEventListener("change", () => {
    const v = Number(input.value);
    if (v >= 0.1 && v <= 60) { model.set("interval", v); model.save_changes(); }
    else input.value = model.get("interval");
  });
  pause.addEventListener("click", () => { model.set("paused", !model.get("paused")); model.save_changes(); });

  function draw() {
    const gpus = model.get("gpus") || [], latest = model.get("latest") || {}, history = buffer.history;
    const span = Math.max(2, Math.round(model.get("history_seconds") / (model.get("interval") || 1)));
    title.textContent = model.get("title");
    badge.style.display = model.get("simulated") ? "" : "none";
    if (document.activeElement !== input) input.value = model.get("interval");
    pause.textContent = model.get("paused") ? "Resume" : "Pause";
    root.classList.toggle("cellhop-gpumon-paused", model.get("paused"));
    message.textContent = model.get("message");
    message.style.display = model.get("message") ? "" : "none";
    table.replaceChildren();
    if (!gpus.length) return;
    const nodes = gpus.some((g) => g.node); // the Ray runtime: say where each GPU is
    const head = el("tr");
    for (const h of ["GPU", ...(nodes ? ["node"] : []), "holder", "utilization", "memory", "power", "temperature"]) head.append(el("th", "", h));
    table.append(head);
    for (const g of gpus) {
      const s = latest[g.uuid] || {}, h = history[g.uuid] || {};
      const tr = el("tr", "cellhop-gpumon-row");
      tr.dataset.uuid = g.uuid;
      const name = el("td", "cellhop-gpumon-name", `[${g.index}] ${g.type}`);
      if (g.simulated) name.append(el("span", "cellhop-gpumon-sim", " simulated"));
      tr.append(name);
      if (nodes) tr.append(el("td", "cellhop-gpumon-node", g.node || "–"));
      tr.append(el("td", "cellhop-gpumon-holder", g.holder || "free"));
      const total = s.memory_total || g.memory_total;
      tr.append(
        cell(s.utilization === undefined ? "–" : `${s.utilization}%`, h.utilization, 100, span, "util"),
        cell(s.memory_used === undefined ? "–" : `${bytes(s.memory_used)} / ${bytes(total)}`, h.memory_used, total, span, "mem"),
        cell(s.power_w === undefined ? "–" : `${Math.round(s.power_w)} W`, h.power_w, 0, span, "power"),
        cell(s.temperature_c === undefined ? "–" : `${Math.round(s.temperature_c)} °C`, h.temperature_c, 0, span, "temp"),
      );
      table.append(tr);
    }
  }

  const names = ["gpus", "latest", "interval", "paused", "message", "title", "simulated", "history_seconds"];
  for (const n of names) model.on(`change:${n}`, draw);
  buffer.listeners.add(draw); // each samples message redraws (latest changes with it)
  draw();
  return () => {
    for (const n of names) model.off(`change:${n}`, draw);
    buffer.listeners.delete(draw);
  };
}

export default { initialize, render };

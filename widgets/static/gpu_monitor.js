// cellhop's GpuMonitor front end (an anywidget ES module; no imports, no network).
// The kernel keeps the samples and their history in the model; this only draws them.

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

function render({ model, el: root }) {
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
    const gpus = model.get("gpus") || [], latest = model.get("latest") || {}, history = model.get("history") || {};
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

  const names = ["gpus", "latest", "history", "interval", "paused", "message", "title", "simulated", "history_seconds"];
  for (const n of names) model.on(`change:${n}`, draw);
  draw();
  return () => { for (const n of names) model.off(`change:${n}`, draw); };
}

export default { render };

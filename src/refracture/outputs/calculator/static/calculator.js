// refracture calculator: builds the form from /api/model, posts the values to /api/predict and
// shows the risk, its contributions and a what-if curve. Talks to this server only.
"use strict";

const $ = (id) => document.getElementById(id);
let MODEL = null;

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  if (text) node.textContent = text;
  return node;
}

function fmt(x) {
  if (x === null || x === undefined) return "";
  return Math.abs(x) >= 100 ? x.toFixed(0) : Number(x.toPrecision(3)).toString();
}

function inHundred(p) {
  const n = 100 * p;
  if (n < 0.5) return "fewer than 1";
  if (n > 99.5) return "more than 99";
  return String(Math.round(n));
}

function fieldInput(f) {
  const id = "in-" + f.name;
  let input;
  if (f.kind === "category" || f.kind === "binary") {
    input = el("select", { id: id, name: f.name });
    const levels = f.kind === "binary" ? [["0", "no"], ["1", "yes"]] : f.levels.map((l) => [l, l]);
    if (f.imputed) levels.push(["", "unknown (imputed)"]);
    for (const [value, text] of levels) input.appendChild(el("option", { value: value }, text));
    if (f.default !== null) input.value = f.kind === "binary" ? String(Math.round(f.default)) : f.default;
  } else {
    input = el("input", {
      id: id, name: f.name, type: "number", step: "any", inputmode: "decimal",
      min: f.plausible ? f.plausible[0] : null, max: f.plausible ? f.plausible[1] : null,
    });
    if (f.default !== null) input.value = fmt(f.default);
  }
  return input;
}

function buildForm(info) {
  MODEL = info;
  const m = info.model;
  const name = m.name ? `${m.name} version ${m.version}` : m.uri;
  $("model-line").textContent =
    `${name}: ${m.label}; risk within ${m.horizon_days} days. ` +
    `Groups: low below ${Math.round(100 * m.risk_groups[0])} in 100, ` +
    `high from ${Math.round(100 * m.risk_groups[1])} in 100.`;
  for (const f of info.fields) {
    const box = el("div", { class: "field", id: "field-" + f.name });
    box.appendChild(el("label", { for: "in-" + f.name }, f.label + (f.unit ? ` (${f.unit})` : "")));
    box.appendChild(fieldInput(f));
    const hints = [];
    if (f.kind === "number" && f.plausible) hints.push(`accepted ${fmt(f.plausible[0])} to ${fmt(f.plausible[1])}`);
    if (f.training) hints.push(`patients of the model: ${fmt(f.training[0])} to ${fmt(f.training[1])}`);
    if (f.imaging) hints.push("empty if not measurable");
    if (f.imputed && f.kind === "number") hints.push("empty if unknown: imputed");
    if (hints.length) box.appendChild(el("span", { class: "hint" }, hints.join("; ")));
    (f.imaging ? $("imaging") : $("clinical")).appendChild(box);
    if (f.imaging) $("imaging").hidden = false;
    $("vary").appendChild(el("option", { value: f.name }, f.label));
  }
  if (info.patients.length) {
    $("loader").hidden = false;
    for (const p of info.patients) $("patient").appendChild(el("option", { value: p }, p));
  }
  document.body.dataset.ready = "1";
}

function values() {
  const out = {};
  for (const f of MODEL.fields) out[f.name] = $("in-" + f.name).value;
  return out;
}

function showRefused(problems) {
  const box = $("refused");
  box.textContent = "";
  box.appendChild(el("strong", {}, "No risk computed: please correct"));
  const list = el("ul");
  for (const [name, text] of Object.entries(problems)) {
    list.appendChild(el("li", {}, text));
    const field = $("field-" + name);
    if (field) {
      field.classList.add("bad");
      field.appendChild(el("span", { class: "problem" }, text));
    }
  }
  box.appendChild(list);
  box.hidden = false;
  $("answer").hidden = true;
  document.body.dataset.state = "refused";
}

function clearMarks() {
  for (const node of document.querySelectorAll(".field.bad")) node.classList.remove("bad");
  for (const node of document.querySelectorAll(".field .problem")) node.remove();
  $("refused").hidden = true;
}

function showAnswer(r) {
  const answer = $("answer");
  const days = MODEL.model.horizon_days;
  answer.dataset.risk = String(r.risk);
  answer.dataset.deathRisk = r.death_risk === null ? "" : String(r.death_risk);
  answer.dataset.lp = String(r.linear_predictor);
  answer.dataset.group = r.group;
  $("risk-pct").textContent = `${(100 * r.risk).toFixed(1)} %`;
  $("risk-words").textContent =
    `About ${inHundred(r.risk)} in 100 patients with these values have a new vertebral ` +
    `fracture within ${days} days.`;
  const group = $("group");
  group.className = "badge " + r.group;
  group.textContent = { low: "Low risk", intermediate: "Intermediate risk", high: "High risk" }[r.group];
  const [lo, hi] = MODEL.model.risk_groups.map((t) => Math.round(100 * t));
  $("group-words").textContent =
    { low: `below ${lo} in 100`, intermediate: `${lo} to ${hi} in 100`, high: `${hi} in 100 or more` }[r.group];
  $("death").hidden = r.death_risk === null;
  if (r.death_risk !== null) {
    $("death").textContent = `Risk of dying before a new fracture within ${days} days: ` +
      `${(100 * r.death_risk).toFixed(1)} %.`;
  }
  const warnings = $("warnings");
  warnings.textContent = "";
  for (const w of r.warnings) warnings.appendChild(el("li", {}, w));
  const table = $("contributions");
  table.textContent = "";
  $("no-terms").hidden = r.contributions.length > 0;
  const top = Math.max(1e-9, ...r.contributions.map((c) => Math.abs(c.value)));
  const shown = 8;  // the largest; the others one click away
  r.contributions.forEach((c, i) => {
    const row = el("tr", { "data-term": c.term, "data-value": String(c.value) });
    if (i >= shown) row.className = "more";
    row.appendChild(el("td", {}, c.words));
    row.appendChild(el("td", {}, c.value > 0 ? "raises" : "lowers"));
    const cell = el("td", { class: "effect" });
    const bar = el("div", { class: "bar" });
    const fill = el("div", { class: "fill " + (c.value > 0 ? "up" : "down") });
    fill.style.width = `${Math.round((100 * Math.abs(c.value)) / top)}%`;
    bar.appendChild(fill);
    cell.appendChild(bar);
    row.appendChild(cell);
    table.appendChild(row);
  });
  $("more-terms").hidden = r.contributions.length <= shown;
  $("more-terms").textContent = `show all ${r.contributions.length}`;
  table.classList.remove("all");
  answer.hidden = false;
  document.body.dataset.state = "answered";
}

function drawCurve(c) {
  const box = $("curve");
  box.textContent = "";
  if (!c || !c.x.length) return;
  const W = 520, H = 260, L = 48, R = 12, T = 12, B = 40;
  const numeric = c.kind === "number";
  const xs = numeric ? c.x : c.x.map((_, i) => i);
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  const yMax = Math.min(1, Math.max(0.05, ...c.risk) * 1.1);
  const sx = (x) => L + ((x - x0) / (x1 - x0 || 1)) * (W - L - R);
  const sy = (y) => H - B - (y / yMax) * (H - T - B);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `risk across ${c.label}`);
  svg.dataset.points = String(c.x.length);
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.appendChild(node);
    return node;
  };
  add("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B });
  add("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B });
  for (const y of [0, yMax / 2, yMax]) {
    add("text", { x: L - 6, y: sy(y) + 4, "text-anchor": "end" }, `${Math.round(100 * y)} %`);
  }
  const ticks = numeric ? [x0, (x0 + x1) / 2, x1] : xs;
  ticks.forEach((x, i) => {
    const label = numeric ? fmt(x) : (c.kind === "binary" ? ["no", "yes"][i] : c.x[i]);
    add("text", { x: sx(x), y: H - B + 16, "text-anchor": "middle" }, label);
  });
  add("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" },
      c.label + (c.unit ? ` (${c.unit})` : ""));
  const pts = xs.map((x, i) => `${sx(x).toFixed(1)},${sy(c.risk[i]).toFixed(1)}`).join(" ");
  add("polyline", { class: "line", points: pts });
  const here = numeric ? Number(c.current) : c.x.indexOf(c.kind === "binary" ? Number(c.current) : c.current);
  const k = numeric ? null : here;
  if (numeric && here >= x0 && here <= x1) {
    const r = Number($("answer").dataset.risk);
    add("circle", { class: "now", cx: sx(here), cy: sy(r), r: 5 });
  } else if (k !== null && k >= 0) {
    add("circle", { class: "now", cx: sx(k), cy: sy(c.risk[k]), r: 5 });
  }
  box.appendChild(svg);
}

async function calculate() {
  clearMarks();
  const response = await fetch("/api/predict", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ values: values(), vary: $("vary").value }),
  });
  const body = await response.json();
  if (response.status === 422) return showRefused(body.refused);
  if (!response.ok) return showRefused({ request: body.error || "the server refused the request" });
  if (body.status !== "ok") return showRefused({ model: body.error });
  showAnswer(body);
  drawCurve(body.curve);
}

async function loadPatient(id) {
  if (!id) return;
  const response = await fetch("/api/patient?id=" + encodeURIComponent(id));
  const body = await response.json();
  for (const f of MODEL.fields) {
    const v = body.values[f.name];  // null: not in the patient's row (or not measurable)
    $("in-" + f.name).value =
      v === null || v === undefined ? "" : f.kind === "binary" ? String(Math.round(v)) : String(v);
  }
  await calculate();
}

window.addEventListener("DOMContentLoaded", async () => {
  const response = await fetch("/api/model");
  buildForm(await response.json());
  $("inputs").addEventListener("submit", (e) => { e.preventDefault(); calculate(); });
  $("vary").addEventListener("change", calculate);
  $("more-terms").addEventListener("click", () => {
    $("contributions").classList.add("all");
    $("more-terms").hidden = true;
  });
  $("patient").addEventListener("change", (e) => loadPatient(e.target.value));
  // a link can open the page on a patient and a what-if: /?patient=P0001&vary=age
  const params = new URLSearchParams(window.location.search);
  if (params.get("vary")) $("vary").value = params.get("vary");
  if (params.get("patient")) {
    $("patient").value = params.get("patient");
    await loadPatient(params.get("patient"));
  } else if (params.has("calculate")) {
    await calculate();
  }
});

// allseg web page: upload an image, show the overlay with hoverable cell contours,
// a table of cells and download links. Plain JS, no build step, no external resources.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "allseg-api-key";
const SVG_NS = "http://www.w3.org/2000/svg";
let current = null; // the last successful /v1/predict response

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

function fmt(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function errorText(status, body) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) return body.detail.map((e) => e.msg).join("; ");
  return `HTTP ${status}`;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function setStatus(message) {
  $("status").textContent = message;
}

// The numbers a haematologist reads for one cell, as [label, value] pairs.
function cellFacts(cell) {
  const f = cell.features || {};
  return [
    ["cell", `#${cell.id}`],
    ["class", cell.class],
    ["P(blast)", fmt(cell.blast_probability, 2)],
    ["area", f.area_um2 == null ? `${cell.area_px} px` : `${fmt(f.area_um2, 1)} µm²`],
    ["N:C ratio", fmt(f.nc_ratio, 2)],
    ["circularity", fmt(f.circularity, 2)],
    ["nucleoli", f.nucleolus_count == null ? "–" : String(f.nucleolus_count)],
  ];
}

function fillDetails(target, cell) {
  target.replaceChildren();
  for (const [label, value] of cellFacts(cell)) {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = label;
    dd.textContent = value;
    target.append(dt, dd);
  }
}

function showTooltip(cell, event) {
  const tip = $("tooltip");
  fillDetails(tip, cell);
  tip.hidden = false;
  moveTooltip(event);
}

function moveTooltip(event) {
  const tip = $("tooltip");
  const box = tip.parentElement.getBoundingClientRect();
  tip.style.left = `${event.clientX - box.left + 14}px`;
  tip.style.top = `${event.clientY - box.top + 14}px`;
}

function select(id) {
  const cell = current.cells.find((c) => c.id === id);
  if (!cell) return;
  document.querySelectorAll(".selected").forEach((el) => el.classList.remove("selected"));
  document.querySelectorAll(`[data-id="${id}"]`).forEach((el) => el.classList.add("selected"));
  fillDetails($("details"), cell);
  const row = document.querySelector(`#table tr[data-id="${id}"]`);
  if (row) row.scrollIntoView({ block: "nearest" });
}

function drawContours(result) {
  const svg = $("cells");
  svg.replaceChildren();
  for (const cell of result.cells) {
    const polygon = document.createElementNS(SVG_NS, "polygon");
    polygon.setAttribute("points", cell.contour.map((p) => p.join(",")).join(" "));
    polygon.setAttribute("class", `cell ${cell.class}`);
    polygon.dataset.id = cell.id;
    const title = document.createElementNS(SVG_NS, "title");
    title.textContent = `cell ${cell.id}: ${cell.class}, P(blast) ${fmt(cell.blast_probability, 2)}`;
    polygon.append(title);
    polygon.addEventListener("mouseenter", (e) => showTooltip(cell, e));
    polygon.addEventListener("mousemove", moveTooltip);
    polygon.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
    polygon.addEventListener("click", () => select(cell.id));
    svg.append(polygon);
  }
}

// The overlay PNG has a header strip above the image: shift the SVG's view to match.
function alignContours(result) {
  const img = $("overlay");
  const header = img.naturalHeight - result.height;
  $("cells").setAttribute("viewBox", `0 ${-header} ${result.width} ${img.naturalHeight}`);
}

function fillTable(result) {
  const body = document.querySelector("#table tbody");
  body.replaceChildren();
  for (const cell of result.cells) {
    const f = cell.features || {};
    const row = document.createElement("tr");
    row.dataset.id = cell.id;
    row.className = cell.class;
    const values = [cell.id, cell.class, fmt(cell.blast_probability, 2), fmt(f.area_um2, 1),
      fmt(f.nc_ratio, 2), fmt(f.circularity, 2), f.nucleolus_count ?? "–"];
    for (const value of values) {
      const td = document.createElement("td");
      td.textContent = value;
      row.append(td);
    }
    row.addEventListener("click", () => select(cell.id));
    body.append(row);
  }
  if (!result.cells.length) {
    body.innerHTML = '<tr><td colspan="7" class="muted">No leukocytes found.</td></tr>';
  }
}

function render(result) {
  current = result;
  const verdict = $("verdict");
  const positive = result.verdict === "ALL suspected";
  verdict.className = `verdict ${positive ? "positive" : "negative"}`;
  verdict.textContent = `${result.verdict}: ${result.blast_count} blast(s) among ` +
    `${result.leukocyte_count} leukocyte(s) · scale ${fmt(result.um_per_px, 3)} µm/px ` +
    `(${result.scale_source}${result.scale_confidence !== null &&
      result.scale_confidence < 0.5 ? ", unsure: give it if you know it" : ""}) · ` +
    (result.monochrome ? "no colour (monochrome camera?): fewer leukocytes found · " : "") +
    result.image;
  $("details").innerHTML = '<dd class="muted">Hover or click a cell.</dd>';
  drawContours(result);
  fillTable(result);
  const img = $("overlay");
  img.onload = () => alignContours(result);
  img.src = `data:image/png;base64,${result.overlay_png_base64}`;
  $("result").hidden = false;
}

async function upload(file) {
  showError("");
  setStatus(`Analysing ${file.name} (${(file.size / 1e6).toFixed(1)} MB)…`);
  const params = new URLSearchParams({ overlay: "true" });
  const scale = $("um-per-px").value.trim();
  if (scale) params.set("um_per_px", scale);
  const form = new FormData();
  form.append("file", file);
  try {
    const response = await fetch(`v1/predict?${params}`,
      { method: "POST", body: form, headers: authHeaders() });
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new Error(`${file.name}: ${errorText(response.status, body)}`);
    render(body);
    setStatus(`Done in ${fmt(body.timings && body.timings.total, 2)} s.`);
  } catch (err) {
    setStatus("");
    showError(err.message || String(err));
  }
}

// Downloads go through fetch so that the API key header is sent.
async function download(event) {
  event.preventDefault();
  if (!current) return;
  const suffix = event.currentTarget.dataset.kind;
  try {
    const response = await fetch(`v1/results/${current.id}${suffix}`, { headers: authHeaders() });
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      throw new Error(`download failed: ${errorText(response.status, body)}`);
    }
    const url = URL.createObjectURL(await response.blob());
    const link = document.createElement("a");
    const stem = current.image.replace(/\.[^.]*$/, "");
    link.href = url;
    link.download = suffix === "/overlay.png" ? `${stem}_overlay.png` : `${stem}${suffix}`;
    link.click();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  } catch (err) {
    showError(err.message || String(err));
  }
}

async function showModel() {
  try {
    const response = await fetch("v1/model", { headers: authHeaders() });
    if (!response.ok) { $("model").textContent = ""; return; }
    const model = await response.json();
    $("model").textContent = `Model: ${model.name} (allseg ${model.allseg_version}, ` +
      `${model.backend}), canonical scale ${model.canonical_um_per_px} µm/px`;
  } catch (err) {
    $("model").textContent = "";
  }
}

function setup() {
  const key = $("api-key");
  key.value = sessionStorage.getItem(KEY_STORE) || "";
  key.addEventListener("change", () => {
    if (key.value.trim()) sessionStorage.setItem(KEY_STORE, key.value.trim());
    else sessionStorage.removeItem(KEY_STORE);
    showModel();
  });
  $("file").addEventListener("change", (e) => {
    if (e.target.files.length) upload(e.target.files[0]);
    e.target.value = "";
  });
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]);
  });
  // A file dropped beside the zone must not make the browser navigate away.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  document.querySelectorAll(".downloads a").forEach((a) => a.addEventListener("click", download));
  showModel();
}

document.addEventListener("DOMContentLoaded", setup);

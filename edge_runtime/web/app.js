// edge-runtime operator page: plain JS, no build step, no network beyond this daemon.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = {
  products: [], selected: null, job: null, losses: [], feed: [],
  thr: { product: null, scores: [], calibrated: null, value: null, max: 1 },
};
const fmt = (x, d = 4) => (x === null || x === undefined ? "–" : Number(x).toPrecision(d));
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// ---- API: the token is asked once when the daemon needs one --------------------------
async function api(method, path, body, retried) {
  const headers = {};
  const token = localStorage.getItem("edge-token");
  if (token) headers.Authorization = `Bearer ${token}`;
  let payload = body;
  if (body && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const res = await fetch(path, { method, headers, body: payload });
  if (res.status === 401 && !retried) {
    const given = prompt("This daemon needs its API token (api.token):");
    if (given) { localStorage.setItem("edge-token", given.trim()); return api(method, path, body, true); }
  }
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail; } catch (e) { /* not JSON */ }
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  if (res.status === 204) return null;
  return res.json();
}

function toast(text, error) {
  const t = $("#toast");
  t.textContent = text;
  t.className = "show" + (error ? " error" : "");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.className = ""; }, error ? 6000 : 3000);
}

const guard = (fn) => async (...args) => {
  try { await fn(...args); } catch (e) { toast(e.message, true); }
};

// ---- navigation ------------------------------------------------------------------------
const loaders = {};
function show() {
  const view = (location.hash || "#line").slice(1);
  document.querySelectorAll(".view").forEach((v) => { v.hidden = v.id !== `view-${view}`; });
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === view));
  if (loaders[view]) guard(loaders[view])();
}
window.addEventListener("hashchange", show);

// ---- 1. line view ----------------------------------------------------------------------
function verdictClass(v) { return v === "reject" ? "reject" : v === "pass" ? "pass" : ""; }

function showInspection(i) {
  const v = $("#latest-verdict");
  v.textContent = i.verdict.toUpperCase();
  v.className = `verdict big ${verdictClass(i.verdict)}`;
  const img = $("#latest-map");
  img.src = i.map_url;
  img.hidden = false;
  img.dataset.inspection = i.id;
  $("#latest-score").textContent = `${fmt(i.score)} ${i.score > i.threshold ? ">" : "≤"} ${fmt(i.threshold)}`;
  $("#latest-product").textContent = i.product;
  $("#latest-latency").textContent = `${fmt(i.latency_ms, 3)} ms`;
  $("#latest-model").textContent = i.model_version;
  const li = document.createElement("li");
  li.dataset.inspection = i.id;
  li.innerHTML = `<span class="verdict ${verdictClass(i.verdict)}">${esc(i.verdict)}</span>
    <span>#${i.id}</span><span>${esc(i.product)}</span><span>${fmt(i.score, 3)}</span>`;
  const feed = $("#feed");
  feed.prepend(li);
  while (feed.children.length > 50) feed.lastChild.remove();
  refreshCounts();
}

let countsTimer = null;
function refreshCounts() {  // at most once a second, however fast the line runs
  if (countsTimer) return;
  countsTimer = setTimeout(guard(async () => {
    countsTimer = null;
    const rows = await api("GET", "/inspections/counts");
    $("#counts tbody").innerHTML = rows.map((r) => `<tr><td>${esc(r.product)}</td>
      <td>${r.pass}</td><td>${r.reject}</td>
      <td>${r.pass_recent} pass / ${r.reject_recent} reject</td></tr>`).join("");
  }), 300);
}

loaders.line = async () => {
  refreshCounts();
  const page = await api("GET", "/inspections?limit=1");
  if (page.inspections.length && !$("#latest-map").dataset.inspection) {
    const feed = await api("GET", "/inspections?limit=20");
    feed.inspections.reverse().forEach(showInspection);
  }
  const status = await api("GET", "/status");
  const link = status.serial_bridge;
  $("#serial-state").textContent = link
    ? `line controller ${link.url}: ${link.state}${link.last_error ? " — " + link.last_error : ""}`
    : "no line controller configured";
};

// ---- the event stream: one connection, every view listens ------------------------------
function connect() {
  const source = new EventSource("/events");
  const pill = $("#link-state");
  source.onopen = () => { pill.textContent = "live"; pill.className = "pill ok"; };
  source.onerror = () => { pill.textContent = "reconnecting…"; pill.className = "pill bad"; };
  source.addEventListener("inspection", (e) => showInspection(JSON.parse(e.data)));
  source.addEventListener("job", (e) => showJob(JSON.parse(e.data)));
  source.addEventListener("model", (e) => {
    const m = JSON.parse(e.data);
    toast(m.rollback ? `rolled back to ${m.version}` : `model ${m.version} is live`);
    if (!$("#view-models").hidden) guard(loaders.models)();
  });
  source.addEventListener("review", () => guard(loadProducts)());
  source.addEventListener("product", () => guard(loadProducts)());
}

// ---- 2. products -----------------------------------------------------------------------
async function loadProducts() {
  state.products = await api("GET", "/products");
  $("#products tbody").innerHTML = state.products.map((p) => {
    const override = p.threshold_override.active ? p.threshold_override.image : null;
    const t = override ?? (p.thresholds && p.thresholds.image);
    return `<tr data-id="${p.id}" class="${p.id === state.selected ? "selected" : ""}">
      <td>${esc(p.name)}</td><td class="count">${p.captures}</td>
      <td>${p.trained ? "yes" : "no"}</td>
      <td>${t ? fmt(t) : "–"}${override ? " (operator)" : ""}${p.threshold_override.recalibrated
        ? ` <span class="warn" title="set on an earlier calibration; not applied">(override ${fmt(p.threshold_override.image)} set aside)</span>` : ""}</td>
      <td><button class="small" data-open="${p.id}">Open</button></td></tr>`;
  }).join("");
  for (const sel of ["#teach-product", "#thr-product"]) {
    const el = $(sel);
    const keep = el.value;
    el.innerHTML = state.products.map((p) => `<option value="${p.id}">${esc(p.name)}</option>`).join("");
    if (keep && state.products.some((p) => String(p.id) === keep)) el.value = keep;
  }
  if (state.selected) {
    const p = state.products.find((x) => x.id === state.selected);
    if (p) $("#capture-count").textContent = p.captures; else closeProduct();
  }
}
loaders.products = loadProducts;

function closeProduct() { state.selected = null; $("#product-detail").hidden = true; }

async function openProduct(id) {
  state.selected = id;
  const p = state.products.find((x) => x.id === id);
  $("#detail-name").textContent = p.name;
  $("#product-detail").hidden = false;
  await loadProducts();
  await loadGallery();
}

async function loadGallery() {
  const id = state.selected;
  const page = await api("GET", `/products/${id}/captures?limit=200`);
  $("#capture-count").textContent = page.count;
  $("#gallery").innerHTML = page.captures.map((c) => `<figure data-capture="${c.id}">
      <img loading="lazy" alt="${esc(c.name || "capture " + c.id)}"
           src="/products/${id}/captures/${c.id}/image?thumbnail=160">
      <figcaption title="${esc(c.name)}">${esc(c.name || c.source)}</figcaption>
      <button class="small danger" data-remove="${c.id}" title="remove this capture">✕</button>
    </figure>`).join("");
}

async function upload(files) {
  if (!state.selected || !files.length) return;
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  const out = await api("POST", `/products/${state.selected}/captures`, form);
  toast(`${out.count} capture(s) added`);
  await loadProducts();
  await loadGallery();
}

function wireProducts() {
  $("#create-form").addEventListener("submit", guard(async (e) => {
    e.preventDefault();
    const p = await api("POST", "/products", {
      name: $("#create-name").value.trim(), description: $("#create-description").value });
    $("#create-name").value = "";
    toast(`product ${p.name} created`);
    await loadProducts();
    await openProduct(p.id);
  }));
  $("#products").addEventListener("click", guard(async (e) => {
    const id = e.target.dataset.open || e.target.closest("tr")?.dataset.id;
    if (id) await openProduct(Number(id));
  }));
  $("#gallery").addEventListener("click", guard(async (e) => {
    const id = e.target.dataset.remove;
    if (!id) return;
    await api("DELETE", `/products/${state.selected}/captures/${id}`);
    await loadProducts();
    await loadGallery();
  }));
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", guard(async (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    await upload([...e.dataTransfer.files]);
  }));
  $("#file-input").addEventListener("change", guard(async (e) => {
    await upload([...e.target.files]);
    e.target.value = "";
  }));
  $("#grab").addEventListener("click", guard(async () => {
    const n = Number($("#frames").value) || 1;
    const out = await api("POST", `/products/${state.selected}/captures?camera_frames=${n}`);
    toast(`${out.count} frame(s) captured`);
    await loadProducts();
    await loadGallery();
  }));
  $("#delete-product").addEventListener("click", guard(async () => {
    const p = state.products.find((x) => x.id === state.selected);
    if (!confirm(`Delete ${p.name}?\n\n${$("#delete-consequences").textContent.trim()}`)) return;
    const out = await api("DELETE", `/products/${p.id}`);
    toast(`${out.name} deleted${out.in_live_model ? "; the live model forgets it at the next training" : ""}`);
    closeProduct();
    await loadProducts();
  }));
}

// ---- 3. teach --------------------------------------------------------------------------
function showJob(job) {
  if (state.job && job.id !== state.job.id && !["queued", "running"].includes(job.status)) return;
  if (!state.job || job.id !== state.job.id) state.losses = [];
  state.job = job;
  const bar = $("#progress-bar");
  const pct = job.status === "succeeded" ? 100 : job.percent || 0;
  bar.style.width = `${pct}%`;
  bar.setAttribute("aria-valuenow", Math.round(pct));
  bar.className = job.status === "succeeded" ? "done" : ["failed", "cancelled"].includes(job.status) ? "failed" : "";
  const eta = job.eta_seconds !== null && job.eta_seconds !== undefined && job.status === "running"
    ? `, about ${Math.ceil(job.eta_seconds)} s left` : "";
  const epoch = job.epochs ? `, epoch ${job.epoch}/${job.epochs}` : "";
  const loss = job.loss !== null && job.loss !== undefined ? `, loss ${fmt(job.loss, 3)}` : "";
  $("#job-state").textContent = `job ${job.id}: ${job.status} — ${job.phase || "queued"} ` +
    `${Math.round(pct)}%${epoch}${loss}${eta}${job.error ? " — " + job.error : ""}`;
  $("#job-state").dataset.status = job.status;
  $("#cancel").disabled = !["queued", "running"].includes(job.status);
  $("#train").disabled = ["queued", "running"].includes(job.status);
  if (job.loss !== null && job.loss !== undefined && job.epoch) {
    const x = (job.epoch - 1) * (job.steps || 1) + job.step;
    if (!state.losses.length || state.losses[state.losses.length - 1][0] !== x) state.losses.push([x, job.loss]);
    drawLoss();
  }
  if (job.status === "succeeded" && job.result) showResult(job.result);
  if (!["queued", "running"].includes(job.status)) guard(loadProducts)();
}

function fitCanvas(c) {
  if (c.clientWidth && c.width !== c.clientWidth) c.width = c.clientWidth;
  if (c.clientHeight && c.height !== c.clientHeight) c.height = c.clientHeight;
}

function drawLoss() {
  const c = $("#loss");
  fitCanvas(c);
  const g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const pts = state.losses;
  g.fillStyle = "#9aa4ae";
  g.font = "14px sans-serif";
  if (pts.length < 2) { g.fillText("the loss curve appears after two training steps", 12, 20); return; }
  const xs = pts.map((p) => p[0]);
  const ys = pts.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  g.strokeStyle = "#2f7de1";
  g.lineWidth = 2;
  g.beginPath();
  pts.forEach(([x, y], i) => {
    const px = 10 + ((x - x0) / (x1 - x0 || 1)) * (c.width - 20);
    const py = c.height - 10 - ((y - y0) / (y1 - y0 || 1)) * (c.height - 30);
    if (i) g.lineTo(px, py); else g.moveTo(px, py);
  });
  g.stroke();
  g.fillText(`training loss: ${fmt(ys[0], 3)} at the start, ${fmt(ys[ys.length - 1], 3)} now ` +
    `(${pts.length} points)`, 12, 20);
}

function showResult(r) {
  const changes = Object.entries(r.threshold_changes || {});
  const aside = r.overrides_set_aside || {};
  const products = Object.entries(r.thresholds || {}).map(([name, t]) =>
    `<li>${esc(name)}: threshold ${fmt(t.image)} (calibrated on ${t.normal_count} held-out good parts)</li>`).join("");
  $("#job-result").innerHTML = `<h2>Model ${esc(r.version)} is live</h2><ul>${products}</ul>` +
    changes.map(([name, c]) => `<div class="change" data-product="${esc(name)}">
      The threshold of <b>${esc(name)}</b> moved from ${fmt(c.old)} to ${fmt(c.new)}
      (×${fmt(c.ratio, 3)}): its verdicts may change.${name in aside
        ? ` Its operator override (${fmt(aside[name])}) was set on the old scale and is set aside.` : ""}
      <button class="small" data-keep="${esc(name)}" data-value="${c.old}">Keep the old threshold</button>
    </div>`).join("");
}

function wireTeach() {
  $("#train").addEventListener("click", guard(async () => {
    const id = $("#teach-product").value;
    const job = await api("POST", `/products/${id}/train`, { epochs: Number($("#teach-epochs").value) || 10 });
    $("#job-result").innerHTML = "";
    showJob(job);
  }));
  $("#cancel").addEventListener("click", guard(async () => {
    if (state.job) showJob(await api("POST", `/jobs/${state.job.id}/cancel`));
  }));
  $("#job-result").addEventListener("click", guard(async (e) => {
    const name = e.target.dataset.keep;
    if (!name) return;
    const p = state.products.find((x) => x.name === name);
    await api("PUT", `/products/${p.id}/threshold`, { image: Number(e.target.dataset.value) });
    e.target.closest(".change").textContent = `${name} keeps its old threshold ${fmt(e.target.dataset.value)}.`;
    await loadProducts();
  }));
}

loaders.teach = async () => {
  await loadProducts();
  const jobs = await api("GET", "/jobs?limit=1");
  if (jobs.length && (!state.job || state.job.id !== jobs[0].id)) showJob(jobs[0]);
};

// ---- 4. threshold: drag a line over the recent scores, see what it would decide -------
async function loadThreshold() {
  await loadProducts();
  const id = Number($("#thr-product").value);
  const p = state.products.find((x) => x.id === id);
  if (!p) return;
  const page = await api("GET", `/inspections?product_id=${id}&limit=200`);
  const t = state.thr;
  t.product = p;
  // only the scores of the path that answers now: a head's and the student's differ in scale
  const head = Boolean(p.served_by) && p.served_by !== "student";
  t.scores = page.inspections
    .filter((i) => head === String(i.model_version).startsWith("head-"))
    .map((i) => i.score);
  t.normals = p.thresholds ? p.thresholds.normal_scores || [] : [];
  t.calibrated = p.thresholds ? p.thresholds.image : null;
  const override = p.threshold_override.active ? p.threshold_override.image : null;
  t.current = override || t.calibrated;
  t.value = t.current;
  t.max = Math.max(...t.scores, ...t.normals, (t.current || 0) * 2, 1e-6) * 1.1;
  $("#thr-current").textContent = !t.current ? "not trained yet"
    : override
      ? `in use: ${fmt(t.current)} set by the operator (calibrated: ${fmt(t.calibrated)})`
      : `in use: ${fmt(t.current)}, calibrated (answered by the ` +
        `${p.served_by === "student" ? "student" : `${p.served_by} head`})` +
        overrideAside(p.threshold_override);
  setThreshold(t.value || t.max / 2);
}
loaders.threshold = loadThreshold;

// why an override that is set does not decide: another path answers, or a recalibration
function overrideAside(o) {
  if (!o.image) return "";
  if (o.recalibrated) {
    return `; the override of ${fmt(o.image)} was set when the calibrated threshold was ` +
      `${fmt(o.set_on.image)}: it has been recalibrated since, so the override is set aside ` +
      "(set it again to apply it on the new scale)";
  }
  return `; the override of ${fmt(o.image)} was set for the ${o.set_for}, which does not answer now`;
}

function setThreshold(value) {
  const t = state.thr;
  t.value = Math.max(t.max / 1000, Math.min(value, t.max));
  $("#thr-range").value = Math.round((t.value / t.max) * 1000);
  $("#thr-value").textContent = fmt(t.value);
  const rejectNow = t.scores.filter((s) => s > t.current).length;
  const rejectNew = t.scores.filter((s) => s > t.value).length;
  const changed = t.scores.filter((s) => (s > t.current) !== (s > t.value)).length;
  const normalsOut = t.normals.filter((s) => s > t.value).length;
  $("#thr-preview").textContent = (t.scores.length
    ? `At ${fmt(t.value)}: ${rejectNew} of the last ${t.scores.length} parts would be rejected ` +
      `(now ${rejectNow}); ${changed} decision(s) would change.`
    : "No inspections of this product yet.") + (t.normals.length
    ? ` ${normalsOut} of ${t.normals.length} held-out good parts would be rejected.` : "");
  $("#thr-preview").dataset.rejects = rejectNew;
  drawHistogram();
}

function drawHistogram() {
  const t = state.thr;
  const c = $("#hist");
  fitCanvas(c);
  const g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const bins = Math.max(10, Math.min(60, Math.floor(c.width / 16)));
  const counts = new Array(bins).fill(0);
  t.scores.forEach((s) => { counts[Math.min(bins - 1, Math.floor((s / t.max) * bins))] += 1; });
  const normals = new Array(bins).fill(0);
  t.normals.forEach((s) => { normals[Math.min(bins - 1, Math.floor((s / t.max) * bins))] += 1; });
  const top = Math.max(...counts, ...normals, 1);
  const w = c.width / bins;
  counts.forEach((n, i) => {
    const lo = (i / bins) * t.max;
    g.fillStyle = lo >= t.value ? "#c62828" : "#1f8f4e";
    const h = (n / top) * (c.height - 40);
    g.fillRect(i * w + 1, c.height - 20 - h, w - 2, h);
  });
  g.strokeStyle = "#7fb3ff";  // held-out good parts of the last training: outlined
  g.lineWidth = 2;
  normals.forEach((n, i) => {
    if (!n) return;
    const h = (n / top) * (c.height - 40);
    g.strokeRect(i * w + 2, c.height - 20 - h, w - 4, h);
  });
  const x = (t.value / t.max) * c.width;
  g.strokeStyle = "#fff";
  g.lineWidth = 3;
  g.beginPath(); g.moveTo(x, 0); g.lineTo(x, c.height - 20); g.stroke();
  if (t.current) {
    const xc = (t.current / t.max) * c.width;
    g.setLineDash([6, 4]); g.strokeStyle = "#d98c00";
    g.beginPath(); g.moveTo(xc, 0); g.lineTo(xc, c.height - 20); g.stroke(); g.setLineDash([]);
  }
  g.fillStyle = "#e8eaed";
  g.font = "16px sans-serif";
  g.fillText(`threshold ${fmt(t.value)}: pass left, reject right; dashed: in use; ` +
    "filled: recent parts; blue outline: held-out good parts", 8, 18);
  g.fillStyle = "#9aa4ae";
  g.fillText("0", 2, c.height - 4);
  g.fillText(fmt(t.max, 3), c.width - 60, c.height - 4);
}

function wireThreshold() {
  const c = $("#hist");
  let dragging = false;
  const at = (e) => {
    const r = c.getBoundingClientRect();
    return ((e.clientX - r.left) / r.width) * state.thr.max;
  };
  c.addEventListener("pointerdown", (e) => { dragging = true; c.setPointerCapture(e.pointerId); setThreshold(at(e)); });
  c.addEventListener("pointermove", (e) => { if (dragging) setThreshold(at(e)); });
  c.addEventListener("pointerup", () => { dragging = false; });
  $("#thr-range").addEventListener("input", (e) => setThreshold((e.target.value / 1000) * state.thr.max));
  $("#thr-product").addEventListener("change", guard(loadThreshold));
  $("#thr-apply").addEventListener("click", guard(async () => {
    await api("PUT", `/products/${state.thr.product.id}/threshold`, { image: state.thr.value });
    toast(`threshold of ${state.thr.product.name} set to ${fmt(state.thr.value)}`);
    await loadThreshold();
  }));
  $("#thr-reset").addEventListener("click", guard(async () => {
    await api("DELETE", `/products/${state.thr.product.id}/threshold`);
    toast(`${state.thr.product.name} uses its calibrated threshold again`);
    await loadThreshold();
  }));
}

// ---- 5. review -------------------------------------------------------------------------
loaders.review = async () => {
  const page = await api("GET", "/inspections?limit=200");
  const items = page.inspections.filter((i) => !i.label &&
    (i.verdict === "reject" || i.score > 0.8 * i.threshold)).slice(0, 24);
  $("#review-list").innerHTML = items.length ? items.map((i) => `<figure data-inspection="${i.id}">
      ${i.map_available ? `<img src="${i.map_url}" alt="overlay of inspection ${i.id}"
           onerror="this.replaceWith(Object.assign(document.createElement('p'),{textContent:'map no longer kept'}))">`
        : "<p>map no longer kept</p>"}
      <figcaption><span class="verdict ${verdictClass(i.verdict)}">${esc(i.verdict)}</span>
        #${i.id} ${esc(i.product)} · ${fmt(i.score, 3)} / ${fmt(i.threshold, 3)}</figcaption>
      <div class="row"><button class="ok" data-label="fine">This part is fine</button>
        <button class="danger" data-label="defective">This part is defective</button></div>
    </figure>`).join("") : "<p>Nothing to review.</p>";
};

function wireReview() {
  $("#review-list").addEventListener("click", guard(async (e) => {
    const label = e.target.dataset.label;
    if (!label) return;
    const fig = e.target.closest("figure");
    const out = await api("POST", `/inspections/${fig.dataset.inspection}/review`, { label });
    fig.querySelector(".row").textContent = label === "fine"
      ? `added to the good captures (${out.captures} now)` : "kept as a defective example";
    toast(label === "fine" ? `part added: ${out.captures} captures` : "kept as a defective example");
    await loadProducts();
  }));
}

// ---- 6. models -------------------------------------------------------------------------
loaders.models = async () => {
  const versions = await api("GET", "/models");
  $("#models tbody").innerHTML = versions.map((v) => `<tr data-version="${esc(v.version)}">
    <td>${esc(v.version)}${v.live ? ' <span class="pill ok">live</span>' : ""}</td>
    <td>${new Date(v.created_at * 1000).toLocaleString()}</td>
    <td>${v.products.map(esc).join(", ")}</td>
    <td>${v.training.job ?? "–"}</td>
    <td>${esc(v.training.product ?? "")}${v.training.images ? ` · ${v.training.images} images` : ""}${v.training.epochs_run ? ` · ${v.training.epochs_run} epochs (best ${v.training.best_epoch})` : ""}${v.training.seconds ? ` · ${Math.round(v.training.seconds)} s` : ""}</td>
    <td>${v.live ? "" : `<button class="small" data-promote="${esc(v.version)}">Roll back to this</button>`}</td>
  </tr>`).join("");
};

function wireModels() {
  $("#models").addEventListener("click", guard(async (e) => {
    const version = e.target.dataset.promote;
    if (!version || !confirm(`Serve ${version} from now on?`)) return;
    await api("POST", `/models/${version}/promote`);
    await loaders.models();
  }));
}

// ---- 7. system -------------------------------------------------------------------------
loaders.system = async () => {
  const s = await api("GET", "/status");
  const lat = s.inference_latency || {};
  const store = s.replay_store;
  const replay = store ? Object.entries(store.products).map(([n, p]) =>
    `${esc(n)}: ${(p.payload_bytes / 2 ** 20).toFixed(2)} MB (${p.samples})`).join(", ") + ` · codec ${esc(store.codec)}` : "empty";
  const headMacs = Object.values(s.heads?.products || {}).map((h) => h.macs).filter(Boolean);
  const macs = [s.macs ? `${(s.macs.total / 1e6).toFixed(1)} M student` : "",
    headMacs.length ? `${(Math.max(...headMacs) / 1e6).toFixed(1)} M head` : ""];
  const rows = [
    ["model version", s.model_version ?? "none"],
    ["API RAM", `${s.rss_mb} MB`],
    ["training worker", s.job ? `job ${s.job.id} ${s.job.phase} ${Math.round(s.job.percent || 0)}%` : "idle"],
    ["latency p50 / p95 / p99", lat.count ? `${lat.p50_ms} / ${lat.p95_ms} / ${lat.p99_ms} ms (${lat.count})` : "no inspections yet"],
    ["MACs per part", macs.filter(Boolean).join(" · ") || "–"],
    ["replay store", replay],
    ["camera", `${s.camera.kind}${s.camera.error ? " — " + s.camera.error : ""}`],
    ["uptime", `${Math.round(s.uptime_seconds)} s`],
    ["version", s.version],
  ];
  $("#system").innerHTML = rows.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("");
};
setInterval(() => { if (!$("#view-system").hidden) guard(loaders.system)(); }, 5000);

// ---- start -----------------------------------------------------------------------------
wireProducts();
wireTeach();
wireThreshold();
wireReview();
wireModels();
connect();
guard(loadProducts)();
show();

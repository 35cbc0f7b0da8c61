// patchlens explorer: a thin client of the JSON API under /api (no build step).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, image: null, hidden: new Set(), grid: 8, predictSeq: 0, job: null, poll: null, maps: [] };

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) {
    const detail = body && body.detail;
    const text = typeof detail === "string" ? detail
      : Array.isArray(detail) ? detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ")
      : `${response.status} ${response.statusText}`;
    throw new Error(text);
  }
  return body;
}

function showError(err) {
  const box = $("message");
  box.textContent = err.message || String(err);
  box.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { box.hidden = true; }, 8000);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) node.append(c);
  return node;
}

// ---- 1. image and what-if ------------------------------------------------------------

function setImage(info) {
  state.image = info;
  state.hidden.clear();
  $("photo").src = info.url;
  $("stage").classList.remove("empty");
  $("grid").style.setProperty("--mean-color", `rgb(${info.mean_color.join(",")})`);
  document.body.classList.add("has-image");
  buildGrid();
  showDetections(info.predictions);
  showPredictions(info.predictions, false);
  $("pred-note").textContent = `${info.name}, ${info.width}×${info.height}`;
  state.maps = [];
  $("results").replaceChildren();  // maps of the previous image do not belong to this one
  setStatus("");
  refreshTopkChoices();
}

function setStatus(text, isError = false) {
  $("job-status").textContent = text;
  $("job-status").classList.toggle("error", isError);
}

function buildGrid() {
  const grid = $("grid");
  grid.replaceChildren();
  grid.style.gridTemplateColumns = `repeat(${state.grid}, 1fr)`;
  grid.style.gridTemplateRows = `repeat(${state.grid}, 1fr)`;
  for (let i = 0; i < state.grid * state.grid; i++) {
    grid.append(el("button", { class: "cell", "data-patch": i, title: `patch ${i}`, onclick: () => togglePatch(i) }));
  }
}

function togglePatch(i) {
  if (state.hidden.has(i)) state.hidden.delete(i); else state.hidden.add(i);
  updateWhatIf();
}

async function updateWhatIf() {
  $("grid").dataset.baseline = $("baseline").value;
  for (const cell of $("grid").children) {
    cell.classList.toggle("off", state.hidden.has(Number(cell.dataset.patch)));
  }
  const seq = ++state.predictSeq;  // answers can arrive out of order: keep only the latest
  try {
    const body = await api(`/api/images/${state.image.id}/predict`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ hidden: [...state.hidden], grid: state.grid, baseline: $("baseline").value }),
    });
    if (seq === state.predictSeq) showPredictions(body.predictions, state.hidden.size > 0);
  } catch (err) { showError(err); }
}

function changeText(p) {
  const points = (p.change || 0) * 100;
  if (Math.abs(points) < 0.005) return el("span", { class: "change", text: "(unchanged)" });
  const sign = points > 0 ? "+" : "−";
  return el("span", { class: `change ${points > 0 ? "up" : "down"}`,
    title: `was ${(p.original * 100).toFixed(2)} % on the original image`,
    text: `${sign}${Math.abs(points).toFixed(2)} pts (was ${(p.original * 100).toFixed(2)} %)` });
}

// A detector's detections as boxes over the photo (percent of its size, so they follow its scaling);
// clicking one explains it. Those under the model's minimum score are drawn dashed.
function isDetector() { return Boolean(state.info && state.info.model.detector); }

function boxStyle(box) {
  const w = state.image.width, h = state.image.height;
  return `left:${(100 * box[0] / w).toFixed(3)}%;top:${(100 * box[1] / h).toFixed(3)}%;` +
    `width:${(100 * (box[2] - box[0]) / w).toFixed(3)}%;height:${(100 * (box[3] - box[1]) / h).toFixed(3)}%`;
}

function showDetections(preds) {
  const layer = $("boxes");
  layer.replaceChildren();
  if (!isDetector()) return;
  const least = state.info.model.min_score ?? 0.5;
  for (const p of preds.slice(0, 30)) {
    layer.append(el("button", {
      class: `det${p.prob < least ? " weak" : ""}`, "data-detection": p.index, style: boxStyle(p.box),
      title: `detection ${p.index}: ${p.label}, score ${p.prob.toFixed(3)}; click to explain it`,
      onclick: () => { explainThis(p); run(); } },
      el("span", { class: "tag", text: `${p.label} ${p.prob.toFixed(2)}` })));
  }
}

// Clicking a prediction makes it the target: a multi-label model's present labels can each be explained,
// a detector's detections by their number.
function explainThis(p) {
  if (p.box) { $("target").value = String(p.index); $("target").focus(); return; }
  const shared = state.info && state.info.classNames && state.info.classNames.filter((n) => n === p.label).length > 1;
  $("target").value = shared ? String(p.index) : p.label;
  $("target").focus();
}

function showPredictions(preds, changed) {
  const list = $("preds");
  list.classList.toggle("changed", changed);
  const multi = state.info && state.info.model.multi_label;
  const top = multi || isDetector() ? preds.length : Math.min(5, preds.length);
  list.replaceChildren(...preds.map((p, i) => el("li", {
    "data-index": p.index, class: [i >= top ? "dropped" : "", p.present ? "present" : ""].join(" ").trim(),
    title: "click to explain this one", onclick: () => explainThis(p) },
    el("span", { class: "label", text: p.box ? `${p.label} · detection ${p.index}` : p.label }),
    el("span", { class: "bar", style: `width:${Math.max(1, Math.round(p.prob * 160))}px` }),
    el("span", { class: "prob", text: p.box ? `score ${p.prob.toFixed(3)}` : `${(p.prob * 100).toFixed(2)} %` }),
    p.present ? el("span", { class: "present-tag", text: "present" }) : "",
    changed && p.original !== undefined ? changeText(p) : "")));
  $("pred-note").dataset.hidden = String(state.hidden.size);
  if (multi && !changed) {
    const present = preds.filter((p) => p.present).map((p) => p.label);
    $("present-note").textContent = present.length
      ? `Present (p ≥ 0.5): ${present.join(", ")}. Target “present” explains each; click a label to explain it alone.`
      : "No label is present (p ≥ 0.5) on this image; click a label to explain it anyway.";
  }
}

async function upload(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  try { setImage(await api("/api/images", { method: "POST", body: form })); } catch (err) { showError(err); }
}

async function useExample(name) {
  try { setImage(await api(`/api/images/example/${name}`, { method: "POST" })); } catch (err) { showError(err); }
}

function hideTopK() {
  const map = state.maps.find((m) => m.id === $("topk-map").value);
  if (!map) { showError(new Error("run a method first, then choose its map")); return; }
  const k = Math.max(1, parseInt($("topk").value, 10) || 1);
  const order = map.patch_scores.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0]);
  state.hidden = new Set(order.slice(0, k).map(([, i]) => i));
  updateWhatIf();
}

function refreshTopkChoices() {
  const select = $("topk-map");
  const options = state.maps.map((m) => el("option", { value: m.id, text: `${m.method}: ${m.label}` }));
  select.replaceChildren(...(options.length ? options : [el("option", { value: "", text: "(run a method first)" })]));
}

// ---- 2. methods: the form is generated from each method's declared parameters -----------

function paramInput(method, p) {
  const id = `p-${method}-${p.name}`;
  const title = `${p.help} (default ${p.default})`;
  let input;
  if (p.choices) {
    input = el("select", { id, "data-param": p.name, "data-type": p.type, title },
      ...p.choices.map((c) => el("option", { value: c, text: c, selected: c === p.default })));
  } else if (p.type === "bool") {
    input = el("input", { id, type: "checkbox", "data-param": p.name, "data-type": p.type, title, checked: !!p.default });
  } else if (p.type === "int" || p.type === "float") {
    input = el("input", { id, type: "number", "data-param": p.name, "data-type": p.type, title, value: p.default,
      step: p.type === "int" ? 1 : "any", min: p.min, max: p.max });
  } else {
    input = el("input", { id, "data-param": p.name, "data-type": p.type, title, value: p.default ?? "" });
  }
  return el("label", { title }, el("span", { text: p.name.replace(/_/g, " ") }), input);
}

function buildMethodsForm(methods, whiteBox, tokenMasking) {
  const form = $("methods-form");
  for (const [name, m] of Object.entries(methods)) {
    const usable = m.usable !== undefined ? m.usable : (m.kind === "black-box" || whiteBox);
    const why = m.reason || "needs a PyTorch model";
    const box = el("input", { type: "checkbox", name: "method", value: name, disabled: !usable,
      onchange: (e) => fieldset.classList.toggle("on", e.target.checked) });
    const fieldset = el("fieldset", { "data-method": name, class: usable ? "" : "unavailable", title: usable ? null : why },
      el("legend", {}, el("label", {}, box, ` ${name} `,
        el("span", { class: usable ? "muted" : "muted reason", text: `[${m.kind}] ${usable ? m.summary : `not for this model: ${why}`}` }))),
      el("div", { class: "params" }, ...m.parameters.map((p) => paramInput(name, p))));
    if (!tokenMasking) {  // dropping patch tokens needs a ViT: do not offer it
      for (const opt of fieldset.querySelectorAll('select[data-param="masking"] option[value="tokens"]')) {
        opt.disabled = true;
        opt.textContent = "tokens (ViT only)";
      }
    }
    form.append(fieldset);
  }
}

function chosenMethods() {
  return [...document.querySelectorAll("#methods-form fieldset.on")].map((fs) => {
    const params = {};
    for (const input of fs.querySelectorAll("[data-param]")) {
      const type = input.dataset.type;
      if (type === "bool") params[input.dataset.param] = input.checked;
      else if (input.value === "") continue;  // the method's default
      else if (type === "int" && /^-?\d+$/.test(input.value)) params[input.dataset.param] = parseInt(input.value, 10);
      else if (type === "float" && !Number.isNaN(Number(input.value))) params[input.dataset.param] = Number(input.value);
      else params[input.dataset.param] = input.value;  // the server explains what is wrong with it
    }
    return { name: fs.dataset.method, params };
  });
}

async function run() {
  if (!state.image) { showError(new Error("choose an image first")); return; }
  const methods = chosenMethods();
  if (!methods.length) { showError(new Error("tick at least one method")); return; }
  const target = /^\d+$/.test($("target").value.trim()) ? parseInt($("target").value, 10) : $("target").value.trim();
  try {
    const job = await api("/api/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ image_id: state.image.id, methods, target, seed: parseInt($("seed").value, 10) || 0,
        metrics: $("metrics").checked }),
    });
    trackJob(job);
  } catch (err) { setStatus(`not started: ${err.message}`, true); showError(err); }
}

function trackJob(job) {
  state.job = job.id;
  $("run").disabled = true;
  $("cancel").hidden = false;
  $("progress").hidden = false;
  showJob(job);
  clearInterval(state.poll);
  state.poll = setInterval(async () => {
    try { showJob(await api(`/api/jobs/${job.id}`)); } catch (err) { stopPolling(); showError(err); }
  }, 300);
}

function stopPolling() {
  clearInterval(state.poll);
  $("run").disabled = false;
  $("cancel").hidden = true;
}

function showJob(job) {
  const p = job.progress;
  const bar = $("progress");
  if (p.fraction === null) bar.removeAttribute("value"); else bar.value = p.fraction;
  const passes = p.total && p.done <= p.total ? `${p.done} / ${p.total} forward passes` : `${p.done} forward passes`;
  const scoring = p.scoring_passes ? `; faithfulness: ${p.scoring_passes} passes` : "";
  setStatus(`${job.status}: ${passes}${scoring}`);
  showPreview(job);
  if (job.status === "done") {
    stopPolling(); bar.hidden = true;
    const failed = job.results.filter((r) => r.error);
    if (failed.length) setStatus(`${failed.length} of ${job.results.length} failed: ${failed.map((r) => `${r.method}: ${r.error}`).join("; ")}`, true);
    else setStatus(`done in ${job.seconds} s`);
    showResults(job.results);
    $("result-panel").scrollIntoView({ behavior: "smooth", block: "start" });  // below the fold, Explain seemed to do nothing
  }
  if (job.status === "error") { stopPolling(); bar.hidden = true; setStatus(`error: ${job.error}`, true); showError(new Error(job.error)); }
  if (job.status === "cancelled") { stopPolling(); bar.hidden = true; setStatus("cancelled"); }
}

// The running map of a sampling method, redrawn as it sharpens; replaced by the cards when the job ends.
function showPreview(job) {
  const box = $("preview");
  const p = job.status === "running" ? job.preview : null;
  if (!p) { box.hidden = true; state.previewVersion = 0; return; }
  if (p.version === state.previewVersion) return;
  state.previewVersion = p.version;
  $("preview-photo").src = state.image.url;
  $("preview-map").src = `/api/jobs/${job.id}/preview.png?v=${p.version}`;
  $("preview-text").textContent = `${p.method}: the map so far, from ${p.samples} samples`;
  box.hidden = false;
}

async function cancel() {
  if (!state.job) return;
  try { showJob(await api(`/api/jobs/${state.job}`, { method: "DELETE" })); } catch (err) { showError(err); }
}

// ---- 3. results side by side -----------------------------------------------------------------

function curve(points) {
  const ys = points.y, xs = points.x;
  if (!Array.isArray(ys) || !Array.isArray(xs) || ys.length < 2) return null;
  const top = Math.max(...ys, 1e-9);
  const pts = ys.map((y, i) => `${(xs[i] * 100).toFixed(1)},${(30 - (y / top) * 28).toFixed(1)}`).join(" ");
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 100 31");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.innerHTML = `<polyline fill="none" stroke="#2b6cb0" stroke-width="1" points="${pts}"/>`;
  return svg;
}

function metricsBlock(metrics) {
  if (!metrics) return [];
  const out = [];
  for (const [name, m] of Object.entries(metrics)) {
    if (!m) continue;
    const better = m.better ? ` (${m.better} is better)` : "";
    out.push(el("div", { class: "metric", "data-metric": name, text: `${name}: ${Number.isInteger(m.score) ? m.score : m.score.toFixed(3)}${better}` }));
    const svg = curve(m);
    if (svg) out.push(svg);
  }
  return out;
}

function showResults(results) {
  const list = $("results");
  for (const r of results) {
    if (r.error) { list.prepend(el("figure", { class: "card" }, el("figcaption", {}, el("div", { class: "title", text: r.method }), el("div", { class: "error", text: r.error })))); continue; }
    if (r.note) { list.prepend(el("figure", { class: "card note" }, el("figcaption", {}, el("div", { class: "title", text: r.method }), el("div", { class: "muted", text: r.note })))); continue; }
    state.maps.push(r);
    const base = `/api/results/${r.id}`;
    const kind = r.signed ? "diverging" : "sequential";
    const box = r.objective && r.objective.box;  // a detection: drawn over its map
    const card = el("figure", { class: "card", "data-result": r.id },
      el("div", { class: "overlay", title: "click for a large view", onclick: () => openViewer(r) },
        el("img", { src: state.image.url, alt: "photo" }),
        el("img", { class: "heat", src: `${base}/heatmap.png`, alt: `${r.method} map` }),
        box ? el("div", { class: "det shown", style: boxStyle(box) }) : ""),
      el("figcaption", {},
        el("div", { class: "title", text: r.title }),
        el("div", { class: "legend" }, el("span", { text: r.range[0].toPrecision(2) }), el("img", { src: `/api/colorbar/${kind}.png`, alt: "" }), el("span", { text: (r.clipped ? "≥" : "") + r.range[1].toPrecision(2), title: r.clipped ? `the colour scale is clipped at the 99th percentile of |map|; the map spans ${r.extent[0].toPrecision(2)} to ${r.extent[1].toPrecision(2)}` : null })),
        r.description ? el("p", { class: "description", text: r.description }) : "",
        ...metricsBlock(r.metrics),
        el("div", { class: "muted", text: `${r.forward_passes} forward passes, ${r.seconds.toFixed(2)} s; ${Object.entries(r.params).map(([k, v]) => `${k}=${v}`).join(", ")}` }),
        el("div", { class: "row" },
          el("a", { href: `${base}/map.npy`, download: "" }, "map .npy"),
          el("a", { href: `${base}/overlay.png`, download: "" }, "overlay .png"),
          el("a", { href: `${base}/explanation.json`, download: "" }, "JSON"),
          el("button", { onclick: () => { $("topk-map").value = r.id; hideTopK(); } }, "hide its top patches"))));
    list.prepend(card);
  }
  refreshTopkChoices();
  const last = state.maps[state.maps.length - 1];
  if (last) $("topk-map").value = last.id;
}

function openViewer(r) {
  $("viewer-title").textContent = r.title;
  $("viewer-img").src = `/api/results/${r.id}/overlay.png`;
  $("viewer").showModal();
}

async function loadClasses() {
  const body = await api("/api/classes");
  const names = body.classes || [];
  state.info.classNames = names;
  const seen = new Map();
  for (const n of names) seen.set(n, (seen.get(n) || 0) + 1);
  const options = [el("option", { value: "top1", label: "the top class" }), el("option", { value: "topk:3", label: "the top 3 classes" })];
  if (state.info.model.multi_label) {
    options.unshift(el("option", { value: "present", label: "every present label (p ≥ 0.5)" }));
    $("target").value = "present";
  }
  if (isDetector()) {  // a detector's targets are detections: by number, all of them, or a class's
    options.splice(0, options.length, el("option", { value: "top1", label: "the strongest detection" }),
      el("option", { value: "all", label: `every detection scoring at least ${state.info.model.min_score ?? 0.5}` }));
    names.forEach((n) => { if (n && n !== "N/A" && n !== "__background__") options.push(el("option", { value: `label:${n}`, label: `every ${n}` })); });
    $("class-list").replaceChildren(...options);
    $("target-label").firstChild.textContent = "detection to explain ";
    $("pred-title").textContent = "Detections (click one, here or on the photo, to explain it)";
    return;
  }
  // a name two classes share is not a target: offer those by index
  names.forEach((n, i) => options.push(el("option", { value: seen.get(n) > 1 ? String(i) : n, label: `${i} · ${n}` })));
  $("class-list").replaceChildren(...options);
}

// ---- start ------------------------------------------------------------------------------------------

async function start() {
  try {
    const info = await api("/api/info");
    state.info = info;
    state.grid = info.grid;
    $("model-line").textContent = `model: ${info.model.id} · ${info.model.input_size.join("×")} input · patchlens ${info.version}`;
    for (const ex of info.examples) {
      $("examples").append(el("img", { class: "example", src: ex.url, alt: ex.name, title: ex.name, "data-example": ex.name, onclick: () => useExample(ex.name) }));
    }
    for (const b of info.baselines) $("baseline").append(el("option", { value: b, text: b }));
    buildMethodsForm(info.methods, info.model.white_box, info.token_masking);
    if (info.model.detector) {  // a detector's own method, ready: clicking a detection explains it at once
      const drise = document.querySelector('fieldset[data-method="drise"]');
      if (drise) { drise.querySelector("legend input").checked = true; drise.classList.add("on"); }
    }
    await loadClasses();
    const metricNames = Object.keys(info.metrics);
    $("metrics-label").hidden = metricNames.length === 0;
    $("metrics-names").textContent = metricNames.join(", ");
  } catch (err) { showError(err); }
  $("upload").addEventListener("change", (e) => { if (e.target.files[0]) upload(e.target.files[0]); });
  $("reset").addEventListener("click", () => { state.hidden.clear(); updateWhatIf(); });
  $("baseline").addEventListener("change", () => { if (state.hidden.size) updateWhatIf(); });
  $("hide-topk").addEventListener("click", hideTopK);
  $("run").addEventListener("click", (e) => { e.preventDefault(); run(); });
  $("cancel").addEventListener("click", cancel);
  $("viewer").addEventListener("click", (e) => { if (e.target === $("viewer")) $("viewer").close(); });
  $("opacity").addEventListener("input", (e) => document.documentElement.style.setProperty("--heat-opacity", e.target.value));
}

start();

// The review workstation: sign in, job list (+ upload), case view (viewer, QA, correct, decide, send).
import { api, ApiError, droppedFiles, session, uploadSeries } from "./api.js";
import { CaseViewer } from "./viewer.js";

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
};
const state = { view: null, jobs: [], pollTimer: null, review: null, viewer: null, qa: null, tool: "none" };
window.reviewApp = state; // for the browser tests and the curious

function show(view) {
  for (const id of ["signin-view", "list-view", "case-view"]) $(`#${id}`).hidden = id !== `${view}-view`;
  $("#signout").hidden = view === "signin";
  state.view = view;
  if (view !== "list") clearTimeout(state.pollTimer);
}

// ------------------------------------------------------------------ sign in
async function signIn(key) {
  session.set(key);
  try {
    await api("/v1/review/jobs");
  } catch (e) {
    session.clear();
    $("#signin-error").textContent = e.status === 401 ? "This API key is not known to the service." : e.message;
    return;
  }
  $("#signin-error").textContent = "";
  route();
}

$("#signin-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("#api-key").value.trim()); });
$("#signout").addEventListener("click", () => { session.clear(); location.hash = ""; route(); });

// ------------------------------------------------------------------ job list
const fmtDate = (s) => (s && s.length === 8 ? `${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6)}` : s || "");

function matches(j, filter) {
  const s = j.job.state, qa = j.job.qa_status;
  switch (filter) {
    case "active": return s === "queued" || s === "running";
    case "to-review": return s === "succeeded" && !j.decision;
    case "review": return qa === "review";
    case "fail": return qa === "fail";
    case "failed": return s === "failed";
    case "decided": return !!j.decision;
    default: return true;
  }
}

function renderJobs() {
  const tbody = $("#jobs tbody");
  const filter = $("#filter").value;
  const signature = JSON.stringify([filter, state.jobs]);
  if (signature === state.jobsShown) return; // unchanged: keep the rows (and whatever the user is pointing at)
  state.jobsShown = signature;
  tbody.replaceChildren();
  const rows = state.jobs.filter((j) => matches(j, filter));
  $("#list-empty").hidden = state.jobs.length > 0;
  for (const j of rows) {
    const job = j.job;
    const stateText = job.state === "running" ? `running ${Math.round(job.progress * 100)} % (${job.stage || ""})`
      : job.state === "failed" ? `failed: ${job.error?.code || ""}` : job.state;
    const qa = job.qa_status ? el("span", { class: `badge ${job.qa_status}` }, job.qa_status.toUpperCase()) : "";
    const quality = Object.entries(j.gland_quality).map(([n, v]) => `${n} ${v.toFixed(2)}`).join(", ");
    const review = j.decision ? el("span", { class: `badge ${j.decision}` }, j.decision)
      : j.held_for ? el("span", { class: "badge review" }, `held for ${j.held_for}`) : (job.state === "succeeded" ? "to review" : "");
    const tr = el("tr", { class: "job", "data-id": job.id, "data-state": job.state },
      el("td", {}, new Date(job.created_at).toLocaleString()),
      el("td", {}, el("div", {}, j.series_description || "(no description)"), el("div", { class: "muted small" }, fmtDate(j.series_date))),
      el("td", {}, j.route === "dicom" ? `DICOM ${j.sender}` : "HTTP upload"),
      el("td", {}, stateText),
      el("td", {}, qa, el("div", { class: "small muted" }, quality), ...j.qa_reasons.map((r) => el("div", { class: "small" }, r))),
      el("td", {}, review, j.revisions ? el("div", { class: "small muted" }, `${j.revisions} revision(s)`) : ""),
      el("td", {}, job.state === "succeeded" ? el("button", { class: "open" }, "Open") : ""),
    );
    if (job.state === "succeeded") tr.addEventListener("click", () => { location.hash = `#/case/${job.id}`; });
    tbody.append(tr);
  }
}

async function loadJobs() {
  try {
    state.jobs = (await api("/v1/review/jobs")).jobs;
    renderJobs();
  } catch (e) {
    if (e.status === 401) { session.clear(); route(); return; }
  }
  const active = state.jobs.some((j) => j.job.state === "queued" || j.job.state === "running");
  clearTimeout(state.pollTimer);
  if (state.view === "list") state.pollTimer = setTimeout(loadJobs, active ? 1000 : 5000);
}
$("#filter").addEventListener("change", renderJobs);

async function upload(files) {
  if (!files.length) return;
  const bar = $("#upload-progress"), status = $("#upload-status");
  bar.hidden = false; bar.value = 0;
  status.textContent = `uploading ${files.length} file(s)…`;
  try {
    const job = await uploadSeries(files, (f) => { bar.value = f; });
    status.textContent = job.existing ? "This series was submitted before: showing that job." : "Uploaded; the job is queued.";
    status.dataset.jobId = job.id;
  } catch (e) {
    status.textContent = `Upload refused: ${e.code}: ${e.message}`;
  } finally {
    bar.hidden = true;
    loadJobs();
  }
}
const drop = $("#drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", async (e) => { e.preventDefault(); drop.classList.remove("over"); upload(await droppedFiles(e.dataTransfer)); });
$("#pick-files").addEventListener("change", (e) => upload([...e.target.files]));
$("#pick-folder").addEventListener("change", (e) => upload([...e.target.files]));

// ------------------------------------------------------------------ case view
async function openCase(jobId) {
  show("case");
  $("#case-error").textContent = "";
  $("#viewer-status").textContent = "loading…";
  try {
    state.review = await api(`/v1/jobs/${jobId}/review`);
    state.qa = await api(`/v1/jobs/${jobId}/qa`).catch(() => null);
  } catch (e) {
    $("#case-error").textContent = `${e.code}: ${e.message}`;
    return;
  }
  const r = state.review;
  $("#case-title").textContent = r.series_description || "Case";
  $("#series-id").textContent = `Series ${r.series_instance_uid} · ${fmtDate(r.series_date)} · ${r.shape_zyx[2]}×${r.shape_zyx[1]}×${r.shape_zyx[0]}`;
  renderStructures(); renderQA(); renderRevisions(); renderDecision();
  if (!state.viewer) state.viewer = new CaseViewer($("#gl"));
  try {
    await state.viewer.open(r);
    renderOverlays();
    setTool("none");
    $("#viewer-status").textContent = "";
    state.ready = true;
  } catch (e) {
    $("#viewer-status").textContent = `viewer: ${e.message}`;
  }
}

function renderStructures() {
  const box = $("#structures"); box.replaceChildren();
  const pen = $("#pen-structure"); pen.replaceChildren();
  for (const g of state.review.glands) {
    const cb = el("input", { type: "checkbox", "data-label": String(g.label) });
    cb.checked = true;
    cb.addEventListener("change", () => state.viewer.toggleStructure(g.label, cb.checked));
    box.append(el("label", {}, cb, el("span", { class: "swatch", style: `background: rgb(${g.color.join(",")})` }), g.name));
    pen.append(el("option", { value: String(g.label) }, g.name));
  }
}

async function renderOverlays() {
  const box = $("#overlays"); box.replaceChildren();
  const f = state.review.files;
  for (const [kind, url, cmap, title] of [["reference", f.reference, "green", "Reference"], ["uncertainty", f.uncertainty, "warm", "Uncertainty"]]) {
    if (!url) continue;
    const cb = el("input", { type: "checkbox", "data-overlay": kind });
    cb.addEventListener("change", async () => {
      await state.viewer.addOverlay(kind, url, cmap);
      state.viewer.showOverlay(kind, cb.checked);
    });
    box.append(el("label", {}, cb, title));
  }
}

function renderQA() {
  const box = $("#qa"); box.replaceChildren();
  const qa = state.qa;
  if (!qa) { box.append("no QA report"); return; }
  box.append(el("div", {}, "Status ", el("span", { class: `badge ${qa.status}` }, qa.status.toUpperCase()), ` · model ${qa.model.name} ${qa.model.version}`));
  const t = el("table", { class: "small" }, el("tr", {}, el("th", {}, ""), el("th", {}, "cc"), el("th", {}, "p̄"), el("th", {}, "Dice"), el("th", {}, "HD95")));
  for (const [name, g] of Object.entries(qa.glands)) {
    t.append(el("tr", {}, el("td", {}, name), el("td", {}, g.volume_cc.toFixed(1)), el("td", {}, g.mean_probability.toFixed(2)),
      el("td", {}, g.reference?.dice != null ? g.reference.dice.toFixed(3) : "–"), el("td", {}, g.reference?.hd95_mm != null ? `${g.reference.hd95_mm.toFixed(1)} mm` : "–")));
  }
  box.append(t);
  for (const r of qa.reasons) box.append(el("div", { class: "small" }, `${r.severity}: ${r.message}`));
}

function renderRevisions() {
  const box = $("#revisions"); box.replaceChildren();
  for (const rev of state.review.revisions) {
    const what = rev.number === 0 ? "model result" : rev.edited.map((n) => `${n} +${rev.voxels_added[n] || 0}/−${rev.voxels_removed[n] || 0} voxels`).join(", ");
    box.append(el("div", { "data-revision": String(rev.number) }, `rev ${rev.number}: ${what} (${rev.author}, ${new Date(rev.created_at).toLocaleTimeString()})`));
  }
}

function renderDecision() {
  const d = state.review.decision, box = $("#decision");
  const decided = !!d;
  for (const id of ["#approve", "#reject", "#save-revision"]) $(id).disabled = decided;
  const del = state.review.delivery;
  let text = "";
  if (d) text = `${d.decision} by ${d.reviewer} on revision ${d.revision}, ${new Date(d.decided_at).toLocaleString()}`;
  if (del.policy === "review_before_send") {
    if (del.release) text += del.release.action === "queued" ? ` · sent to ${del.release.destination}` : ` · not sent (${del.release.destination})`;
    else if (d?.decision === "approved") text += ` · being sent to ${del.hold.destination}`;
    else if (!d) text += ` · held: goes to ${del.hold.destination} after approval`;
  }
  box.textContent = text;
  box.dataset.decision = d ? d.decision : "";
}

function setTool(tool) {
  state.tool = tool;
  for (const b of document.querySelectorAll("[data-tool]")) b.classList.toggle("active", b.dataset.tool === tool);
  state.viewer?.setTool(tool, Number($("#pen-structure").value));
}

function confirmDialog(text) {
  return new Promise((resolve) => {
    const dlg = $("#confirm");
    $("#confirm-text").textContent = text;
    dlg.onclose = () => resolve(dlg.returnValue === "ok");
    dlg.showModal();
  });
}

async function saveRevision() {
  const r = state.review;
  $("#case-error").textContent = "";
  try {
    const bytes = await state.viewer.drawingNifti();
    const form = new FormData();
    form.append("mask", new Blob([bytes], { type: "application/octet-stream" }), "mask.nii");
    form.append("base_revision", String(r.latest_revision));
    const res = await api(`/v1/jobs/${r.job_id}/revisions`, { method: "POST", body: form });
    state.review = await api(`/v1/jobs/${r.job_id}/review`);
    renderRevisions();
    $("#viewer-status").textContent = `saved revision ${res.revision.number}`;
  } catch (e) {
    $("#case-error").textContent = e instanceof ApiError ? `${e.code}: ${e.message}` : String(e.message || e);
  }
}

async function decide(decision) {
  const r = state.review;
  const reviewer = $("#reviewer").value.trim();
  if (!reviewer) { $("#case-error").textContent = "Enter your name as reviewer first."; return; }
  const del = r.delivery;
  let text = decision === "approved"
    ? `Approve revision ${r.latest_revision} of this result?`
    : `Reject this result? It will never be delivered.`;
  if (decision === "approved") {
    text += del.policy === "review_before_send" ? ` The RTSTRUCT will then be sent to ${del.hold.destination}.`
      : " Nothing is sent: download the RTSTRUCT from the API, or send it from your planning system.";
  }
  if (!(await confirmDialog(text))) return;
  try {
    await api(`/v1/jobs/${r.job_id}/decision`, { method: "POST", json: { decision, reviewer, comment: $("#comment").value, revision: r.latest_revision } });
    state.review = await api(`/v1/jobs/${r.job_id}/review`);
    renderDecision();
  } catch (e) {
    $("#case-error").textContent = `${e.code}: ${e.message}`;
  }
}

for (const b of document.querySelectorAll("[data-view]")) b.addEventListener("click", () => state.viewer?.setView(b.dataset.view));
for (const b of document.querySelectorAll("[data-window]")) b.addEventListener("click", () => state.viewer?.setWindow(b.dataset.window));
for (const b of document.querySelectorAll("[data-zoom]")) {
  b.addEventListener("click", () => state.viewer?.setZoom(state.viewer.zoom * (b.dataset.zoom === "in" ? 1.5 : 1 / 1.5)));
}
for (const b of document.querySelectorAll("[data-tool]")) b.addEventListener("click", () => setTool(b.dataset.tool));
$("#pen-structure").addEventListener("change", () => setTool(state.tool));
$("#opacity").addEventListener("input", (e) => state.viewer?.setOpacity(Number(e.target.value)));
$("#undo").addEventListener("click", () => state.viewer?.undo());
$("#save-revision").addEventListener("click", saveRevision);
$("#approve").addEventListener("click", () => decide("approved"));
$("#reject").addEventListener("click", () => decide("rejected"));
$("#back").addEventListener("click", () => { location.hash = ""; });

document.addEventListener("keydown", (e) => {
  if (state.view !== "case" || !state.viewer || e.target.matches("input, textarea, select")) return;
  const v = state.viewer;
  const keys = {
    ArrowUp: () => v.step(1), ArrowDown: () => v.step(-1),
    a: () => v.setView("axial"), c: () => v.setView("coronal"), s: () => v.setView("sagittal"), m: () => v.setView("multi"),
    1: () => v.setWindow("soft"), 2: () => v.setWindow("bone"),
    "+": () => v.setZoom(v.zoom * 1.5), "=": () => v.setZoom(v.zoom * 1.5), "-": () => v.setZoom(v.zoom / 1.5), 0: () => v.setZoom(1),
    o: () => { for (const cb of document.querySelectorAll("#structures input")) { cb.checked = !cb.checked; cb.dispatchEvent(new Event("change")); } },
    p: () => setTool("paint"), e: () => setTool("erase"), f: () => setTool("fill"), n: () => setTool("none"),
  };
  if ((e.ctrlKey || e.metaKey) && e.key === "z") { v.undo(); e.preventDefault(); return; }
  const fn = keys[e.key];
  if (fn && !e.ctrlKey && !e.metaKey && !e.altKey) { fn(); e.preventDefault(); }
});

// ------------------------------------------------------------------ routing
function route() {
  if (!session.key) { show("signin"); return; }
  $("#who").textContent = "signed in";
  const m = location.hash.match(/^#\/case\/([0-9a-f]{32})$/);
  if (m) { state.ready = false; openCase(m[1]); } else { show("list"); loadJobs(); }
}
window.addEventListener("hashchange", route);
route();

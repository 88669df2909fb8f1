// facelab page: send a photo to POST /v1/predict, show it with every face boxed and numbered, and the attributes
// of the chosen face in a grid, the predicted ones first. Nothing here loads anything from another server.
"use strict";
const $ = (id) => document.getElementById(id);
const COLOURS = ["#2f6fdf", "#e0602b", "#1a9e6e", "#b5369c", "#c99a06", "#6a4fcf"];  // one per face, in turn
const HEADLINES = {
  400: "The upload was not understood", 408: "The upload took too long", 413: "The photo is too large",
  415: "This file is not a photo facelab reads", 422: "This photo is damaged", 503: "The service is busy",
};
// px: the attributes' column beside the photo, the space between them, the narrowest photo beside them
const SIDE = 540, GAP = 28, MIN_PHOTO = 400;
const state = {result: null, image: null, selected: 0, request: 0};

async function loadModel() {
  try {
    const r = await fetch("/v1/model");
    const m = await r.json();
    const how = m.faces === "detect" ? "faces are found and aligned" : "each photo is one aligned face";
    $("model").textContent = `${m.model} · ${m.labels.length} labels · ${how} · ${m.engine}`;
  } catch (e) {
    $("model").textContent = "The model could not be described: " + e.message;
  }
}

function setStatus(text, kind, detail) {
  const el = $("status");
  el.className = kind || "";
  el.replaceChildren();
  const head = document.createElement("strong");
  head.textContent = text;
  el.appendChild(head);
  if (detail) el.append(" " + detail);
}

function setBusy(busy) {
  $("drop").classList.toggle("busy", busy);
  document.querySelector("main").setAttribute("aria-busy", String(busy));
}

function clearResult() {
  state.result = state.image = null;
  $("result").hidden = true;
  $("faces").replaceChildren();
  $("attributes").replaceChildren();
  $("note").hidden = true;
}

async function send(file) {
  if (!file) return;
  const id = ++state.request;  // a newer photo makes the answers to older ones stale
  clearResult();
  setBusy(true);
  setStatus(`Finding faces in ${file.name}...`, "busy");
  const body = new FormData();
  body.append("file", file);
  let r, data;
  try {
    r = await fetch("/v1/predict", {method: "POST", body});
    data = await r.json().catch(() => ({detail: r.statusText}));
  } catch (e) {
    if (id === state.request) { setBusy(false); setStatus("The service did not answer.", "error", e.message); }
    return;
  }
  if (id !== state.request) return;
  if (!r.ok) {
    setBusy(false);
    setStatus(`${HEADLINES[r.status] || "The photo was refused"} (${r.status}).`, "error",
              `${file.name}: ${typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail)}`);
    return;
  }
  const image = await loadImage(file);
  if (id !== state.request) return;
  setBusy(false);
  Object.assign(state, {result: data, image, selected: 0});
  const n = data.faces.length;
  setStatus(`${n} face${n === 1 ? "" : "s"}`, "done",
            `in ${file.name} (${data.image.width} × ${data.image.height} px), ${data.seconds.toFixed(2)} s`);
  render();
}

function loadImage(file) {
  return new Promise((resolve) => {
    const img = new Image(), url = URL.createObjectURL(file);
    img.onload = () => { URL.revokeObjectURL(url); resolve(img); };
    img.onerror = () => { URL.revokeObjectURL(url); resolve(null); };  // e.g. TIFF: boxes on a blank instead
    img.src = url;
  });
}

function render() {
  const {result} = state;
  $("result").hidden = false;
  const note = $("note");
  note.hidden = !result.note;
  note.textContent = result.note || "";
  note.className = result.faces.length ? "capped" : "none";
  $("caption").textContent = result.faces.length > 1 ? "Click a face, or use the tabs, to see its attributes." :
    (state.image ? "" : "Your browser cannot show this image format; the faces are drawn on a blank.");
  renderTabs();
  drawPhoto();
  renderAttributes(result.faces[state.selected]);
}

function select(i) {
  if (!state.result || i < 0 || i >= state.result.faces.length) return;
  state.selected = i;
  renderTabs();
  drawPhoto();
  renderAttributes(state.result.faces[i]);
  $("faces").children[i].focus();
}

// ---- the photo --------------------------------------------------------------------------------------
function drawPhoto() {
  const {result, image} = state;
  const canvas = $("canvas"), w = result.image.width, h = result.image.height;
  // as large as the page allows, leaving SIDE px beside it for the attributes (below it on a narrow screen)
  const total = $("result").clientWidth, tallest = Math.max(320, window.innerHeight * 0.78);
  const beside = total - SIDE - GAP >= MIN_PHOTO;
  const cssW = Math.min(beside ? Math.min(760, total - SIDE - GAP) : total, tallest * w / h), cssH = cssW * h / w;
  $("photo").style.width = beside ? `${cssW}px` : "100%";
  const dpr = window.devicePixelRatio || 1, s = cssW * dpr / w;
  canvas.style.width = `${cssW}px`;
  canvas.style.height = `${cssH}px`;
  canvas.width = Math.round(cssW * dpr);
  canvas.height = Math.round(cssH * dpr);
  const ctx = canvas.getContext("2d");
  if (image) {
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
  } else {
    ctx.fillStyle = "#e8e8ea";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
  }
  // the chosen face last, so its box is on top
  const order = result.faces.map((_, i) => i).filter((i) => i !== state.selected).concat([state.selected]);
  for (const i of order) {
    const f = result.faces[i];
    if (f && f.box) drawFace(ctx, f, i, s, dpr, i === state.selected);
  }
}

function drawFace(ctx, face, i, s, dpr, chosen) {
  const [x, y, bw, bh] = face.box.map((v) => v * s);
  const colour = COLOURS[i % COLOURS.length];
  ctx.save();
  ctx.globalAlpha = chosen ? 1 : 0.75;
  ctx.lineWidth = (chosen ? 3 : 2) * dpr;
  ctx.strokeStyle = "rgba(0,0,0,.45)";
  ctx.strokeRect(x - dpr, y - dpr, bw + 2 * dpr, bh + 2 * dpr);  // a dark rim: the box shows on light photos too
  ctx.strokeStyle = colour;
  ctx.strokeRect(x, y, bw, bh);
  if (chosen) {
    ctx.fillStyle = colour;
    for (const [lx, ly] of face.landmarks || []) {
      ctx.beginPath();
      ctx.arc(lx * s, ly * s, 2.5 * dpr, 0, 2 * Math.PI);
      ctx.fill();
    }
  }
  const label = String(i + 1), size = 14 * dpr, pad = 5 * dpr;
  ctx.font = `bold ${size}px system-ui, sans-serif`;
  const tw = ctx.measureText(label).width + 2 * pad, th = size + pad;
  const ty = y >= th ? y - th : y;  // above the box when there is room, else inside it
  ctx.fillStyle = colour;
  ctx.fillRect(x - ctx.lineWidth / 2, ty, tw, th);
  ctx.fillStyle = "#fff";
  ctx.textBaseline = "middle";
  ctx.fillText(label, x - ctx.lineWidth / 2 + pad, ty + th / 2);
  ctx.restore();
}

function faceAt(event) {
  if (!state.result) return -1;
  const {result} = state, rect = $("canvas").getBoundingClientRect();
  const px = (event.clientX - rect.left) * result.image.width / rect.width;
  const py = (event.clientY - rect.top) * result.image.height / rect.height;
  let best = -1, area = Infinity;
  result.faces.forEach((f, i) => {
    if (!f.box) return;
    const [x, y, w, h] = f.box;
    if (px >= x && px <= x + w && py >= y && py <= y + h && w * h < area) { best = i; area = w * h; }
  });
  return best;
}

// ---- the faces and their attributes -----------------------------------------------------------------
function renderTabs() {
  const tabs = $("faces");
  tabs.replaceChildren();
  tabs.hidden = state.result.faces.length < 2;
  state.result.faces.forEach((f, i) => {
    const b = document.createElement("button");
    const chosen = i === state.selected;
    b.type = "button";
    b.setAttribute("role", "tab");
    b.setAttribute("aria-selected", String(chosen));
    b.tabIndex = chosen ? 0 : -1;
    b.style.setProperty("--face", COLOURS[i % COLOURS.length]);
    const thumb = faceThumbnail(f);
    if (thumb) b.appendChild(thumb);
    const text = document.createElement("span");
    text.textContent = `Face ${i + 1}`;
    b.appendChild(text);
    b.title = f.score != null ? `face ${i + 1}: detector score ${f.score.toFixed(3)}` : "";
    b.addEventListener("click", () => select(i));
    tabs.appendChild(b);
  });
}

function faceThumbnail(face) {
  if (!state.image || !face.box) return null;
  const c = document.createElement("canvas"), side = 40;
  const [x, y, w, h] = face.box, m = Math.max(w, h);
  c.width = c.height = side * (window.devicePixelRatio || 1);
  c.setAttribute("aria-hidden", "true");
  c.getContext("2d").drawImage(state.image, x + w / 2 - m / 2, y + h / 2 - m / 2, m, m, 0, 0, c.width, c.height);
  return c;
}

function attributeItems(face) {
  const items = [];
  for (const [name, value] of Object.entries(face.attributes)) {
    if (typeof value === "number") {
      items.push({label: name, shown: readable(name), p: value, yes: face.predicted[name] === 1});
    } else {
      for (const [cls, p] of Object.entries(value)) {
        items.push({label: `${name}=${cls}`, shown: `${readable(name)}: ${readable(cls)}`, p,
                    yes: face.predicted[name] === cls});
      }
    }
  }
  // the model's yes first, then the rest; each by probability, highest first
  return items.sort((a, b) => (b.yes - a.yes) || (b.p - a.p) || a.label.localeCompare(b.label));
}

const readable = (name) => String(name).replace(/_/g, " ");

function renderAttributes(face) {
  const panel = $("attributes");
  panel.replaceChildren();
  if (!face) return;
  const items = attributeItems(face);
  const groups = [["Predicted", items.filter((a) => a.yes)], ["Not predicted", items.filter((a) => !a.yes)]];
  for (const [title, group] of groups) {
    if (!group.length) continue;
    const h = document.createElement("h2");
    h.textContent = `${title} `;
    const count = document.createElement("span");
    count.className = "muted";
    count.textContent = `(${group.length})`;
    h.appendChild(count);
    const list = document.createElement("ol");
    list.className = "grid";
    for (const a of group) list.appendChild(attributeRow(a));
    panel.append(h, list);
  }
}

function attributeRow(a) {
  const li = document.createElement("li");
  li.className = "attr" + (a.yes ? " yes" : "");
  li.dataset.label = a.label;
  li.title = `${a.label}: P = ${a.p.toFixed(4)}`;
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = a.shown;
  const bar = document.createElement("span");
  bar.className = "bar";
  const fill = document.createElement("span");
  fill.style.width = `${(100 * a.p).toFixed(1)}%`;
  bar.appendChild(fill);
  const value = document.createElement("span");
  value.className = "value";
  value.textContent = `${(100 * a.p).toFixed(1)}%`;
  li.append(name, bar, value);
  return li;
}

// ---- ways in: the button, the drop zone (keyboard too), dropping anywhere, pasting ----------------------
const drop = $("drop"), input = $("file");
$("choose").addEventListener("click", () => input.click());
input.addEventListener("change", () => { send(input.files[0]); input.value = ""; });
drop.addEventListener("keydown", (e) => {
  if (e.target === drop && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); input.click(); }
});
let dragDepth = 0;
document.addEventListener("dragenter", (e) => { e.preventDefault(); dragDepth++; drop.classList.add("over"); });
document.addEventListener("dragleave", () => { if (--dragDepth <= 0) { dragDepth = 0; drop.classList.remove("over"); } });
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", (e) => {
  e.preventDefault();
  dragDepth = 0;
  drop.classList.remove("over");
  send(e.dataTransfer.files[0]);
});
document.addEventListener("paste", (e) => {
  const file = [...(e.clipboardData?.files || [])][0];
  if (file) send(file);
});
$("canvas").addEventListener("click", (e) => { const i = faceAt(e); if (i >= 0) select(i); });
$("canvas").addEventListener("mousemove", (e) => { $("canvas").style.cursor = faceAt(e) >= 0 ? "pointer" : ""; });
$("faces").addEventListener("keydown", (e) => {
  const step = {ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1}[e.key];
  const n = state.result ? state.result.faces.length : 0;
  if (step && n) { e.preventDefault(); select((state.selected + step + n) % n); }
  if (e.key === "Home" && n) select(0);
  if (e.key === "End" && n) select(n - 1);
});
let resizing = 0;
window.addEventListener("resize", () => {
  cancelAnimationFrame(resizing);
  resizing = requestAnimationFrame(() => { if (state.result) drawPhoto(); });
});
loadModel();

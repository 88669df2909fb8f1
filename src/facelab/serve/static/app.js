// facelab page: send a photo to POST /v1/predict, draw the face boxes, one bar per attribute.
"use strict";
const $ = (id) => document.getElementById(id);
let result = null, image = null, selected = 0;

async function loadModel() {
  try {
    const r = await fetch("/v1/model");
    const m = await r.json();
    $("model").textContent = `${m.model}: ${m.labels.length} labels (${m.faces === "detect" ? "faces are found and aligned" : "each photo is one aligned face"}, ${m.engine})`;
  } catch (e) {
    $("model").textContent = "the model could not be described: " + e;
  }
}

function status(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function send(file) {
  if (!file) return;
  status(`sending ${file.name} (${Math.round(file.size / 1024)} kB)...`);
  const body = new FormData();
  body.append("file", file);
  let r;
  try {
    r = await fetch("/v1/predict", {method: "POST", body});
  } catch (e) {
    status("the service did not answer: " + e, true);
    return;
  }
  const data = await r.json().catch(() => ({detail: r.statusText}));
  if (!r.ok) {
    status(`${r.status}: ${data.detail}`, true);
    $("result").hidden = true;
    return;
  }
  result = data;
  selected = 0;
  image = await loadImage(file);
  status(`${data.faces.length} face(s)${data.note ? " - " + data.note : ""} in ${data.seconds.toFixed(2)} s`);
  render();
}

function loadImage(file) {
  return new Promise((resolve) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => resolve(null);  // the browser cannot show it: the boxes are still listed
    img.src = URL.createObjectURL(file);
  });
}

function render() {
  $("result").hidden = false;
  const canvas = $("canvas"), ctx = canvas.getContext("2d");
  const w = result.image.width, h = result.image.height;
  canvas.width = w; canvas.height = h;
  if (image) ctx.drawImage(image, 0, 0, w, h); else { ctx.fillStyle = "#eee"; ctx.fillRect(0, 0, w, h); }
  result.faces.forEach((f, i) => {
    if (!f.box) return;
    ctx.lineWidth = Math.max(2, w / 250);
    ctx.strokeStyle = i === selected ? "#0a6" : "#4C72B0";
    ctx.strokeRect(f.box[0], f.box[1], f.box[2], f.box[3]);
    ctx.fillStyle = ctx.strokeStyle;
    ctx.font = `${Math.max(12, w / 40)}px sans-serif`;
    ctx.fillText(String(i + 1), f.box[0] + 3, f.box[1] + Math.max(12, w / 40));
    (f.landmarks || []).forEach(([x, y]) => ctx.fillRect(x - 2, y - 2, 4, 4));
  });
  const tabs = $("faces");
  tabs.innerHTML = "";
  result.faces.forEach((f, i) => {
    const b = document.createElement("button");
    b.textContent = `face ${i + 1}` + (f.score != null ? ` (${f.score.toFixed(2)})` : "");
    b.setAttribute("role", "tab");
    b.setAttribute("aria-selected", String(i === selected));
    b.onclick = () => { selected = i; render(); };
    tabs.appendChild(b);
  });
  bars(result.faces[selected]);
}

function bars(face) {
  const body = $("bars").querySelector("tbody");
  body.innerHTML = "";
  if (!face) return;
  for (const [name, value] of Object.entries(face.attributes)) {
    const entries = typeof value === "number" ? [[name, value, face.predicted[name] === 1]]
      : Object.entries(value).map(([c, p]) => [`${name}=${c}`, p, face.predicted[name] === c]);
    for (const [label, p, yes] of entries) {
      const row = document.createElement("tr");
      row.dataset.label = label;
      row.innerHTML = `<td class="name"></td><td style="width:55%"><div class="bar${yes ? " yes" : ""}"><span></span></div></td><td class="value"></td>`;
      row.cells[0].textContent = label;
      row.querySelector(".bar span").style.width = `${(100 * p).toFixed(1)}%`;
      row.cells[2].textContent = p.toFixed(3);
      body.appendChild(row);
    }
  }
}

const drop = $("drop");
$("file").addEventListener("change", (e) => send(e.target.files[0]));
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); send(e.dataTransfer.files[0]); });
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
loadModel();

// facelab review page: least-confident faces first, one key per class, every decision saved at once.
"use strict";
const $ = (id) => document.getElementById(id);
let tasks = {}, task = null, current = null, pressed = null;
window.facelabLatencies = [];  // ms from a key press to the next face on screen (read by the benchmark)

async function api(path, options) {
  const r = await fetch(path, options);
  const data = await r.json().catch(() => ({detail: r.statusText}));
  if (!r.ok) throw new Error(data.detail || r.statusText);
  return data;
}

function status(text, isError) { $("status").textContent = text; $("status").className = isError ? "error" : ""; }

// every value that travels in a URL is encoded (a key may hold +, &, #, % or spaces)
const query = (path, params) => `${path}?${new URLSearchParams(params)}`;

// what the server adds to an answer: the file changed on disk and was read again, or the undo history failed
function notices(r) { const text = [r.notice, r.warning].filter(Boolean).join(" "); if (text) status(text, !!r.warning); return !!text; }

async function refresh() {  // after a refused decision: show the file as it is now
  const n = await api(query("/v1/review/next", {task}));
  show(n.next, n.progress);
}

function show(next, progress) {
  current = next;
  const p = progress || (next && next.progress);
  if (p) $("progress").textContent = `${p.reviewed} of ${p.total} reviewed` + (p.skipped ? `, ${p.skipped} skipped` : "");
  document.querySelectorAll("#keys button").forEach((b) => b.classList.toggle("auto", !!next && b.dataset.cls === next.auto));
  if (!next) { $("img").removeAttribute("src"); $("auto").textContent = "nothing left to review for this task"; return; }
  $("auto").textContent = `${next.key}: auto ${next.auto || "(none)"}` + (next.confidence != null ? `, confidence ${next.confidence.toFixed(2)}` : "");
  $("img").src = next.image;
}

$("img").addEventListener("load", () => {
  if (pressed !== null) { window.facelabLatencies.push(performance.now() - pressed); pressed = null; }
});

async function load() {
  const t = await api("/v1/review/tasks");
  tasks = t.tasks;
  $("what").textContent = `${t.labels} (store ${t.store})`;
  $("task").innerHTML = "";
  for (const name of Object.keys(tasks)) $("task").add(new Option(name, name));
  task = Object.keys(tasks)[0];
  keys();
  const n = await api(query("/v1/review/next", {task}));
  show(n.next, n.progress);
  notices(t) || notices(n);
}

function keys() {
  $("keys").innerHTML = "";
  tasks[task].forEach((cls, i) => {
    const b = document.createElement("button");
    b.textContent = `${i + 1}: ${cls}`;
    b.dataset.cls = cls;
    b.onclick = () => decide(cls);
    $("keys").appendChild(b);
  });
}

async function decide(cls) {
  if (!current) return;
  pressed = performance.now();
  try {
    const r = await api("/v1/review/decision", {method: "POST", headers: {"content-type": "application/json"},
      body: JSON.stringify({key: current.key, task, cls})});
    const key = current.key;
    show(r.next, r.progress);
    if (!notices(r)) status(cls ? `${key}: ${cls} (saved)` : `${key}: skipped`);
  } catch (e) { pressed = null; status(e.message, true); refresh().catch(() => {}); }
}

async function undo() {
  pressed = performance.now();
  try {
    const r = await api(query("/v1/review/undo", {task}), {method: "POST"});
    show(r.next);
    if (!notices(r)) status(`undone: ${r.undone}`);
  } catch (e) { pressed = null; status(e.message, true); refresh().catch(() => {}); }
}

$("task").addEventListener("change", async (e) => {
  task = e.target.value; keys();
  const n = await api(query("/v1/review/next", {task})); show(n.next, n.progress); notices(n);
});

document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "SELECT") return;
  const classes = tasks[task] || [];
  const byKey = {ArrowLeft: "left", ArrowDown: "center", ArrowRight: "right"};
  if (byKey[e.key] && classes.includes(byKey[e.key])) { e.preventDefault(); decide(byKey[e.key]); }
  else if (/^[1-9]$/.test(e.key) && classes[+e.key - 1]) decide(classes[+e.key - 1]);
  else if (e.key === "s") decide(null);
  else if (e.key === "u" || e.key === "Backspace") { e.preventDefault(); undo(); }
});
load().catch((e) => status(e.message, true));

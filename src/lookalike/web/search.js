// The search page (/): search by a file (chosen, dropped or pasted), a URL, or a result.
"use strict";
const $ = (id) => document.getElementById(id);
const count = (n, noun) => `${n.toLocaleString()} ${noun}${n === 1 ? "" : "s"}`;
const token = $("token");
token.value = localStorage.getItem("lookalike-token") || "";
if (token.value) $("token-field").hidden = false;
token.addEventListener("change", () => { localStorage.setItem("lookalike-token", token.value); summary(); });

function withToken(url) {
  return token.value ? url + "?token=" + encodeURIComponent(token.value) : url;
}

function authHeaders() {
  return token.value ? { Authorization: "Bearer " + token.value } : {};
}

function show(message, isError) {
  $("status").textContent = message;
  $("status").className = "status" + (isError ? " error" : "");
}

const baseName = (path) => path.split(/[\\/]/).pop();
// A name or path as text nodes with line break opportunities (<wbr>) after / _ - and before a dot.
const breakable = (text) => text.split(/(?<=[/_-])(?=.)|(?<=.)(?=\.)/)
  .flatMap((part, i) => (i ? [document.createElement("wbr"), part] : [part]));
const pct = (p) => (p >= 0.999 && p < 1 ? (p * 100).toFixed(2) : (p * 100).toFixed(1)) + "%";

async function summary() {
  try {
    const response = await fetch("/stats", { headers: authHeaders() });
    if (response.status === 401) {
      $("token-field").hidden = false;
      $("summary").textContent = "This server needs an access token: enter it below.";
      return;
    }
    const s = await response.json();
    const when = s.last_indexed ? new Date(s.last_indexed).toLocaleString([], { dateStyle: "medium", timeStyle: "short" }) : "never";
    $("summary").textContent = `${count(s.files, "image")} · model ${baseName(s.model)} · last indexed ${when}`;
  } catch (err) {
    $("summary").textContent = "";
  }
}

let last = null;  // what was searched last: {file} | {url} | {id, name}
let latest = 0;  // only the newest search shows its results

function filterFields() {
  const out = {};
  for (const name of ["under", "since", "until", "label"]) {
    const value = $(name).value.trim();
    if (value) out[name] = value;
  }
  out.k = Math.max(1, Math.min(100, parseInt($("k").value, 10) || 12));
  return out;
}

function preview(src, alt) {
  $("query").innerHTML = "";
  if (!src) return;
  const img = document.createElement("img");
  img.alt = alt;
  img.addEventListener("error", () => img.replaceWith(Object.assign(document.createElement("span"), {
    className: "hint", textContent: "(no preview: the browser cannot show this file)" })));
  img.src = src;
  const label = document.createElement("span");
  label.textContent = alt;
  $("query").append(img, label);
}

function hitCard(hit, n) {
  const li = document.createElement("li");
  li.className = "hit";
  const name = baseName(hit.path);
  const again = document.createElement("button");
  again.type = "button";
  again.className = "again";
  again.title = "Search by this image";
  const img = document.createElement("img");
  img.src = withToken(hit.thumbnail);
  img.loading = "lazy";
  img.alt = `Result ${n}: ${name}` + (hit.relation ? `, ${hit.relation}` : "") + `; search by this image`;
  again.append(img);
  const searchFrom = () => run({ id: hit.id, name, thumbnail: hit.thumbnail });
  again.addEventListener("click", searchFrom);
  const score = document.createElement("p");
  score.className = "score";
  score.textContent = `score ${hit.score.toFixed(3)}`;
  if (hit.similarity !== undefined && hit.similarity - hit.score > 5e-4) {
    score.textContent += ` (alone ${hit.similarity.toFixed(3)})`;
    score.title = "Lowered: a closer result is another picture, or not quite this one";
  }
  score.dataset.score = String(hit.score);
  const meta = document.createElement("p");
  meta.className = "meta";
  const parts = [];
  if (hit.relation) parts.push(hit.relation);
  if (hit.probability !== undefined) parts.push(`P(same photo) ${pct(hit.probability)}`);
  if (hit.labels && hit.labels.length) parts.push(hit.labels.slice(0, 3).join("; "));  // ImageNet names hold commas
  meta.textContent = parts.join(" · ");
  const path = document.createElement("p");
  path.className = "path";  // it may break at / _ - . (not inside words), the name is in bold
  const folder = hit.path.slice(0, hit.path.length - name.length);
  const bold = document.createElement("b");
  bold.append(...breakable(name));
  path.append(...breakable(folder), document.createElement("wbr"), bold);
  const links = document.createElement("p");
  links.className = "links";
  const full = document.createElement("a");
  full.href = withToken(hit.image);
  full.target = "_blank";
  full.rel = "noopener";
  full.textContent = "Full image";
  full.setAttribute("aria-label", `Full image of ${name}`);
  const from = document.createElement("button");
  from.type = "button";
  from.className = "link";
  from.textContent = "Search from this";
  from.setAttribute("aria-label", `Search from this image: ${name}`);
  from.addEventListener("click", searchFrom);
  links.append(full, from);
  li.append(again, score, meta, path, links);
  return li;
}

async function run(query) {
  last = query;
  const mine = ++latest;
  $("results").innerHTML = "";
  let init;
  const fields = filterFields();
  if (query.file) {
    const file = query.file;
    if (file.type && !file.type.startsWith("image/")) {
      preview(null);
      show(`“${file.name}” is not an image (${file.type}): choose a JPEG, PNG, WebP, GIF, BMP, TIFF or HEIC file.`, true);
      return;
    }
    preview(URL.createObjectURL(file), `Your image: ${file.name || "pasted image"}`);
    const body = new FormData();
    body.append("image", file, file.name || "pasted.png");
    for (const [key, value] of Object.entries(fields)) body.append(key, String(value));
    init = { method: "POST", body, headers: authHeaders() };
  } else {
    preview(query.url ? null : withToken(query.thumbnail), query.url ? "" : `Your image: ${query.name}`);
    const body = { ...fields, ...(query.url ? { url: query.url } : { id: query.id }) };
    init = { method: "POST", body: JSON.stringify(body), headers: { ...authHeaders(), "Content-Type": "application/json" } };
  }
  show("Searching…");
  try {
    const response = await fetch("/search", init);
    let data = {};
    try { data = await response.json(); } catch (e) { /* not JSON */ }
    if (mine !== latest) return;
    if (!response.ok) {
      if (response.status === 401) $("token-field").hidden = false;
      const detail = typeof data.detail === "string" ? data.detail : response.statusText;
      const what = query.file ? `“${query.file.name || "the pasted image"}”` : query.url ? "that address" : "that image";
      if (query.file && response.status === 415) preview(null);
      show(`Could not search with ${what}: ${detail}`, true);
      return;
    }
    show(count(data.results.length, "result") + (query.url ? ` for ${query.url}` : query.id ? ` for ${query.name}` : ""));
    data.results.forEach((hit, n) => $("results").append(hitCard(hit, n + 1)));
  } catch (err) {
    if (mine === latest) show("The request failed: " + err, true);
  }
}

$("choose").addEventListener("click", () => $("file").click());
$("file").addEventListener("change", (e) => { if (e.target.files[0]) run({ file: e.target.files[0] }); });
$("by-url").addEventListener("submit", (e) => {
  e.preventDefault();
  const url = $("url").value.trim();
  if (url) run({ url }); else show("Enter the address of an image (https://…).", true);
});
$("filters").addEventListener("submit", (e) => { e.preventDefault(); if (last) run(last); });
for (const name of ["since", "until"]) $(name).addEventListener("change", () => { if (last) run(last); });
document.addEventListener("paste", (e) => {
  if (e.target.closest && e.target.closest("input, textarea")) return;  // pasting text into a field
  const items = e.clipboardData ? Array.from(e.clipboardData.files) : [];
  const file = items.find((f) => f.type.startsWith("image/")) || items[0];
  if (file) { e.preventDefault(); run({ file }); return; }
  const text = e.clipboardData ? e.clipboardData.getData("text").trim() : "";
  if (/^https?:\/\//i.test(text)) { e.preventDefault(); $("url").value = text; run({ url: text }); }
});
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  const file = e.dataTransfer.files[0];
  if (file) run({ file });
});
summary();

// The duplicate review page (/dupes): groups rendered by the server (lookalike.report),
// actions posted as JSON (lookalike.server.review), keyboard first.
"use strict";
const $ = (id) => document.getElementById(id);
const count = (n, noun) => `${n.toLocaleString()} ${noun}${n === 1 ? "" : "s"}`;
const SIZE = 20;
const state = { page: 1, pages: 1, current: 0, plans: new Map(), busy: false, shown: false };
const token = $("token");
token.value = localStorage.getItem("lookalike-token") || "";
if (token.value) $("token-field").hidden = false;
token.addEventListener("change", () => { localStorage.setItem("lookalike-token", token.value); load(state.page); });

function withToken(url) {
  return token.value ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token.value) : url;
}

function say(message, isError) {
  $("status").textContent = message;
  $("status").className = "status" + (isError ? " error" : "");
}

async function api(path, body) {
  const headers = {};
  if (token.value) headers.Authorization = "Bearer " + token.value;
  const init = { headers };
  if (body !== undefined) {
    init.method = "POST";
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = {};
  try { data = await response.json(); } catch (e) { /* not JSON */ }
  if (response.status === 401) {
    $("token-field").hidden = false;
    throw new Error("This server needs an access token: enter it above.");
  }
  if (!response.ok) {
    const error = new Error(typeof data.detail === "string" ? data.detail : response.statusText);
    error.status = response.status;
    throw error;
  }
  return data;
}

const sections = () => Array.from(document.querySelectorAll("#groups .group"));
const preset = () => $("preset").value;

function fillImages(root) {
  for (const img of root.querySelectorAll("img[data-src]")) {
    img.src = withToken(img.dataset.src);
    img.removeAttribute("data-src");
  }
  for (const a of root.querySelectorAll("a.thumb")) a.href = withToken(a.getAttribute("href"));
}

function decorate(section) {
  fillImages(section);
  const plan = state.plans.get(Number(section.dataset.number));
  const select = section.querySelector("select.plan");
  if (select) select.value = plan ? plan.action : "";
  const note = section.querySelector(".planned");
  if (note) note.textContent = plan ? "reviewed" : "";
}

function replaceSection(number, html) {
  const old = document.getElementById("group-" + number);
  if (!old) return null;
  const holder = document.createElement("div");
  holder.innerHTML = html;
  const fresh = holder.firstElementChild;
  fresh.classList.toggle("current", old.classList.contains("current"));
  old.replaceWith(fresh);
  decorate(fresh);
  return fresh;
}

function showSummary(data) {
  $("summary").textContent = `${count(data.total, "group")} · ${count(data.duplicates, "duplicate")}` +
    (data.resolved ? ` · ${data.resolved} done here` : "");
  $("page-info").textContent = `page ${data.page} of ${data.pages}`;
  $("prev-page").disabled = data.page <= 1;
  $("next-page").disabled = data.page >= data.pages;
  $("undo").disabled = !data.undo;
}

async function load(page, at) {
  say("Loading duplicate groups…");
  try {
    const data = await api(`/dupes/groups?preset=${encodeURIComponent(preset())}&page=${page}&size=${SIZE}`);
    state.page = data.page;
    state.pages = data.pages;
    $("groups").innerHTML = data.html ||
      '<p class="panel">No duplicate groups with this setting. Try “edited” or “similar”.</p>';
    sections().forEach(decorate);
    if (!state.shown) { unsettle(); state.shown = true; }  // the groups first appear (not a page turned)
    showSummary(data);
    const first = (data.page - 1) * SIZE + 1;
    say(data.total ? `Showing groups ${first}–${first + sections().length - 1} of ${data.total}.` : "");
    const list = sections();
    // the current group is one on screen: after an undo or a reload the page keeps its scroll,
    // and a key must not act on a group the user cannot see
    if (list.length && at === "first") list[0].scrollIntoView({ block: "start", behavior: "instant" });
    if (list.length) setCurrent(at === "last" ? list.length - 1 : at === "first" ? 0 : onScreen(list), false);
  } catch (err) {
    say(err.message, true);
  }
}

function onScreen(list) {
  const shown = list.findIndex((s) => { const r = s.getBoundingClientRect(); return r.bottom > 0 && r.top < innerHeight; });
  if (shown >= 0) return shown;
  list[0].scrollIntoView({ block: "start", behavior: "instant" });  // scrolled past them all: the first
  return 0;
}

function setCurrent(i, focus = true) {
  const list = sections();
  if (!list.length) return;
  state.current = Math.max(0, Math.min(i, list.length - 1));
  list.forEach((s, n) => s.classList.toggle("current", n === state.current));
  const section = list[state.current];
  if (focus) {
    section.focus({ preventScroll: true });
    section.scrollIntoView({ block: "start", behavior: "instant" });
  }
}

function move(delta) {
  const next = state.current + delta;
  const list = sections();
  if (next >= list.length && state.page < state.pages) return load(state.page + 1, "first").then(() => setCurrent(0));
  if (next < 0 && state.page > 1) return load(state.page - 1, "last").then(() => setCurrent(sections().length - 1));
  setCurrent(next);
}

function current() { return sections()[state.current]; }

function decision(section, action) {
  return {
    number: Number(section.dataset.number),
    members: section.dataset.members.split(",").map(Number),
    keep: Number(section.dataset.keep),
    action,
  };
}

async function pick(section, id) {
  if (!section || section.classList.contains("resolved")) return;
  const number = Number(section.dataset.number);
  try {
    const data = await api(`/dupes/groups/${number}?preset=${encodeURIComponent(preset())}&keep=${id}`);
    const fresh = replaceSection(number, data.html);
    const plan = state.plans.get(number);
    if (plan) plan.keep = id;
    const name = data.group.members.find((m) => m.kept).path.split("/").pop();
    say(`Group ${number}: keeping ${name}.`);
    if (fresh) fresh.focus({ preventScroll: true });
  } catch (err) {
    say(err.message, true);
  }
}

const touch = window.matchMedia("(hover: none), (pointer: coarse)");  // as the stylesheet: no key hints
function describeOutcome(data) {
  return data.message + (data.undo ? (touch.matches ? " (tap Undo to undo)" : " (u to undo)") : "");
}

// Another site's page can open this one and aim the user's next key or click at it (a
// double click whose second half lands on "Trash"). So actions are off on a page opened
// from another site (the server marks it), and for a moment after the page comes to the
// front or its groups first appear (not after the user's own undo or page turn).
const SETTLE_MS = 1000;
let settledAt = performance.now() + SETTLE_MS;
const unsettle = () => { settledAt = performance.now() + SETTLE_MS; };
window.addEventListener("focus", unsettle);
window.addEventListener("pageshow", unsettle);
document.addEventListener("visibilitychange", () => { if (!document.hidden) unsettle(); });
const openedElsewhere = document.body.dataset.opened === "elsewhere";
if (openedElsewhere) {
  const url = location.origin + location.pathname;
  $("elsewhere").textContent = `Another site opened this page, so its actions are off. To act on duplicates, open ${url} from the address bar or a bookmark.`;
  $("elsewhere").hidden = false;
}

function refused() {
  if (openedElsewhere) { say("Nothing done: another site opened this page (see above).", true); return true; }
  if (performance.now() < settledAt) { say("Nothing done: the page came to the front a moment ago. Press again.", true); return true; }
  return false;
}

async function submit(decisions) {
  if (state.busy || refused()) return;
  const moving = decisions.some((d) => d.action === "move");
  const moveTo = $("move-to").value.trim();
  if (moving && !moveTo) { say("Enter the folder to move duplicates to first.", true); $("move-to").focus(); return; }
  state.busy = true;
  say("Working…");
  try {
    const data = await api("/dupes/act", { decisions, move_to: moving ? moveTo : null, preset: preset() });
    for (const [number, html] of Object.entries(data.sections)) replaceSection(number, html);
    for (const d of decisions) state.plans.delete(d.number);
    updateApply();
    $("undo").disabled = !data.undo;
    say(describeOutcome(data), data.skipped.length > 0 && data.done === 0);
    refreshSummary();
    return data;
  } catch (err) {
    if (err.status === 409) {  // the groups changed (another program, an undo): review them again
      state.plans.clear();
      updateApply();
      await load(state.page);
    }
    say(err.message, true);
  } finally {
    state.busy = false;
  }
}

async function actNow(section, action) {
  if (!section || section.classList.contains("resolved")) return;
  const done = await submit([decision(section, action)]);
  if (done) move(1);
}

function plan(section, action) {
  if (!section || section.classList.contains("resolved")) return;
  const number = Number(section.dataset.number);
  if (action) state.plans.set(number, decision(section, action)); else state.plans.delete(number);
  decorate(section);
  updateApply();
}

function updateApply() {
  const n = state.plans.size;
  $("apply").textContent = `Apply reviewed (${n})`;
  $("apply").disabled = n === 0;
}

async function refreshSummary() {
  try {
    showSummary(await api(`/dupes/groups?preset=${encodeURIComponent(preset())}&page=${state.page}&size=1`)
      .then((d) => ({ ...d, page: state.page, pages: state.pages })));
  } catch (err) { /* the status line already says what went wrong */ }
}

async function undo() {
  if (state.busy || refused()) return;
  state.busy = true;
  try {
    const data = await api("/dupes/undo", {});
    state.plans.clear();  // the groups are computed again: their numbers may change
    updateApply();
    await load(state.page);
    say(data.message);
  } catch (err) {
    say(err.message, true);
  } finally {
    state.busy = false;
  }
}

// --- side-by-side comparison with zoom ----------------------------------------------
const dialog = $("compare");
let zoom = "fit";

function setZoom(value) {
  const ports = dialog.querySelectorAll(".viewport");
  const imgs = [$("left"), $("right")];
  if (value === "in" || value === "out") {
    const base = zoom === "fit" ? imgs[0].clientWidth / (imgs[0].naturalWidth || 1) : zoom;
    value = Math.min(8, Math.max(0.1, base * (value === "in" ? 1.5 : 1 / 1.5)));
  }
  zoom = value === "fit" ? "fit" : Number(value);
  ports.forEach((p) => p.classList.toggle("fit", zoom === "fit"));
  for (const img of imgs) img.style.width = zoom === "fit" ? "" : Math.round(img.naturalWidth * zoom) + "px";
  dialog.querySelectorAll("[data-zoom]").forEach((b) => {
    if (b.dataset.zoom === "fit" || b.dataset.zoom === "1") b.setAttribute("aria-pressed", String(String(zoom) === b.dataset.zoom));
  });
}

function compare(section, id) {
  if (!section) return;
  const kept = section.querySelector(".member.kept");
  const other = id ? section.querySelector(`.member[data-id="${id}"]`) : section.querySelector(".member:not(.kept)");
  if (!kept || !other) return;
  const left = kept.querySelector(".compare"), right = other.querySelector(".compare");
  $("left").src = withToken(left.dataset.full);
  $("left").alt = "Kept copy: " + left.dataset.name;
  $("right").src = withToken(right.dataset.full);
  $("right").alt = "Compared: " + right.dataset.name;
  $("left-name").innerHTML = "";
  $("right-name").innerHTML = "";
  for (const [el, btn, label] of [[$("left-name"), left, "Kept"], [$("right-name"), right, "Compared"]]) {
    const link = document.createElement("a");
    link.href = withToken(btn.dataset.full);
    link.target = "_blank";
    link.rel = "noopener";
    link.textContent = `${label}: ${btn.dataset.name} (full image)`;
    el.append(link);
  }
  $("compare-title").textContent = `Group ${section.dataset.number}: compare`;
  setZoom("fit");
  dialog.showModal();
}

dialog.addEventListener("click", (e) => {
  const button = e.target.closest("[data-zoom]");
  if (button) setZoom(button.dataset.zoom);
});
$("compare-close").addEventListener("click", () => dialog.close());
dialog.addEventListener("close", () => { const s = current(); if (s) s.focus({ preventScroll: true }); });
let syncing = false;
for (const port of dialog.querySelectorAll(".viewport")) {
  port.addEventListener("scroll", () => {  // the two panes pan together
    if (syncing) return;
    syncing = true;
    for (const other of dialog.querySelectorAll(".viewport")) {
      if (other !== port) { other.scrollLeft = port.scrollLeft; other.scrollTop = port.scrollTop; }
    }
    requestAnimationFrame(() => { syncing = false; });
  });
}

// --- events --------------------------------------------------------------------------
$("groups").addEventListener("click", (e) => {
  const section = e.target.closest(".group");
  if (!section) return;
  const index = sections().indexOf(section);
  if (index >= 0 && index !== state.current) setCurrent(index, false);
  const button = e.target.closest("button");
  if (!button) return;
  if (button.classList.contains("pick")) pick(section, Number(button.dataset.id));
  else if (button.classList.contains("compare")) compare(section, button.dataset.id);
  else if (button.dataset.act) actNow(section, button.dataset.act);
});
$("groups").addEventListener("change", (e) => {
  if (e.target.matches("select.plan")) plan(e.target.closest(".group"), e.target.value);
});
$("apply").addEventListener("click", () => submit(Array.from(state.plans.values())));
$("undo").addEventListener("click", undo);
$("preset").addEventListener("change", () => { state.plans.clear(); updateApply(); load(1); });
$("prev-page").addEventListener("click", () => load(state.page - 1, "first"));
$("next-page").addEventListener("click", () => load(state.page + 1, "first"));
$("options").addEventListener("submit", (e) => e.preventDefault());
$("move-to").value = localStorage.getItem("lookalike-move-to") || "";
$("move-to").addEventListener("change", () => localStorage.setItem("lookalike-move-to", $("move-to").value.trim()));

const shortcuts = $("shortcuts");
shortcuts.checked = localStorage.getItem("lookalike-shortcuts") !== "off";
shortcuts.addEventListener("change", () => localStorage.setItem("lookalike-shortcuts", shortcuts.checked ? "on" : "off"));

dialog.addEventListener("keydown", (e) => {  // zoom keys in the comparison
  const zoomKeys = { "+": "in", "=": "in", "-": "out", "0": "fit", "1": "1" };
  if (!e.ctrlKey && !e.metaKey && zoomKeys[e.key]) { setZoom(zoomKeys[e.key]); e.preventDefault(); }
});

const ACTING_KEYS = new Set(["t", "m", "i", "r", "u"]);
document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey || dialog.open || !shortcuts.checked) return;
  if (e.target.closest("input, select, textarea")) return;
  const section = current();
  const key = e.key;
  if (e.repeat && ACTING_KEYS.has(key)) { e.preventDefault(); return; }  // a held key acts once
  let handled = true;
  if (key === "j" || key === "ArrowRight") move(1);
  else if (key === "k" || key === "ArrowLeft") move(-1);
  else if (/^[1-9]$/.test(key) && section) {
    const member = section.querySelectorAll(".member")[Number(key) - 1];
    if (member) pick(section, Number(member.dataset.id));
  } else if (key === "t") actNow(section, "trash");
  else if (key === "m") actNow(section, "move");
  else if (key === "i") actNow(section, "ignore");
  else if (key === "r") { plan(section, "trash"); move(1); }
  else if (key === "c") compare(section);
  else if (key === "u") undo();
  else handled = false;
  if (handled) e.preventDefault();
});

load(1);

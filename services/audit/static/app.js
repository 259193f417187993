// The auditor page: plain DOM and fetch against the audit API (same origin).
"use strict";

const $ = (id) => document.getElementById(id);
const text = (value) => document.createTextNode(value == null ? "" : String(value));

function element(tag, attrs, ...children) {
  const node = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
  children.forEach((c) => node.appendChild(typeof c === "object" ? c : text(c)));
  return node;
}

// [milliseconds since the epoch, microseconds]: Date.parse alone drops the microseconds.
function instant(iso) {
  const m = /^(.*?T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$/.exec(iso) || [iso, iso, "", "Z"];
  const fraction = (m[2] || "").padEnd(6, "0");
  return [Date.parse(m[1] + "." + fraction.slice(0, 3) + (m[3] || "Z")), Number(fraction.slice(0, 6))];
}

function token() {
  return sessionStorage.getItem("auditToken") || "";
}

async function api(path, params) {
  const query = new URLSearchParams(
    Object.entries(params || {}).filter(([, v]) => v !== "" && v != null)
  );
  const response = await fetch(path + (query.toString() ? "?" + query : ""), {
    headers: { Authorization: "Bearer " + token() },
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(response.status + ": " + (body.detail || "request failed"));
  return body;
}

function show(target, ...nodes) {
  const node = $(target);
  node.replaceChildren(...nodes);
  node.classList.remove("muted");
}

function fail(target, error) {
  show(target, element("span", { class: "bad" }, String(error.message || error)));
}

function eventsTable(events) {
  const head = element("tr", {}, ...["#", "occurred", "type", "actor", "card", "batch"].map((h) => element("th", {}, h)));
  const rows = events.map((e) => {
    const card = e.card_id ? element("a", { href: "#", "data-card": e.card_id }, e.card_id) : text("");
    return element("tr", { class: "event" },
      element("td", {}, e.log_index), element("td", {}, e.occurred_at), element("td", {}, e.type),
      element("td", {}, e.actor), element("td", {}, card), element("td", {}, e.batch_id || ""));
  });
  return element("table", {}, head, ...rows);
}

async function search(event) {
  if (event) event.preventDefault();
  const params = { card_id: $("card-id").value.trim(), batch_id: $("batch-id").value.trim(),
    type: $("type").value.trim(), actor: $("actor").value.trim(), limit: 1000 };
  try {
    const found = await api("/v1/events", params);
    show("results", element("p", {}, found.events.length + " events"), eventsTable(found.events));
    if (params.card_id) await timeline(params.card_id);
  } catch (error) { fail("results", error); }
}

async function timeline(cardId) {
  try {
    const found = await api("/v1/events", { card_id: cardId, limit: 1000 });
    // The card's life in the order it happened (the log holds arrival order across streams).
    const events = found.events.slice().sort((a, b) => {
      const [x, y] = [instant(a.occurred_at), instant(b.occurred_at)];
      return x[0] - y[0] || x[1] - y[1] || a.log_index - b.log_index;
    });
    const items = events.map((e) => element("li", { class: "step", "data-type": e.type },
      element("strong", {}, e.type), " at " + e.occurred_at + " by " + e.actor,
      element("span", { class: "muted" }, " (log entry " + e.log_index + ")")));
    show("timeline", element("p", {}, "Card " + cardId + ": " + items.length + " events"),
      element("ol", { class: "timeline" }, ...items));
  } catch (error) { fail("timeline", error); }
}

async function batch(event) {
  if (event) event.preventDefault();
  try {
    const view = await api("/v1/batches/" + encodeURIComponent($("reconcile-batch-id").value.trim()) + "/reconciliation");
    const counts = Object.entries(view.counts).map(([k, v]) => element("li", {}, k + ": " + v));
    const missing = Object.entries(view.missing).map(([stage, ids]) => element("li", {}, stage + ": " + ids.join(", ")));
    show("batch",
      element("p", {}, "Status ", element("strong", { id: "batch-status" }, view.status),
        view.complete ? " (complete)" : " (incomplete)"),
      element("ul", {}, ...counts),
      element("p", {}, "Missing:"), element("ul", { id: "batch-missing" }, ...missing),
      element("p", {}, "Problems: " + (view.problems.join("; ") || "none")));
  } catch (error) { fail("batch", error); }
}

async function checkpoint() {
  try {
    const status = await api("/v1/log/checkpoints/latest/status");
    const cp = status.checkpoint;
    show("checkpoint",
      element("p", {}, element("span", { id: "checkpoint-verdict", class: status.ok ? "ok" : "bad" },
        status.ok ? "verified" : "NOT verified")),
      element("p", {}, cp ? "Tree size " + cp.tree_size + ", signed " + cp.timestamp +
        ", root " + cp.root_hash + ", key " + cp.key_id.slice(0, 16) + "…" : "no checkpoint"),
      element("p", {}, "Log size now " + status.log_size +
        (status.previous_tree_size != null ? "; consistent with checkpoint " + status.previous_tree_size : "")),
      element("p", { class: "bad" }, status.problems.join("; ")));
  } catch (error) { fail("checkpoint", error); }
}

async function securityEvents() {
  try {
    const found = await api("/v1/security-events", { limit: 1000 });
    const head = element("tr", {}, ...["#", "detected", "by", "type", "on topic", "its producer"].map((h) => element("th", {}, h)));
    const rows = found.security_events.map((e) => {
      const forged = e.forged || {};
      return element("tr", { class: "security-event" },
        element("td", {}, e.log_index), element("td", {}, e.detected_at), element("td", {}, e.detected_by),
        element("td", {}, forged.type), element("td", {}, forged.topic), element("td", {}, forged.producer));
    });
    show("security", element("p", { class: rows.length ? "bad" : "ok" }, rows.length + " security events"),
      element("table", {}, head, ...rows));
  } catch (error) { fail("security", error); }
}

async function controlEvents(event) {
  event.preventDefault();
  try {
    const params = { limit: 1000 };
    for (const [name, id] of [["act", "control-act"], ["outcome", "control-outcome"], ["principal", "control-principal"]]) {
      const value = $(id).value.trim();
      if (value) params[name] = value;
    }
    const found = await api("/v1/control-events", params);
    const head = element("tr", {}, ...["#", "when", "act", "subject", "step", "by", "started by", "outcome", "KCV"].map((h) => element("th", {}, h)));
    const rows = found.control_events.map((e) => element("tr", { class: "control-event" },
      element("td", {}, e.log_index), element("td", {}, e.occurred_at), element("td", {}, e.act),
      element("td", {}, e.subject), element("td", {}, e.step), element("td", {}, e.principal || "(keymgmt)"),
      element("td", {}, e.started_by || ""),
      element("td", { class: e.outcome === "refused" ? "bad" : "ok" }, e.outcome + (e.reason ? ": " + e.reason : "")),
      element("td", {}, e.kcv || "")));
    show("control", element("p", {}, rows.length + " steps"), element("table", {}, head, ...rows));
  } catch (error) { fail("control", error); }
}

$("save-token").addEventListener("click", () => {
  sessionStorage.setItem("auditToken", $("token").value.trim());
  $("who").textContent = "token set";
});
$("search").addEventListener("submit", search);
$("batch-form").addEventListener("submit", batch);
$("check").addEventListener("click", checkpoint);
$("security-button").addEventListener("click", securityEvents);
$("control-form").addEventListener("submit", controlEvents);
$("results").addEventListener("click", (event) => {
  const card = event.target.getAttribute && event.target.getAttribute("data-card");
  if (card) { event.preventDefault(); timeline(card); }
});

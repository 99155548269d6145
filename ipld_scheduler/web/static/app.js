// ipld-scheduler dashboard: renders the /api/v1/overview snapshot; live via server-sent events,
// falling back to polling. Builds DOM with textContent only: names and ids come from the network.
"use strict";

const KIND_COLOURS = {
  "schedule": "#60a5fa", "claim": "#a78bfa", "complete": "#34d399", "fail": "#f87171",
  "cancel": "#9ca3af", "peer-add": "#fbbf24", "peer-remove": "#fb923c", "evict": "#ef4444",
  "transfer": "#22d3ee", "reprioritize": "#f472b6", "checkpoint": "#d1d5db",
};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function cidLink(cid, short) {
  if (!cid) return el("span", {class: "muted"}, "–");
  const text = short ? cid.slice(0, 8) + "…" + cid.slice(-6) : cid;
  return el("a", {class: "cid", href: "/block/" + encodeURIComponent(cid), title: cid}, text);
}

function badge(text, kind) { return el("span", {class: "badge " + (kind || text)}, text); }

function fillTable(id, rows) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c)))));
}

function renderPeers(peers) {
  fillTable("peers", peers.map((p) => [
    el("span", {class: "mono"}, p.peer_id, p.self ? " (this peer)" : ""),
    p.member ? badge("member", "alive") : badge("removed"),
    p.liveness ? badge(p.liveness) : el("span", {class: "muted"}, "not heard"),
    p.labels ? el("span", {}, ...p.labels.map((l) => el("span", {class: "tag"}, l)))
      : el("span", {class: "muted"}, "none advertised"),
    String(p.assigned),
  ]));
}

function renderWorkflows(workflows, byStatus) {
  fillTable("workflows", workflows.map((w) => [
    el("span", {class: "mono"}, w.workflow_id),
    w.name || "",
    w.waiting
      ? el("span", {}, badge(w.status), " ", el("span", {class: "muted waiting", title: w.waiting}, w.waiting_detail))
      : badge(w.status),
    el("span", {class: "mono"}, w.owner || "–"),
    String(w.priority),
    el("span", {}, ...w.tags.map((t) => el("span", {class: "tag"}, t))),
    cidLink(w.schedule_cid, true),
  ]));
  const parts = Object.entries(byStatus || {}).map(([k, v]) => v + " " + k);
  document.getElementById("status-counts").textContent = parts.length ? "(" + parts.join(", ") + ")" : "";
}

function renderQueue(queue) {
  document.getElementById("queue").replaceChildren(...queue.map((id) => el("li", {class: "mono"}, id)));
  document.getElementById("queue-empty").hidden = queue.length > 0;
}

// Newest first by the DAG's own order: height descending, then CID (so concurrent events at one
// height keep a stable order on every peer, whatever order they arrived in).
function byHeightThenCid(a, b) {
  return (b.height - a.height) || (a.cid < b.cid ? -1 : a.cid > b.cid ? 1 : 0);
}

function renderEvents(events) {
  const rows = events.slice().sort(byHeightThenCid);
  fillTable("events", rows.map((e) => [
    String(e.height),
    el("span", {}, el("span", {class: "badge", style: "background:" + (KIND_COLOURS[e.kind] || "#e5e7eb")}, e.kind)),
    el("span", {class: "mono"}, e.author),
    el("span", {class: "mono"}, e.workflow_id || (e.body && e.body.peer) || ""),
    cidLink(e.cid, true),
    el("span", {}, ...e.parents.map((p) => el("span", {}, cidLink(p, true), " "))),
  ]));
  renderGraph(events);
}

function renderGraph(events) {
  const svg = document.getElementById("dag-graph");
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  if (!events.length) return;
  const authors = [...new Set(events.map((e) => e.author))].sort();
  const minH = Math.min(...events.map((e) => e.height));
  const maxH = Math.max(...events.map((e) => e.height));
  const width = svg.clientWidth || 900;
  const lane = Math.max(24, Math.min(40, 160 / authors.length));
  svg.setAttribute("viewBox", `0 0 ${width} ${lane * authors.length + 20}`);
  svg.style.height = (lane * authors.length + 20) + "px";
  const x = (h) => 110 + (maxH === minH ? 0 : (h - minH) * (width - 130) / (maxH - minH));
  const pos = {};
  const perSlot = {};
  for (const e of events) {
    const slot = e.author + "@" + e.height;
    const n = perSlot[slot] = (perSlot[slot] || 0) + 1;
    pos[e.cid] = [x(e.height) + (n - 1) * 6, 14 + lane * authors.indexOf(e.author) + (n - 1) * 4];
  }
  authors.forEach((a, i) => {
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", 4); label.setAttribute("y", 18 + lane * i);
    label.textContent = a.length > 16 ? a.slice(0, 15) + "…" : a;
    svg.append(label);
  });
  for (const e of events) {
    for (const p of e.parents) {
      if (!pos[p]) continue;
      const line = document.createElementNS(ns, "line");
      line.setAttribute("x1", pos[p][0]); line.setAttribute("y1", pos[p][1]);
      line.setAttribute("x2", pos[e.cid][0]); line.setAttribute("y2", pos[e.cid][1]);
      svg.append(line);
    }
  }
  for (const e of events) {
    const link = document.createElementNS(ns, "a");
    link.setAttribute("href", "/block/" + encodeURIComponent(e.cid));
    const dot = document.createElementNS(ns, "circle");
    dot.setAttribute("cx", pos[e.cid][0]); dot.setAttribute("cy", pos[e.cid][1]); dot.setAttribute("r", 5);
    dot.setAttribute("fill", KIND_COLOURS[e.kind] || "#e5e7eb");
    const title = document.createElementNS(ns, "title");
    title.textContent = `${e.kind} by ${e.author} at height ${e.height}\n${e.cid}`;
    dot.append(title); link.append(dot); svg.append(link);
  }
}

function render(data) {
  const status = data.status;
  document.getElementById("peer-id").textContent = status.peer_id;
  document.title = "ipld-scheduler: " + status.peer_id;
  document.getElementById("num-peers").textContent = status.num_peers;
  document.getElementById("queue-size").textContent = status.queue_size;
  document.getElementById("total-workflows").textContent = status.total_workflows;
  document.getElementById("num-events").textContent = status.clock.events;
  document.getElementById("height").textContent = status.clock.height;
  document.getElementById("heads").replaceChildren(...data.heads.map((h) => el("span", {}, cidLink(h, true), " ")));
  renderPeers(data.peers);
  renderQueue(data.queue);
  renderWorkflows(data.workflows, status.workflows_by_status);
  renderEvents(data.recent_events);
  document.body.dataset.version = String((Number(document.body.dataset.version) || 0) + 1);
}

function setConnection(text, kind) {
  const node = document.getElementById("connection");
  node.textContent = text;
  node.className = "badge " + kind;
}

let pollTimer = null;
async function poll() {
  try {
    const response = await fetch("/api/v1/overview");
    render(await response.json());
    setConnection("polling", "unknown");
  } catch (err) {
    setConnection("offline", "offline");
  }
}

function start() {
  if (!window.EventSource) { poll(); pollTimer = setInterval(poll, 2000); return; }
  const source = new EventSource("/api/v1/events");
  source.addEventListener("overview", (event) => {
    render(JSON.parse(event.data));
    setConnection("live", "live");
  });
  source.onerror = () => {
    setConnection("reconnecting…", "offline");
    if (!pollTimer) { poll(); pollTimer = setInterval(() => { if (source.readyState !== 1) poll(); }, 3000); }
  };
}

document.addEventListener("DOMContentLoaded", start);

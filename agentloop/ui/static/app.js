// agentloop run inspector: the page's only script (served as a file: the CSP allows no inline script).
// - a click on a waterfall bar opens that call's details;
// - a live run's page, and the runs list, follow the journal (see follow);
// - the status filter submits on change.
"use strict";

function openCall(id) {
  const el = document.getElementById("call-" + id);
  if (el && el.tagName === "DETAILS") {
    el.open = true;
    el.scrollIntoView({ block: "nearest" });
  }
}

function wire(root) {
  root.querySelectorAll("a.wf-row.call").forEach((a) => {
    a.addEventListener("click", (ev) => {
      ev.preventDefault();
      openCall(a.dataset.call);
    });
  });
}

// A live box (the run's body, or the runs list) asks its data-src again and again with the
// version it shows; the server answers 204 when nothing moved, else the new body and its version,
// both from one read of the journal (so a body and its version always agree). The state headers
// say whether to go on: a running or paused run, and the runs list, are followed; a stopped run
// gets one more look, then rest.
function waits(status) {
  return status === "paused" || status === "interrupted";
}

async function follow(box, every, stops) {
  let settled = false;
  for (;;) {
    await new Promise((r) => setTimeout(r, every));
    let res;
    try {
      const sep = box.dataset.src.includes("?") ? "&" : "?";
      res = await fetch(box.dataset.src + sep + "since=" + encodeURIComponent(box.dataset.version), { cache: "no-store" });
    } catch (e) {
      continue; // the server restarted or the network blinked: try again
    }
    if (res.status === 200) {
      const open = [...box.querySelectorAll("details[open]")].map((d) => d.id);
      const ticked = [...box.querySelectorAll("input[type=checkbox]:checked")].map((i) => i.value);
      box.innerHTML = await res.text(); // server-rendered and escaped by the server
      open.forEach((i) => { const d = document.getElementById(i); if (d) d.open = true; });
      box.querySelectorAll("input[type=checkbox]").forEach((i) => { if (ticked.includes(i.value)) i.checked = true; });
      box.dataset.version = res.headers.get("x-agentloop-version") || "";
      wire(box);
    } else if (res.status !== 204) {
      continue;
    }
    if (!stops) continue;
    const live = res.headers.get("x-agentloop-live") === "1";
    box.dataset.live = live ? "1" : "0";
    every = live ? 700 : 2000; // a paused or interrupted run waits for a decision or a resume
    if (live || waits(res.headers.get("x-agentloop-status"))) {
      settled = false;
    } else if (settled) {
      return;
    } else {
      settled = true;
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  wire(document);
  const filter = document.getElementById("status-filter");
  if (filter) filter.addEventListener("change", () => filter.form.submit());
  const box = document.getElementById("run");
  if (box) {
    if (location.hash.startsWith("#call-")) openCall(location.hash.slice(6));
    // paused and interrupted runs are followed too: a decision taken elsewhere, or a resume,
    // shows up by itself
    const status = document.getElementById("run-status");
    if (box.dataset.live === "1" || waits(status && status.textContent)) follow(box, 700, true);
  }
  const runs = document.getElementById("runs");
  if (runs) follow(runs, Number(runs.dataset.every) || 2000, false); // new runs appear, statuses change
});

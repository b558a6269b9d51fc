// agentloop run inspector: the page's only script (served as a file: the CSP allows no inline script).
// - a click on a waterfall bar opens that call's details;
// - a live run's page polls its /state and swaps in the new body when the journal moved;
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

async function poll(box) {
  const id = encodeURIComponent(box.dataset.run);
  for (;;) {
    await new Promise((r) => setTimeout(r, 700));
    let state;
    try {
      const res = await fetch("/state/" + id, { cache: "no-store" });
      if (!res.ok) continue;
      state = await res.json();
    } catch (e) {
      continue; // the server restarted or the network blinked: try again
    }
    if (state.version !== box.dataset.version) {
      const res = await fetch("/runs/" + id + "?partial=1", { cache: "no-store" });
      if (res.ok) {
        const open = [...box.querySelectorAll("details[open]")].map((d) => d.id);
        box.innerHTML = await res.text(); // server-rendered and escaped by the server
        open.forEach((id) => { const d = document.getElementById(id); if (d) d.open = true; });
        box.dataset.version = state.version;
        wire(box);
      }
    }
    box.dataset.live = state.live ? "1" : "0";
    if (!state.live && state.status !== "running") {
      // one more look shortly after the run stops, then rest
      if (box.dataset.settled === "1") return;
      box.dataset.settled = "1";
    } else {
      box.dataset.settled = "0";
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
    // paused runs are polled too: a decision taken elsewhere, or a resume, shows up by itself
    if (box.dataset.live === "1" || document.getElementById("approvals")) poll(box);
  }
});

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
  let settled = false;
  let delay = 700;
  for (;;) {
    await new Promise((r) => setTimeout(r, delay));
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
        open.forEach((i) => { const d = document.getElementById(i); if (d) d.open = true; });
        box.dataset.version = state.version;
        wire(box);
      }
    }
    box.dataset.live = state.live ? "1" : "0";
    // a running run is followed closely; a paused one waits for a decision (taken here or
    // elsewhere) and a resume; anything else has stopped: one more look, then rest
    delay = state.live ? 700 : 2000;
    if (state.live || state.status === "paused") {
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
    // paused runs are polled too: a decision taken elsewhere, or a resume, shows up by itself
    if (box.dataset.live === "1" || document.getElementById("approvals")) poll(box);
  }
});

// uphooks console: live rows, bulk-replay progress, copy buttons, confirmations. No build step.
"use strict";

function liveEvents() {
  const table = document.getElementById("events");
  if (!table || !table.dataset.live) return;
  const body = table.querySelector("tbody");
  const state = document.getElementById("live-state");
  let after = table.dataset.after;
  async function poll() {
    try {
      const url = table.dataset.live + (table.dataset.live.includes("?") ? "&" : "?") + "after=" + after;
      const res = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (res.redirected) {  // the session ended: the sign-in page, not rows
        if (state) state.textContent = "live updates stopped: sign in again";
        return;
      }
      if (res.status === 200) {
        after = res.headers.get("X-Newest") || after;
        const holder = document.createElement("tbody");
        holder.innerHTML = await res.text();
        const rows = Array.from(holder.querySelectorAll("tr[data-key]"));
        rows.reverse().forEach((row) => {
          const old = body.querySelector(`tr[data-key="${CSS.escape(row.dataset.key)}"]`);
          if (old) old.replaceWith(row); else body.prepend(row);
          row.classList.add("fresh");
        });
        if (rows.length) document.querySelectorAll(".empty").forEach((e) => e.remove());
        if (state) state.textContent = "live: updated " + new Date().toLocaleTimeString();
      } else if (state) {
        state.textContent = "live updates stopped (" + res.status + "): reload the page";
        return;
      }
    } catch (err) {
      if (state) state.textContent = "live: connection lost, retrying";
    }
    setTimeout(poll, 1500);
  }
  setTimeout(poll, 1500);
}

function jobProgress() {
  document.querySelectorAll("section.job").forEach((section) => {
    if (!["queued", "running"].includes(section.dataset.state)) return;
    async function poll() {
      const res = await fetch(section.dataset.job, { credentials: "same-origin" });
      if (res.status !== 200) return;
      const job = await res.json();
      const bar = section.querySelector("progress");
      bar.max = job.total || 1;
      bar.value = job.processed;
      section.querySelector(".job-state").textContent = job.state;
      section.dataset.state = job.state;
      section.querySelector(".job-counts").textContent =
        `${job.processed} of ${job.total} processed, ${job.replayed} replayed, ${job.skipped} skipped`;
      if (["queued", "running"].includes(job.state)) {
        setTimeout(poll, 400);
      } else {
        section.querySelectorAll("form").forEach((f) => f.remove());
      }
    }
    poll();
  });
}

function copyButtons() {
  document.querySelectorAll("button[data-copy]").forEach((button) => {
    button.addEventListener("click", async () => {
      const text = document.getElementById(button.dataset.copy).textContent;
      try {
        await navigator.clipboard.writeText(text);
        button.textContent = "Copied";
      } catch (err) {
        const range = document.createRange();
        range.selectNodeContents(document.getElementById(button.dataset.copy));
        window.getSelection().removeAllRanges();
        window.getSelection().addRange(range);
        button.textContent = "Selected: press Ctrl+C";
      }
    });
  });
}

function confirmations() {
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  liveEvents();
  jobProgress();
  copyButtons();
  confirmations();
});

// stackshift dashboard: live updates without a full reload.
//
// Every element with a data-live="URL" attribute is refreshed every few seconds
// (the <body>'s data-refresh-ms) with the HTML fragment the server renders at
// URL. The fragment is the server's own, escaped output; it replaces the
// element's content only when it changed. Updates pause while the tab is hidden,
// while a field inside the element has focus, and when the user pauses them.
"use strict";

(function () {
  const interval = Number(document.body.dataset.refreshMs) || 3000;
  let paused = false;

  function busy(element) {
    const active = document.activeElement;
    return active && element.contains(active) && active.matches("input, select, textarea");
  }

  async function refresh(element) {
    if (busy(element)) return;
    try {
      const response = await fetch(element.dataset.live, {
        credentials: "same-origin",
        headers: { Accept: "text/html" },
        cache: "no-store",
      });
      if (!response.ok) return;
      const html = await response.text();
      if (html !== element.dataset.shown) {
        element.innerHTML = html;
        element.dataset.shown = html;
      }
      document.body.classList.remove("offline");
    } catch (err) {
      document.body.classList.add("offline"); // server unreachable: try next tick
    }
  }

  function tick() {
    if (paused || document.hidden) return;
    document.querySelectorAll("[data-live]").forEach(refresh);
  }

  const toggle = document.querySelector("[data-live-toggle]");
  if (toggle) {
    toggle.hidden = false;
    toggle.addEventListener("click", function () {
      paused = !paused;
      toggle.textContent = paused ? "Resume live updates" : "Pause live updates";
      toggle.setAttribute("aria-pressed", String(paused));
      if (!paused) tick();
    });
  }
  setInterval(tick, interval);
})();

// The dashboard's little JavaScript: the overview refreshes itself, and a click on a grid
// of the map lists its tickets beside the map. Everything works without it, too.
(function () {
  "use strict";

  async function fetchHtml(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } });
    if (response.status === 401) { window.location.reload(); return null; }
    if (!response.ok) return null;
    return response.text();
  }

  const live = document.getElementById("live");
  if (live) {
    const every = Math.max(200, Number(live.dataset.liveMs) || 5000);
    let busy = false;
    setInterval(async () => {
      if (busy || document.hidden) return;
      busy = true;
      try {
        const html = await fetchHtml(live.dataset.liveUrl);
        if (html !== null) { live.innerHTML = html; live.dataset.updated = String(Date.now()); }
      } catch (e) { /* offline for a moment: try again next time */ }
      busy = false;
    }, every);
  }

  const panel = document.getElementById("grid-panel");
  if (panel) {
    for (const link of document.querySelectorAll("a.grid-link")) {
      link.addEventListener("click", async (event) => {
        event.preventDefault();
        for (const p of document.querySelectorAll("path.grid.chosen")) p.classList.remove("chosen");
        const path = link.querySelector("path");
        if (path) path.classList.add("chosen");
        const html = await fetchHtml(link.dataset.panel);
        if (html !== null) {
          panel.innerHTML = html;  // rendered and escaped by the server
          panel.dataset.code = link.dataset.code;
        }
      });
    }
  }
})();

// Live refresh without reloading the page: fetch the same URL and swap <main>.
(function () {
  const main = document.getElementById("main");
  if (!main) return;
  const secs = Number(main.dataset.refreshSecs || "0");
  if (!secs) return;
  async function refresh() {
    try {
      const res = await fetch(window.location.href, { headers: { "Accept": "text/html" }, cache: "no-store" });
      if (!res.ok) return;
      const doc = new DOMParser().parseFromString(await res.text(), "text/html");
      const fresh = doc.getElementById("main");
      const updated = doc.getElementById("updated");
      if (fresh) main.innerHTML = fresh.innerHTML;
      if (updated) document.getElementById("updated").textContent = updated.textContent;
    } catch (e) {
      // Server restarting: keep the last view and try again next time.
    }
  }
  setInterval(refresh, secs * 1000);
})();

// fleetpilot dashboard: live refresh of the page's live part, the time-range picker, the silence form's
// custom duration, the copy button.
(function () {
  "use strict";
  const live = document.getElementById("live");
  const secs = live ? Number(live.dataset.refreshSecs || "0") : 0;
  let busy = false;

  // Fetch `?fragment=1` of the same URL and swap the live part; no full reload, forms outside it keep state.
  async function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const url = new URL(window.location.href);
      url.searchParams.set("fragment", "1");
      const res = await fetch(url, { headers: { "Accept": "text/html" }, cache: "no-store", credentials: "same-origin" });
      if (res.ok && !res.redirected) {
        live.innerHTML = await res.text();
        const updated = document.getElementById("updated");
        if (updated) updated.textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
      }
    } catch (e) {
      // Server restarting: keep the last view and try again next time.
    } finally {
      busy = false;
    }
  }
  if (live && secs > 0) setInterval(refresh, secs * 1000);

  // Time-range picker and other selects marked data-autosubmit: apply on change.
  document.querySelectorAll("select[data-autosubmit]").forEach(function (sel) {
    sel.addEventListener("change", function () { sel.form.submit(); });
  });

  // Silence form: the custom duration field matters only with "custom".
  const duration = document.getElementById("duration");
  const custom = document.getElementById("duration_custom");
  if (duration && custom) {
    // Not `hidden`: the stylesheet makes labels blocks, which would override it.
    const sync = function () { custom.closest("label").style.display = duration.value === "custom" ? "" : "none"; };
    duration.addEventListener("change", sync);
    sync();
  }

  // Copy buttons: copy the text of the element named by data-copy.
  document.querySelectorAll("button[data-copy]").forEach(function (btn) {
    btn.addEventListener("click", async function () {
      const el = document.getElementById(btn.dataset.copy);
      if (!el) return;
      const text = el.textContent.trim();
      try {
        await navigator.clipboard.writeText(text);
      } catch (e) {
        // No clipboard API (plain http): select the text so Ctrl-C works.
        const range = document.createRange();
        range.selectNodeContents(el);
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
      }
      btn.textContent = "Copied";
      setTimeout(function () { btn.textContent = "Copy"; }, 1500);
    });
  });
})();

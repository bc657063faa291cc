/* The sidebar's controls: filters, smoothing, axes, outliers, zoom sync, tooltip order, transport,
 * theme, show all/none, download all. Each writes the view and calls `changed(what)` (main.js
 * redraws, saves the URL and preferences). */

import { exportAll } from "./export.js";
import { runs, view } from "./model.js";
import { switchTransport } from "./sync.js";

const $ = (id) => document.getElementById(id);

function debounce(fn, ms) {
  let t = null;
  return () => {
    if (t !== null) clearTimeout(t);
    t = setTimeout(() => {
      t = null;
      fn();
    }, ms);
  };
}

/** Put the view into the controls (at boot, and after the URL changed under us). */
export function showView() {
  $("run-filter").value = view.runFilter;
  $("tag-filter").value = view.tagFilter;
  $("smoothing").value = String(view.smoothing);
  $("smoothing-value").textContent = view.smoothing.toFixed(2);
  $("log-scale").checked = view.logScale;
  $("log-x").checked = view.logX;
  $("x-mode").value = view.xMode;
  $("outliers").checked = view.outliers;
  $("sync-zoom").checked = view.syncZoom;
  $("tooltip-sort").value = view.tooltipSort;
  $("transport").value = view.transport;
}

export function bindControls(changed) {
  showView();
  const filterChanged = debounce(() => {
    view.runFilter = $("run-filter").value.trim();
    view.tagFilter = $("tag-filter").value.trim();
    changed("filters");
  }, 80);
  $("run-filter").addEventListener("input", filterChanged);
  $("tag-filter").addEventListener("input", filterChanged);
  $("smoothing").addEventListener("input", () => {
    view.smoothing = Number($("smoothing").value);
    $("smoothing-value").textContent = view.smoothing.toFixed(2);
    changed("display");
  });
  const check = (id, key, what = "display") =>
    $(id).addEventListener("change", () => {
      view[key] = $(id).checked;
      changed(what);
    });
  check("log-scale", "logScale");
  check("log-x", "logX", "x");
  check("outliers", "outliers");
  check("sync-zoom", "syncZoom", "prefs");
  $("x-mode").addEventListener("change", () => {
    view.xMode = $("x-mode").value;
    changed("x"); // a window in steps means nothing in seconds: zooms reset
  });
  $("tooltip-sort").addEventListener("change", () => {
    view.tooltipSort = $("tooltip-sort").value;
    changed("prefs");
  });
  $("transport").addEventListener("change", () => {
    view.transport = $("transport").value === "ws" ? "ws" : "sse";
    changed("prefs");
    switchTransport();
  });
  const setAll = (checked) => {
    for (const run of runs.values()) {
      run.checked = checked;
      if (run.box) run.box.checked = checked; // a row not built yet is built with run.checked
    }
    changed("runs");
  };
  $("runs-all").addEventListener("click", () => setAll(true));
  $("runs-none").addEventListener("click", () => setAll(false));
  $("download-all").addEventListener("click", () => exportAll());
  $("theme-toggle").addEventListener("click", () => {
    const root = document.documentElement;
    const current = root.dataset.theme || (matchMedia("(prefers-color-scheme: light)").matches ? "light" : "dark");
    root.dataset.theme = current === "dark" ? "light" : "dark";
    changed("theme");
  });
  matchMedia("(prefers-color-scheme: light)").addEventListener("change", () => changed("theme"));
}

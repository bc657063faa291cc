/* A card's tool buttons: reset zoom, pin, the card's outlier switch, a fixed y range, and the
 * CSV / JSON / PNG downloads. Each writes the view and calls `changed(chart)` (redraw and save). */

import { chartOption } from "./chart.js";
import { exportChart } from "./export.js";
import { setPinned } from "./layout.js";
import { view } from "./model.js";

function tool(chart, name, label, title, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "ghost small tool";
  b.dataset.tool = name;
  b.textContent = label;
  b.title = title;
  b.addEventListener("click", onClick);
  chart.tools.append(b);
  return b;
}

/** Show the switches' state (pressed) and the reset button only while zoomed. */
export function refreshTools(chart) {
  const t = chart.toolButtons;
  if (!t) return; // not added yet (main.js adds them after the first paint)
  t.pin.setAttribute("aria-pressed", String(view.pins.includes(chart.tag)));
  t.outliers.setAttribute("aria-pressed", String(chartOption(chart.tag, "outliers")));
  t.ylim.setAttribute("aria-pressed", String(!!view.yLimits[chart.tag]));
  t.reset.hidden = !chart.zoom();
}

/* The fixed y range form: two numbers under the card's header; empty both to clear. */
function yLimitForm(chart, changed) {
  const form = document.createElement("form");
  form.className = "ylim";
  form.hidden = true;
  const lo = Object.assign(document.createElement("input"), { type: "number", step: "any", placeholder: "y min", name: "lo" });
  const hi = Object.assign(document.createElement("input"), { type: "number", step: "any", placeholder: "y max", name: "hi" });
  const ok = Object.assign(document.createElement("button"), { type: "submit", className: "ghost small", textContent: "set" });
  form.append(lo, hi, ok);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const a = Number(lo.value);
    const b = Number(hi.value);
    if (lo.value === "" && hi.value === "") delete view.yLimits[chart.tag];
    else if (lo.value !== "" && hi.value !== "" && a < b) view.yLimits[chart.tag] = [a, b];
    else return; // say nothing: the inputs stay for a fix
    form.hidden = true;
    changed(chart);
  });
  chart.card.querySelector("header").after(form);
  return (open) => {
    const cur = view.yLimits[chart.tag];
    lo.value = cur ? String(cur[0]) : "";
    hi.value = cur ? String(cur[1]) : "";
    form.hidden = !open;
    if (open) lo.focus();
  };
}

/** Add the tools to a new card. */
export function addTools(chart, { setZoom, changed }) {
  const tag = chart.tag;
  const showForm = yLimitForm(chart, changed);
  chart.toolButtons = {
    reset: tool(chart, "reset", "⤺", "reset zoom (or double-click the chart)", () => setZoom(chart, null)),
    pin: tool(chart, "pin", "pin", "pin this chart to the top", () => {
      setPinned(tag, !view.pins.includes(tag));
      changed(chart);
    }),
    outliers: tool(chart, "outliers", "outliers", "ignore outliers in this chart (robust y range)", () => {
      const o = view.chartOptions[tag] || {};
      o.outliers = !chartOption(tag, "outliers"); // this chart now differs from the global switch
      if (o.outliers === view.outliers) delete o.outliers; // ... or follows it again
      view.chartOptions[tag] = o;
      changed(chart);
    }),
    ylim: tool(chart, "ylim", "y", "fix the y range of this chart (empty both to clear)", () =>
      showForm(chart.card.querySelector("form.ylim").hidden),
    ),
    csv: tool(chart, "csv", "csv", "download what this chart shows as CSV", () => exportChart(chart, "csv")),
    json: tool(chart, "json", "json", "download what this chart shows as JSON", () => exportChart(chart, "json")),
    png: tool(chart, "png", "png", "download this chart as a PNG image", () => exportChart(chart, "png")),
  };
  refreshTools(chart);
}

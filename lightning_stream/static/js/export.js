/* Downloads: a chart's data as CSV or JSON (exact points from /api/series, for the runs shown and
 * the zoom window), its picture as PNG, and "download all" for every chart the filters leave.
 * `toCSV` is pure (node-tested). */

import { getSeries as fetchSeries } from "./api.js";
import { escapeGlob } from "./glob.js";
import { charts, noteError, runVisible, runs, tagVisible } from "./model.js";

/** CSV with the header the server's format=csv uses: run,tag,step,wall_time,value. */
export function toCSV(seriesList) {
  const quote = (s) => (/[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);
  const lines = ["run,tag,step,wall_time,value"];
  for (const s of seriesList) {
    const run = quote(s.run);
    const tag = quote(s.tag);
    for (let i = 0; i < s.steps.length; i++) lines.push(`${run},${tag},${s.steps[i]},${s.wall_times[i]},${s.values[i]}`);
  }
  return lines.join("\n") + "\n";
}

/** Safe file name from a tag: "train/loss" -> "train_loss". */
export function fileName(tag, ext) {
  return `${String(tag).replace(/[^A-Za-z0-9._-]+/g, "_") || "chart"}.${ext}`;
}

function save(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

/** The exact data a chart shows: every visible run, inside the zoom window if zoomed. */
export async function chartData(chart) {
  const query = { run: "*", tag: escapeGlob(chart.tag) };
  const z = chart.zoomSteps();
  if (z) [query.start_step, query.end_step] = z;
  const body = await fetchSeries(query);
  return body.series.filter((s) => s.tag === chart.tag && runs.has(s.run) && runVisible(runs.get(s.run)));
}

export async function exportChart(chart, format) {
  try {
    if (format === "png") {
      chart.canvas.toBlob((blob) => blob && save(blob, fileName(chart.tag, "png")), "image/png");
      return;
    }
    const data = await chartData(chart);
    if (format === "csv") save(new Blob([toCSV(data)], { type: "text/csv" }), fileName(chart.tag, "csv"));
    else save(new Blob([JSON.stringify({ series: data })], { type: "application/json" }), fileName(chart.tag, "json"));
  } catch (err) {
    noteError(`export ${chart.tag}: ${err.message}`);
  }
}

/** Every series of the charts the filters show, as one CSV. */
export async function exportAll() {
  try {
    const body = await fetchSeries({ run: "*", tag: "*" });
    const data = body.series.filter(
      (s) => tagVisible(s.tag) && charts.has(s.tag) && !charts.get(s.tag).card.hidden && runs.has(s.run) && runVisible(runs.get(s.run)),
    );
    save(new Blob([toCSV(data)], { type: "text/csv" }), "lightning-stream.csv");
  } catch (err) {
    noteError(`export all: ${err.message}`);
  }
}

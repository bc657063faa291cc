/* Where cards go: groups by tag prefix (TensorBoard's rule: text before the first "/"), pinned cards
 * in their own group at the top, and which cards and headers are shown for the current filters. */

import { charts, runVisible, state, tagVisible, view } from "./model.js";

const PINNED = "\u0000pinned";
const groups = new Map(); // tag prefix -> Group (header + charts)
let container = null;
let emptyEl = null;
let onToggle = () => {};

export function initLayout(chartsEl, empty, toggled) {
  container = chartsEl;
  emptyEl = empty;
  onToggle = toggled;
  getGroup(PINNED).title.textContent = "Pinned";
  getGroup("").title.textContent = "ungrouped"; // shown only below pinned cards
}

/** TensorBoard groups charts by the tag's prefix before the first "/"; tags without one share a
 * group without a header, at the top. */
export function groupName(tag) {
  const slash = tag.indexOf("/");
  return slash > 0 ? tag.slice(0, slash) : "";
}

function insertSorted(node, key) {
  node.dataset.key = key;
  let before = null;
  for (const other of container.children) {
    if (other.dataset.key > key) {
      before = other;
      break;
    }
  }
  container.insertBefore(node, before);
}

function getGroup(name) {
  let group = groups.get(name);
  if (group) return group;
  const header = document.createElement("button");
  header.type = "button";
  header.className = "group";
  header.dataset.group = name === PINNED ? "pinned" : name;
  header.setAttribute("aria-expanded", "true");
  const caret = document.createElement("span");
  caret.className = "caret";
  caret.textContent = "▾";
  const title = document.createElement("span");
  title.className = "group-name";
  title.textContent = name;
  const count = document.createElement("span");
  count.className = "group-count";
  header.append(caret, title, count);
  header.hidden = true;
  group = { name, header, title, countEl: count, charts: new Set(), collapsed: false };
  header.addEventListener("click", () => {
    group.collapsed = !group.collapsed;
    header.setAttribute("aria-expanded", String(!group.collapsed));
    header.classList.toggle("collapsed", group.collapsed);
    onToggle(group);
  });
  groups.set(name, group);
  // the pinned group sorts first (\u0000 < any tag), then "" (no prefix), then prefixes
  insertSorted(header, name === PINNED ? "\u0000" : `\u0001${name}\u0000`);
  return group;
}

/** Put a new card in its group (or the pinned group). */
export function placeChart(chart) {
  const pinned = view.pins.includes(chart.tag);
  const group = getGroup(pinned ? PINNED : groupName(chart.tag));
  for (const g of groups.values()) g.charts.delete(chart);
  group.charts.add(chart);
  chart.group = group;
  chart.pinned = pinned;
  chart.card.classList.toggle("pinned", pinned);
  insertSorted(chart.card, pinned ? `\u0000\u0000${chart.tag}` : `\u0001${group.name}\u0000${chart.tag}`);
}

/** Pin or unpin `tag` (its card moves). */
export function setPinned(tag, pinned) {
  const i = view.pins.indexOf(tag);
  if (pinned && i < 0) view.pins.push(tag);
  if (!pinned && i >= 0) view.pins.splice(i, 1);
  const chart = charts.get(tag);
  if (chart) placeChart(chart);
  refreshLayout();
}

/** A chart is wanted when its tag passes the filter and a visible run has (or is loading) data. */
export function hasVisibleData(chart) {
  for (const s of chart.series) {
    if (runVisible(s.run) && (s.n > 0 || chart.loadState !== "loaded")) return true;
  }
  return false;
}

/** Show the cards and headers the filters and folds call for; say why when nothing is shown. */
export function refreshLayout() {
  let pinnedShown = false; // the pinned group comes first; then the tags without a prefix need a header too
  for (const group of groups.values()) {
    let matching = 0;
    for (const chart of group.charts) {
      const wanted = tagVisible(chart.tag) && hasVisibleData(chart);
      if (wanted) matching += 1;
      const shown = wanted && !group.collapsed;
      if (chart.card.hidden === shown) chart.card.hidden = !shown;
    }
    if (group.name === PINNED) pinnedShown = matching > 0;
    const headerShown = matching > 0 && (group.name !== "" || pinnedShown);
    if (group.header.hidden === headerShown) group.header.hidden = !headerShown;
    const label = `${matching} chart${matching === 1 ? "" : "s"}`;
    if (group.countEl.textContent !== label) group.countEl.textContent = label;
  }
  updateEmpty();
}

function updateEmpty() {
  let text = "";
  if (!state.loaded) text = state.loading ? "Loading…" : "Connecting…";
  else if (charts.size === 0) text = "No scalars yet: waiting for the first point.";
  else {
    let any = false;
    for (const c of charts.values()) if (!c.card.hidden) any = true;
    for (const g of groups.values()) if (!g.header.hidden) any = true;
    if (!any) text = "No chart matches the run and tag filters.";
  }
  emptyEl.textContent = text;
  emptyEl.hidden = !text;
}

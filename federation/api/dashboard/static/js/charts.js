// Charts drawn as SVG from the API's numbers: forecasts with bands, bars, Gantt charts.
// Every chart states its unit; a Gantt uses one time unit on its whole axis.

const NS = "http://www.w3.org/2000/svg";
export const PALETTE = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];

function el(name, attrs = {}, parent = null) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function text(parent, x, y, content, attrs = {}) {
  const t = el("text", { x, y, "font-size": 11, ...attrs }, parent);
  t.textContent = content;
  return t;
}

function svg(width, height) {
  // Scales to its container's width (the viewBox keeps the proportions and the text legible).
  return el("svg", {
    width: "100%", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "xMinYMin meet", role: "img",
  });
}

/** Round tick values covering [lo, hi]. */
export function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9 * step; v += step) out.push(+v.toFixed(10));
  return out;
}

/** The one time unit of an axis spanning `seconds`: [divisor, name]. */
export function timeUnit(seconds) {
  if (seconds >= 3 * 3600) return [3600, "h"];
  if (seconds >= 180) return [60, "min"];
  return [1, "s"];
}

export function fmt(v, digits = 3) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(2);
  return (+v.toPrecision(digits)).toLocaleString("en", { maximumFractionDigits: 6 });
}

function axes(g, { x0, x1, y0, y1, xs, ys, sx, sy, xLabel, yLabel, xFmt = fmt, yFmt = fmt }) {
  el("line", { x1: x0, x2: x1, y1: y0, y2: y0, stroke: "#888" }, g);
  el("line", { x1: x0, x2: x0, y1: y0, y2: y1, stroke: "#888" }, g);
  for (const v of xs) {
    const x = sx(v);
    el("line", { x1: x, x2: x, y1: y0, y2: y0 + 4, stroke: "#888" }, g);
    text(g, x, y0 + 16, xFmt(v), { "text-anchor": "middle" });
  }
  for (const v of ys) {
    const y = sy(v);
    el("line", { x1: x0 - 4, x2: x1, y1: y, y2: y, stroke: "#eee" }, g);
    text(g, x0 - 6, y + 4, yFmt(v), { "text-anchor": "end" });
  }
  if (xLabel) text(g, (x0 + x1) / 2, y0 + 32, xLabel, { "text-anchor": "middle", fill: "#555" });
  if (yLabel) {
    text(g, 12, (y0 + y1) / 2, yLabel, {
      "text-anchor": "middle", fill: "#555", transform: `rotate(-90 12 ${(y0 + y1) / 2})`,
    });
  }
}

/**
 * Forecast lines with their ±2 sd bands.
 * series: [{label, color, x: [...], mean: [...], std: [...]}]
 */
export function forecastChart(container, { series, xLabel, yLabel, width = 440, height = 190, yMin }) {
  const m = { l: 66, r: 10, t: 10, b: 40 };
  const root = svg(width, height);
  const xsAll = series.flatMap((s) => s.x);
  const lo = series.flatMap((s) => s.mean.map((v, i) => v - 2 * (s.std[i] || 0)));
  const hi = series.flatMap((s) => s.mean.map((v, i) => v + 2 * (s.std[i] || 0)));
  if (!xsAll.length) {
    container.textContent = "no forecast";
    return;
  }
  const xMin = Math.min(...xsAll), xMax = Math.max(...xsAll);
  let yLo = Math.min(...lo), yHi = Math.max(...hi);
  if (yMin !== undefined) yLo = Math.max(yLo, yMin);
  if (yHi - yLo < 1e-9) { yHi += 1; yLo -= 1; }
  const sx = (v) => m.l + ((v - xMin) / (xMax - xMin || 1)) * (width - m.l - m.r);
  const sy = (v) => height - m.b - ((v - yLo) / (yHi - yLo)) * (height - m.t - m.b);
  axes(root, {
    x0: m.l, x1: width - m.r, y0: height - m.b, y1: m.t, xs: ticks(xMin, xMax), ys: ticks(yLo, yHi, 4),
    sx, sy, xLabel, yLabel,
  });
  for (const s of series) {
    const up = s.x.map((x, i) => `${sx(x)},${sy(Math.min(yHi, s.mean[i] + 2 * (s.std[i] || 0)))}`);
    const down = s.x.map((x, i) => `${sx(x)},${sy(Math.max(yLo, s.mean[i] - 2 * (s.std[i] || 0)))}`).reverse();
    el("polygon", { points: [...up, ...down].join(" "), fill: s.color, opacity: 0.18 }, root);
    el("polyline", {
      points: s.x.map((x, i) => `${sx(x)},${sy(s.mean[i])}`).join(" "),
      fill: "none", stroke: s.color, "stroke-width": 1.8,
    }, root);
  }
  container.replaceChildren(root);
}

/**
 * Grouped bars: one group per category, one bar per series.
 * series: [{label, color, values: [...]}] (one value per category; null leaves a gap)
 */
export function barChart(container, { categories, series, yLabel, width = 440, height = 210, marks = [] }) {
  const m = { l: 72, r: 10, t: 14, b: 46 };
  const root = svg(width, height);
  const all = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined);
  const yHi = Math.max(0, ...all, ...marks.map((k) => k.value)) || 1;
  const sy = (v) => height - m.b - (v / yHi) * (height - m.t - m.b);
  const band = (width - m.l - m.r) / Math.max(1, categories.length);
  const bw = (band * 0.8) / Math.max(1, series.length);
  axes(root, {
    x0: m.l, x1: width - m.r, y0: height - m.b, y1: m.t, xs: [], ys: ticks(0, yHi, 4),
    sx: () => 0, sy, yLabel,
  });
  categories.forEach((c, i) => {
    const cx = m.l + band * i + band / 2;
    text(root, cx, height - m.b + 15, c, { "text-anchor": "middle" });
    series.forEach((s, j) => {
      const v = s.values[i];
      if (v === null || v === undefined) return;
      const x = m.l + band * i + band * 0.1 + j * bw;
      const r = el("rect", { x, y: sy(v), width: Math.max(1, bw - 2), height: Math.max(0, sy(0) - sy(v)), fill: s.color }, root);
      el("title", {}, r).textContent = `${s.label} ${c}: ${fmt(v)}`;
      if (series.length * categories.length <= 12) {
        text(root, x + bw / 2 - 1, sy(v) - 3, fmt(v), { "text-anchor": "middle", "font-size": 10 });
      }
    });
  });
  for (const mk of marks) {
    el("line", { x1: m.l, x2: width - m.r, y1: sy(mk.value), y2: sy(mk.value), stroke: "#c62828", "stroke-dasharray": "5 3" }, root);
    text(root, width - m.r, sy(mk.value) - 4, mk.label, { "text-anchor": "end", fill: "#c62828" });
  }
  container.replaceChildren(root);
}

/** Lanes of one site: each bar goes to the first lane free at its start. */
function packLanes(bars) {
  const lanes = [];
  const out = [];
  for (const b of [...bars].sort((a, z) => a.start - z.start || String(a.label).localeCompare(z.label))) {
    let k = lanes.findIndex((free) => free <= b.start + 1e-9);
    if (k < 0) { lanes.push(0); k = lanes.length - 1; }
    lanes[k] = b.end;
    out.push({ ...b, lane: k });
  }
  return { bars: out, lanes: Math.max(1, lanes.length) };
}

/**
 * A Gantt chart with one band of lanes per site.
 *   panels: [{title, bars: [{label, site, start, end, color, hatch, title}]}]  (seconds)
 *   transfers: [{panel, src, dst, start, end, label}]   drawn as arrows between site bands
 *   marks: [{panel, t, label, color}]                    vertical lines (a fault)
 * All panels share the time axis and its one unit.
 */
export function ganttChart(container, { panels, sites, transfers = [], marks = [], width = container.clientWidth || 1000 }) {
  const m = { l: 110, r: 20, t: 8, b: 40 };
  const laneH = 20, gap = 8, titleH = 18;
  const tMax = Math.max(1e-9, ...panels.flatMap((p) => p.bars.map((b) => b.end)),
    ...transfers.map((t) => t.end), ...marks.map((k) => k.t));
  const [div, unit] = timeUnit(tMax);
  const sx = (t) => m.l + (t / tMax) * (width - m.l - m.r);
  const layout = panels.map((p) => {
    const bySite = {};
    for (const s of sites) bySite[s] = packLanes(p.bars.filter((b) => b.site === s));
    return bySite;
  });
  let y = m.t;
  const bands = panels.map((p, i) => {
    const top = y;
    y += titleH;
    const rows = {};
    for (const s of sites) {
      rows[s] = { y, lanes: layout[i][s].lanes };
      y += layout[i][s].lanes * laneH + gap;
    }
    return { top, rows, bottom: y };
  });
  const height = y + m.b;
  const root = svg(width, height);
  const defs = el("defs", {}, root);
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, defs);
  el("path", { d: "M0,0 L10,5 L0,10 z", fill: "#333" }, marker);
  const pattern = el("pattern", { id: "hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" }, defs);
  el("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#000", "stroke-width": 2, opacity: 0.35 }, pattern);
  const xs = ticks(0, tMax / div, 8);
  for (const v of xs) {
    el("line", { x1: sx(v * div), x2: sx(v * div), y1: m.t, y2: height - m.b, stroke: "#eee" }, root);
    text(root, sx(v * div), height - m.b + 15, fmt(v), { "text-anchor": "middle" });
  }
  text(root, (m.l + width - m.r) / 2, height - 8, `time from the start (${unit})`, { "text-anchor": "middle", fill: "#555" });
  panels.forEach((p, i) => {
    const band = bands[i];
    text(root, m.l, band.top + 12, p.title, { "font-weight": 600 });
    for (const s of sites) {
      const row = band.rows[s];
      el("rect", { x: m.l, y: row.y - 2, width: width - m.l - m.r, height: row.lanes * laneH, fill: "#f4f6f8" }, root);
      text(root, m.l - 8, row.y + (row.lanes * laneH) / 2 + 2, s, { "text-anchor": "end", "font-weight": 600 });
      for (const b of layout[i][s].bars) {
        const x = sx(b.start), w = Math.max(1.5, sx(b.end) - sx(b.start));
        const by = row.y + b.lane * laneH;
        const g = el("g", { class: "bar" }, root);
        el("rect", { x, y: by, width: w, height: laneH - 4, fill: b.color, rx: 2 }, g);
        if (b.hatch) el("rect", { x, y: by, width: w, height: laneH - 4, fill: "url(#hatch)" }, g);
        el("title", {}, g).textContent = b.title || `${b.label} on ${b.site}`;
        if (w > 7 * String(b.label).length) {
          text(g, x + 3, by + 12, b.label, { fill: "#fff", "font-size": 10.5 });
        }
      }
    }
  });
  for (const t of transfers) {
    const band = bands[t.panel || 0];
    const a = band.rows[t.src], z = band.rows[t.dst];
    if (!a || !z) continue;
    const y1 = a.y + (a.lanes * laneH) / 2 - 2, y2 = z.y + (z.lanes * laneH) / 2 - 2;
    const g = el("g", { class: "transfer" }, root);
    el("line", { x1: sx(t.start), y1, x2: sx(t.end), y2, stroke: "#333", "stroke-width": 1.3, "marker-end": "url(#arrow)" }, g);
    el("title", {}, g).textContent = `${t.label}: ${t.src} → ${t.dst}`;
    text(g, (sx(t.start) + sx(t.end)) / 2 + 4, (y1 + y2) / 2, t.label, { "font-size": 10, fill: "#333" });
  }
  for (const k of marks) {
    const band = bands[k.panel || 0];
    el("line", { x1: sx(k.t), x2: sx(k.t), y1: band.top + titleH - 4, y2: band.bottom - gap, stroke: k.color || "#c62828", "stroke-width": 2 }, root);
    text(root, sx(k.t) + 4, band.top + titleH + 8, k.label, { fill: k.color || "#c62828", "font-weight": 600 });
  }
  container.replaceChildren(root);
}

/** Colours for the values of a key (step categories, planners), stable in first-seen order. */
export function colours(values) {
  const out = {};
  [...new Set(values)].forEach((v, i) => { out[v] = PALETTE[i % PALETTE.length]; });
  return out;
}

/** A legend of coloured swatches. */
export function legend(entries) {
  const div = document.createElement("div");
  div.className = "legend";
  for (const [label, colour] of entries) {
    const span = document.createElement("span");
    const i = document.createElement("i");
    i.style.background = colour;
    span.append(i, label);
    div.append(span);
  }
  return div;
}

// A small SVG chart library for the dashboard: line charts with time or
// numeric axes, nice ticks, a legend and a hover read-out. No dependencies.
"use strict";
const Chart = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const el = (name, attrs, parent) => {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (parent) parent.appendChild(e);
    return e;
  };
  // Round tick steps (1, 2, 5 × 10^k) covering [lo, hi] with about n ticks.
  function ticks(lo, hi, n) {
    if (!(hi > lo)) { hi = lo + 1; }
    const raw = (hi - lo) / n;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(v);
    return out;
  }
  const fmtNum = (v) => {
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(a >= 1e10 ? 0 : 1) + "B";
    if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
    return Math.abs(v - Math.round(v)) < 1e-9 ? String(Math.round(v)) : v.toFixed(2);
  };
  const fmtTime = (t, span) => {
    const d = new Date(t * 1000);
    const hm = d.toISOString().slice(11, 16);
    return span > 2 * 86400 ? d.toISOString().slice(5, 10) + " " + hm : hm;
  };
  // series: [{name, color, points: [[x, y], ...]}]; opts: {time, yMin, yMax,
  // xLabel, yLabel, diagonal, height}
  function line(container, series, opts) {
    opts = opts || {};
    container.textContent = "";
    const W = Math.max(container.clientWidth || 600, 280), H = opts.height || 260;
    const m = { l: 56, r: 12, t: 26, b: 34 };
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", height: H, class: "chart", role: "img" }, container);
    const pts = series.flatMap((s) => s.points);
    if (!pts.length) {
      el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "muted" }, svg).textContent = opts.empty || "no data";
      return svg;
    }
    let x0 = Math.min(...pts.map((p) => p[0])), x1 = Math.max(...pts.map((p) => p[0]));
    let y0 = opts.yMin ?? Math.min(...pts.map((p) => p[1])), y1 = opts.yMax ?? Math.max(...pts.map((p) => p[1]));
    if (x1 === x0) x1 = x0 + 1;
    if (y1 === y0) { y0 -= 1; y1 += 1; }
    if (opts.yMin === undefined) { const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad; }
    const sx = (x) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
    const sy = (y) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);
    for (const v of ticks(y0, y1, 5)) {
      el("line", { x1: m.l, x2: W - m.r, y1: sy(v), y2: sy(v), class: "grid" }, svg);
      el("text", { x: m.l - 6, y: sy(v) + 4, "text-anchor": "end", class: "tick" }, svg).textContent = fmtNum(v);
    }
    const xt = opts.time ? ticks(x0, x1, Math.max(2, Math.floor(W / 110))) : ticks(x0, x1, 5);
    for (const v of xt) {
      el("line", { x1: sx(v), x2: sx(v), y1: H - m.b, y2: H - m.b + 4, class: "axis" }, svg);
      el("text", { x: sx(v), y: H - m.b + 16, "text-anchor": "middle", class: "tick" }, svg).textContent =
        opts.time ? fmtTime(v, x1 - x0) : fmtNum(v);
    }
    el("line", { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, class: "axis" }, svg);
    el("line", { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, class: "axis" }, svg);
    if (opts.diagonal) {
      el("line", { x1: sx(Math.max(x0, y0)), y1: sy(Math.max(x0, y0)), x2: sx(Math.min(x1, y1)), y2: sy(Math.min(x1, y1)), class: "diagonal" }, svg);
    }
    if (opts.xLabel) el("text", { x: W - m.r, y: H - 4, "text-anchor": "end", class: "tick" }, svg).textContent = opts.xLabel;
    series.forEach((s, i) => {
      if (!s.points.length) return;
      const d = s.points.map((p, j) => (j ? "L" : "M") + sx(p[0]).toFixed(1) + " " + sy(p[1]).toFixed(1)).join("");
      el("path", { d, fill: "none", stroke: s.color, "stroke-width": 2, class: "series" }, svg);
      if (s.dots) for (const p of s.points) el("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 3, fill: s.color }, svg);
      el("rect", { x: m.l + 8 + i * 110, y: 6, width: 10, height: 10, fill: s.color }, svg);
      el("text", { x: m.l + 22 + i * 110, y: 15, class: "tick" }, svg).textContent = s.name;
    });
    // Hover read-out: the nearest point of each series.
    const cursor = el("line", { y1: m.t, y2: H - m.b, class: "cursor", visibility: "hidden" }, svg);
    const label = el("text", { y: m.t + 24, class: "tick readout", visibility: "hidden" }, svg);
    svg.addEventListener("mousemove", (ev) => {
      const r = svg.getBoundingClientRect();
      const x = x0 + ((ev.clientX - r.left) * (W / r.width) - m.l) / (W - m.l - m.r) * (x1 - x0);
      const parts = series.filter((s) => s.points.length).map((s) => {
        const p = s.points.reduce((a, b) => (Math.abs(b[0] - x) < Math.abs(a[0] - x) ? b : a));
        return `${s.name} ${fmtNum(p[1])}`;
      });
      cursor.setAttribute("x1", sx(Math.min(Math.max(x, x0), x1)));
      cursor.setAttribute("x2", sx(Math.min(Math.max(x, x0), x1)));
      label.setAttribute("x", m.l + 8);
      label.textContent = (opts.time ? fmtTime(x, 0) + "  " : "") + parts.join("  ");
      cursor.setAttribute("visibility", "visible");
      label.setAttribute("visibility", "visible");
    });
    svg.addEventListener("mouseleave", () => {
      cursor.setAttribute("visibility", "hidden");
      label.setAttribute("visibility", "hidden");
    });
    return svg;
  }
  return { line, ticks, fmtNum };
})();

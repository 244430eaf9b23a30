// A module's Metrics tab: uPlot charts of the series the page holds as JSON (`#metrics-series`, with their
// translated labels in `#metrics-labels`), sized to their boxes, drawn again when HTMX swaps in fresh numbers.
"use strict";

(function () {
  const plots = new Map(); // chart box -> its uPlot
  const widths = new WeakMap(); // chart box -> the width it was last drawn at

  const css = (name, fallback) =>
    getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;

  const number = (digits) => (value) =>
    value == null ? "—" : value.toLocaleString(document.documentElement.lang || undefined, {
      maximumFractionDigits: digits,
    });

  function size(box) {
    const width = Math.max(160, Math.floor(box.getBoundingClientRect().width));
    return { width, height: width < 480 ? 160 : 200 };
  }

  const resized = new ResizeObserver((entries) => {
    for (const entry of entries) {
      const box = entry.target;
      const plot = plots.get(box);
      if (!plot) continue;
      const wanted = size(box);
      if (widths.get(box) === wanted.width) continue; // the chart's own height changed: nothing to do
      widths.set(box, wanted.width);
      plot.setSize(wanted);
    }
  });

  // Forget the charts whose boxes an HTMX swap took away.
  function sweep() {
    for (const [box, plot] of plots) {
      if (box.isConnected) continue;
      resized.unobserve(box);
      plot.destroy();
      plots.delete(box);
    }
  }

  // What each box draws: its lines (data keys), their colours (CSS variables), units and style.
  const KINDS = {
    throughput: { keys: ["rps"], colors: ["--accent"], digits: 3 },
    latency: { keys: ["p50", "p95", "p99"], colors: ["--ok", "--warn", "--bad"], digits: 1 },
    errors: { keys: ["errors"], colors: ["--bad"], digits: 0, bars: true },
  };

  // Counts are whole: their axis never ticks at halves.
  const COUNTS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 1e6, 1e7];

  // Where uPlot draws lines without their points, a value between two gaps would not show at all: mark it.
  function isolated(u, index, shown) {
    if (shown) return null;
    const values = u.data[index];
    const alone = [];
    for (let i = 0; i < values.length; i++) {
      if (values[i] != null && values[i - 1] == null && values[i + 1] == null) alone.push(i);
    }
    return alone.length ? alone : null;
  }

  function options(box, kind, labels) {
    const muted = css("--muted", "#667085");
    const border = css("--border", "#dfe3e8");
    const format = number(kind.digits);
    const axis = { stroke: muted, grid: { stroke: border, width: 1 }, ticks: { stroke: border, width: 1 } };
    const series = kind.keys.map((key, index) => {
      const color = css(kind.colors[index], "#2563eb");
      const line = { label: labels[key] || key, stroke: color, width: 1.5, value: (u, v) => format(v) };
      if (kind.bars) {
        line.fill = color;
        line.paths = uPlot.paths.bars({ size: [0.7, 40] });
        line.points = { show: false };
      } else {
        line.points = { filter: isolated };
      }
      return line;
    });
    const y = { ...axis, size: 56, values: (u, ticks) => ticks.map(format) };
    if (kind.digits === 0) y.incrs = COUNTS;
    return {
      ...size(box),
      series: [{ label: labels.time || "" }, ...series],
      axes: [{ ...axis, space: 80 }, y],
      scales: { y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      cursor: { sync: { key: "modelport-metrics" }, drag: { x: false, y: false } },
      legend: { live: true },
    };
  }

  function parsed(root, id) {
    const source = root.querySelector("#" + id);
    if (!source) return null;
    try {
      return JSON.parse(source.textContent);
    } catch (error) {
      return null;
    }
  }

  function draw(root) {
    sweep();
    if (typeof uPlot === "undefined" || !root.querySelector) return;
    const data = parsed(root, "metrics-series");
    if (!data) return;
    const labels = parsed(root, "metrics-labels") || {};
    for (const box of root.querySelectorAll("[data-chart]")) {
      const kind = KINDS[box.dataset.chart];
      if (!kind || plots.has(box)) continue;
      const columns = [data.t, ...kind.keys.map((key) => data[key])];
      const plot = new uPlot(options(box, kind, labels), columns, box);
      plots.set(box, plot);
      widths.set(box, size(box).width);
      resized.observe(box);
    }
  }

  // A fresh fragment keeps the series table open if it was.
  let tableOpen = false;
  document.addEventListener("htmx:beforeSwap", () => {
    const table = document.getElementById("series-table");
    tableOpen = Boolean(table && table.open);
  });
  document.addEventListener("htmx:load", (event) => {
    const table = event.target.querySelector && event.target.querySelector("#series-table");
    if (table && tableOpen) table.open = true;
    draw(event.target.id === "metrics" ? event.target : document);
  });
  document.addEventListener("DOMContentLoaded", () => draw(document));
})();

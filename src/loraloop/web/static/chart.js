// loraloop: a small inline-SVG line chart of training and validation loss (no library).
// window.loraloopChart.lossChart(frame, texts) -> { render(points, totalSteps) }
//   points: [{step, loss, val}] in step order; loss or val may be null.
//   texts: {title, description(points) -> string, x, y, empty}
"use strict";

(function () {
  var NS = "http://www.w3.org/2000/svg";
  var MARGIN = { top: 14, right: 18, bottom: 40, left: 64 };
  var uid = 0;

  function node(name, attrs, parent) {
    var el = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (key) { el.setAttribute(key, String(attrs[key])); });
    if (parent) parent.appendChild(el);
    return el;
  }

  // Round tick positions covering [min, max] with about `count` steps of 1, 2 or 5 × 10^n.
  function ticks(min, max, count) {
    if (!(max > min)) {
      var pad = Math.abs(max) * 0.1 || 1;
      min -= pad;
      max += pad;
    }
    var raw = (max - min) / count;
    var step = Math.pow(10, Math.floor(Math.log10(raw)));
    var ratio = raw / step;
    if (ratio >= 7.5) step *= 10;
    else if (ratio >= 3.5) step *= 5;
    else if (ratio >= 1.5) step *= 2;
    var start = Math.floor(min / step + 1e-9) * step;
    var end = Math.ceil(max / step - 1e-9) * step;
    var out = [];
    for (var value = start; value <= end + step / 2; value += step) out.push(Number(value.toPrecision(12)));
    return { values: out, step: step };
  }

  function decimals(step) {
    return step >= 1 ? 0 : Math.min(6, Math.ceil(-Math.log10(step) - 1e-9));
  }

  function lossChart(frame, texts) {
    var id = "loss-chart-" + (++uid);
    var last = { points: [], total: 0 };

    function empty() {
      frame.textContent = "";
      var box = document.createElement("p");
      box.className = "data-chart__empty";
      box.textContent = texts.empty;
      frame.appendChild(box);
    }

    function draw(points, total) {
      var width = Math.max(280, Math.round(frame.clientWidth || 600));
      var height = Math.round(Math.max(200, Math.min(340, width * 0.42)));
      var plotW = width - MARGIN.left - MARGIN.right;
      var plotH = height - MARGIN.top - MARGIN.bottom;
      var values = [];
      points.forEach(function (p) {
        if (typeof p.loss === "number") values.push(p.loss);
        if (typeof p.val === "number") values.push(p.val);
      });
      var lastStep = points.length ? points[points.length - 1].step : 1;
      var xMax = Math.max(total || 0, lastStep, 1);
      var xt = ticks(0, xMax, Math.max(2, Math.min(8, Math.floor(plotW / 80))));
      xt.values = xt.values.filter(function (v) { return v >= 0 && v <= xMax && Math.round(v) === v; });
      var low = Math.min.apply(null, values);
      var high = Math.max.apply(null, values);
      var yt = ticks(low, high, 5);
      var yMin = yt.values[0];
      var yMax = yt.values[yt.values.length - 1];
      var x = function (step) { return MARGIN.left + (step / xMax) * plotW; };
      var y = function (v) { return MARGIN.top + (1 - (v - yMin) / (yMax - yMin)) * plotH; };

      var svg = node("svg", {
        viewBox: "0 0 " + width + " " + height,
        width: width,
        height: height,
        role: "img",
        "aria-labelledby": id + "-title " + id + "-desc",
        focusable: "false",
      });
      node("title", { id: id + "-title" }, svg).textContent = texts.title;
      node("desc", { id: id + "-desc" }, svg).textContent = texts.description(points, total);

      var grid = node("g", { "aria-hidden": "true" }, svg);
      var digits = decimals(yt.step);
      yt.values.forEach(function (v) {
        var py = y(v);
        node("line", { class: "chart-grid", x1: MARGIN.left, x2: width - MARGIN.right, y1: py, y2: py }, grid);
        var label = node("text", { class: "chart-tick", x: MARGIN.left - 8, y: py + 4, "text-anchor": "end" }, grid);
        label.textContent = v.toFixed(digits);
      });
      xt.values.forEach(function (v) {
        var px = x(v);
        node("line", { class: "chart-axis", x1: px, x2: px, y1: MARGIN.top + plotH, y2: MARGIN.top + plotH + 5 }, grid);
        var label = node("text", { class: "chart-tick", x: px, y: MARGIN.top + plotH + 18, "text-anchor": "middle" }, grid);
        label.textContent = String(v);
      });
      node("line", { class: "chart-axis", x1: MARGIN.left, x2: width - MARGIN.right, y1: MARGIN.top + plotH, y2: MARGIN.top + plotH }, grid);
      node("line", { class: "chart-axis", x1: MARGIN.left, x2: MARGIN.left, y1: MARGIN.top, y2: MARGIN.top + plotH }, grid);
      node("text", { class: "chart-label", x: MARGIN.left + plotW / 2, y: height - 4, "text-anchor": "middle" }, grid).textContent = texts.x;
      node("text", {
        class: "chart-label",
        x: 12,
        y: MARGIN.top + plotH / 2,
        "text-anchor": "middle",
        transform: "rotate(-90 12 " + (MARGIN.top + plotH / 2) + ")",
      }, grid).textContent = texts.y;

      [["loss", "train"], ["val", "val"]].forEach(function (pair) {
        var key = pair[0];
        var series = points.filter(function (p) { return typeof p[key] === "number"; });
        if (!series.length) return;
        var group = node("g", { "aria-hidden": "true" }, svg);
        var d = series.map(function (p, i) {
          return (i ? "L" : "M") + x(p.step).toFixed(1) + " " + y(p[key]).toFixed(1);
        }).join(" ");
        if (series.length > 1) node("path", { class: "chart-line chart-line--" + pair[1], d: d }, group);
        var dots = key === "val" || series.length === 1 ? series : series.slice(-1);
        dots.forEach(function (p) {
          node("circle", { class: "chart-dot--" + pair[1], cx: x(p.step).toFixed(1), cy: y(p[key]).toFixed(1), r: key === "val" ? 3.5 : 3 }, group);
        });
      });

      frame.textContent = "";
      frame.appendChild(svg);
    }

    function render(points, total) {
      last = { points: points, total: total };
      var any = points.some(function (p) { return typeof p.loss === "number" || typeof p.val === "number"; });
      if (!any) empty();
      else draw(points, total);
    }

    if (window.ResizeObserver) {
      var width = 0;
      new ResizeObserver(function () {
        var now = Math.round(frame.clientWidth);
        if (now !== width) {
          width = now;
          render(last.points, last.total);
        }
      }).observe(frame);
    }
    empty();
    return { render: render };
  }

  window.loraloopChart = { lossChart: lossChart, ticks: ticks };
})();

// loraloop data pages: dataset upload (with progress and the validation report), the dataset
// preview and token statistics, the training form (with its time estimate) and the job page
// (live progress by server-sent events, loss chart, log, cancel and resume).
"use strict";

(function () {
  var L = window.loraloop;
  var t = L.t;

  function $(id) { return document.getElementById(id); }

  function readJson(id) {
    var node = $(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  var numberFormat = new Intl.NumberFormat(document.documentElement.lang || "ja");

  function fmt(value, digits) {
    if (typeof value !== "number" || !isFinite(value)) return "—";
    if (digits === undefined) return numberFormat.format(value);
    return new Intl.NumberFormat(document.documentElement.lang || "ja", {
      minimumFractionDigits: digits,
      maximumFractionDigits: digits,
    }).format(value);
  }

  function duration(seconds) {
    if (typeof seconds !== "number" || !isFinite(seconds)) return "—";
    var s = Math.max(0, Math.round(seconds));
    if (s < 60) return t("data.duration.seconds", { n: s });
    if (s < 3600) return t("data.duration.minutes", { n: Math.max(1, Math.round(s / 60)) });
    var hours = Math.floor(s / 3600);
    var minutes = Math.round((s - hours * 3600) / 60);
    if (minutes === 60) { hours += 1; minutes = 0; }
    return t("data.duration.hours", { h: hours, m: minutes });
  }

  function bytes(n) {
    if (n < 1024) return t("data.bytes.b", { n: n });
    if (n < 1048576) return t("data.bytes.kib", { n: fmt(n / 1024, 1) });
    return t("data.bytes.mib", { n: fmt(n / 1048576, 1) });
  }

  function debounce(fn, ms) {
    var timer = null;
    return function () {
      clearTimeout(timer);
      timer = setTimeout(fn, ms);
    };
  }

  function show(el, visible) { if (el) el.hidden = !visible; }

  function errorText(error) {
    if (error && error.status === 401) return t("data.error.signed_out");
    if (error && error.message && error.status) return error.message;
    return t("data.error.network");
  }

  // Reads a text/event-stream response: onEvent(name, json, id) for each event.
  async function readStream(response, onEvent) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    for (;;) {
      var part = await reader.read();
      if (part.done) return;
      buffer += decoder.decode(part.value, { stream: true }).replace(/\r\n/g, "\n");
      var blocks = buffer.split("\n\n");
      buffer = blocks.pop();
      blocks.forEach(function (block) {
        var name = "message";
        var data = [];
        block.split("\n").forEach(function (line) {
          if (line.indexOf("event:") === 0) name = line.slice(6).trim();
          else if (line.indexOf("data:") === 0) data.push(line.slice(5).trim());
        });
        if (!data.length) return;
        var payload;
        try { payload = JSON.parse(data.join("\n")); } catch (_) { return; }
        onEvent(name, payload);
      });
    }
  }

  // ---------------------------------------------------------------------------------------
  // /datasets: upload

  function parseProblems(message) {
    var lines = String(message || "").split("\n");
    var head = lines.shift() || "";
    var items = [];
    var more = 0;
    lines.forEach(function (line) {
      var m;
      if ((m = line.match(/^line (\d+): (.*)$/))) items.push({ line: Number(m[1]), text: m[2] });
      else if ((m = line.match(/^file: (.*)$/))) items.push({ line: 0, text: m[1] });
      else if ((m = line.match(/and (\d+) more/))) more = Number(m[1]);
      else if (line.trim()) items.push({ line: null, text: line.trim() });
    });
    var total = head.match(/has (\d+) problem/);
    return { items: items, more: more, total: total ? Number(total[1]) : items.length + more };
  }

  function initUpload(form) {
    var input = $("upload-file");
    var zone = $("drop-zone");
    var name = $("upload-name");
    var chosen = $("upload-chosen");
    var progress = $("upload-progress");
    var bar = $("upload-bar");
    var barLabel = $("upload-progress-label");
    var submit = $("upload-submit");
    var report = $("upload-report");
    var maxBytes = Number(form.getAttribute("data-max-bytes")) || Infinity;
    var file = null;
    var nameTouched = false;

    var preset = new URLSearchParams(window.location.search).get("name");
    if (preset) { name.value = preset; nameTouched = true; }
    name.addEventListener("input", function () { nameTouched = true; name.removeAttribute("aria-invalid"); });

    function suggest(fileName) {
      var base = fileName.replace(/\.(jsonl|json|ndjson|txt)$/i, "").replace(/[^A-Za-z0-9._-]+/g, "-");
      return base.replace(/^[-.]+|[-.]+$/g, "").slice(0, 64) || "dataset";
    }

    function choose(picked) {
      if (!picked) return;
      file = picked;
      chosen.textContent = t("data.upload.chosen", { name: picked.name, size: bytes(picked.size) });
      if (!nameTouched) name.value = suggest(picked.name);
      hideReport();
    }

    input.addEventListener("change", function () { choose(input.files && input.files[0]); });

    ["dragenter", "dragover"].forEach(function (type) {
      zone.addEventListener(type, function (event) {
        event.preventDefault();
        zone.classList.add("is-dragover");
      });
    });
    ["dragleave", "dragend"].forEach(function (type) {
      zone.addEventListener(type, function () { zone.classList.remove("is-dragover"); });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      zone.classList.remove("is-dragover");
      var files = event.dataTransfer && event.dataTransfer.files;
      if (!files || !files.length) return;
      try { input.files = files; } catch (_) { /* older browsers: keep our own reference */ }
      choose(files[0]);
    });
    // a file dropped next to the zone must not make the browser leave the page
    window.addEventListener("dragover", function (event) { event.preventDefault(); });
    window.addEventListener("drop", function (event) { event.preventDefault(); });

    function hideReport() {
      report.hidden = true;
      $("upload-report-list").textContent = "";
    }

    function showReport(title, summary, items, next) {
      $("upload-report-title").textContent = title;
      $("upload-report-summary").textContent = summary || "";
      var list = $("upload-report-list");
      list.textContent = "";
      (items || []).forEach(function (item) {
        var li = document.createElement("li");
        var where = document.createElement("span");
        where.className = "data-report__line";
        where.textContent = item.line ? t("data.report.line", { line: item.line })
          : item.line === 0 ? t("data.report.file") : "•";
        var text = document.createElement("span");
        text.className = "data-report__message";
        text.textContent = item.text;
        li.appendChild(where);
        li.appendChild(text);
        list.appendChild(li);
      });
      $("upload-report-next").textContent = next || "";
      report.hidden = false;
      report.focus();
    }

    function refused(status, error) {
      error = error || {};
      if (error.code === "dataset_invalid") {
        var found = parseProblems(error.message);
        var items = found.items.slice();
        if (found.more) items.push({ line: null, text: t("data.report.more", { count: found.more }) });
        showReport(
          t("data.report.invalid_title"),
          t("data.report.invalid_summary", { count: found.total }),
          items,
          t("data.report.invalid_next"),
        );
        return;
      }
      if (error.param === "name") name.setAttribute("aria-invalid", "true");
      var parts = String(error.message || t("data.error.network")).split("; ");
      var title = status === 413 ? t("data.report.too_large_title") : t("data.report.refused_title");
      var next = status === 401 ? t("data.error.signed_out") : t("data.report.refused_next");
      showReport(title, "", parts.map(function (p) { return { line: null, text: p }; }), next);
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      hideReport();
      var problems = [];
      if (!file) problems.push({ line: null, text: t("data.upload.need_file") });
      else if (file.size > maxBytes) problems.push({ line: null, text: t("data.upload.too_big", { size: bytes(file.size), max: bytes(maxBytes) }) });
      if (!name.value.trim() || !name.checkValidity()) {
        problems.push({ line: null, text: t("data.upload.need_name") });
        name.setAttribute("aria-invalid", "true");
      }
      var percent = $("upload-validation");
      if (percent && percent.value && !percent.checkValidity()) problems.push({ line: null, text: t("data.upload.bad_validation") });
      if (problems.length) {
        showReport(t("data.report.check_title"), "", problems, "");
        return;
      }
      var body = new FormData();
      body.append("name", name.value.trim());
      var format = $("upload-format").value;
      if (format) body.append("format", format);
      if (percent && percent.value) body.append("validation_fraction", String(Number(percent.value) / 100));
      body.append("file", file, file.name);

      var xhr = new XMLHttpRequest();
      xhr.open("POST", "/api/datasets");
      xhr.setRequestHeader("X-CSRF-Token", csrf());
      xhr.setRequestHeader("Accept", "application/json");
      xhr.responseType = "json";
      progress.hidden = false;
      bar.value = 0;
      barLabel.textContent = t("data.upload.sending_percent", { percent: 0 });
      submit.disabled = true;
      form.setAttribute("aria-busy", "true");
      xhr.upload.addEventListener("progress", function (e) {
        if (!e.lengthComputable) return;
        var pct = Math.round((e.loaded / e.total) * 100);
        bar.value = pct;
        barLabel.textContent = t("data.upload.sending_percent", { percent: pct });
      });
      xhr.upload.addEventListener("load", function () {
        bar.removeAttribute("value"); // indeterminate while the server checks the file
        barLabel.textContent = t("data.upload.checking");
      });
      function done() {
        submit.disabled = false;
        form.removeAttribute("aria-busy");
        progress.hidden = true;
      }
      xhr.addEventListener("load", function () {
        var data = xhr.response || {};
        if (xhr.status === 201 && data.dataset_id) {
          barLabel.textContent = t("data.upload.done");
          window.location.assign("/datasets/" + data.dataset_id + "?version=" + data.version);
          return;
        }
        done();
        refused(xhr.status, data.error);
      });
      xhr.addEventListener("error", function () {
        done();
        showReport(t("data.report.refused_title"), "", [{ line: null, text: t("data.error.network") }], "");
      });
      xhr.send(body);
    });
  }

  // ---------------------------------------------------------------------------------------
  // /datasets/{id}: token statistics and preview

  function initDataset(data) {
    var base = $("tokenizer-base");
    var maxLength = $("tokenizer-max");
    var split = $("preview-split");
    var index = $("preview-index");
    var prev = $("preview-prev");
    var next = $("preview-next");
    var text = $("preview-text");
    var position = $("preview-position");
    var previewError = $("preview-error");
    if (!base) return;
    var root = "/api/datasets/" + data.dataset_id + "/versions/" + data.version;
    var current = 0;
    var statsTurn = 0;
    var previewTurn = 0;

    function length() {
      var n = Number(maxLength.value);
      return n >= 16 && n <= 32768 ? Math.round(n) : data.max_length;
    }

    function total() {
      return split.value === "validation" ? data.validation_examples : data.train_examples;
    }

    function query(extra) {
      var params = new URLSearchParams(extra || {});
      params.set("base", base.value);
      params.set("max_length", String(length()));
      return params.toString();
    }

    async function loadStats() {
      var turn = ++statsTurn;
      var box = $("token-stats");
      var status = $("token-stats-status");
      var list = $("token-stats-list");
      box.setAttribute("aria-busy", "true");
      status.textContent = t("data.tokens.loading");
      status.hidden = false;
      try {
        var s = await L.api("GET", root + "/stats?" + query());
        if (turn !== statsTurn) return;
        var rows = [
          ["data.tokens.total", fmt(s.total_tokens)],
          ["data.tokens.trained", fmt(s.trained_tokens)],
          ["data.tokens.mean", fmt(s.mean, 1)],
          ["data.tokens.p50", fmt(s.p50)],
          ["data.tokens.p95", fmt(s.p95)],
          ["data.tokens.max", fmt(s.max)],
          ["data.tokens.exceeding", fmt(s.exceeding)],
          ["data.tokens.untrainable", fmt(s.untrainable_total)],
        ];
        list.textContent = "";
        rows.forEach(function (row) {
          var item = document.createElement("div");
          item.className = "data-stats__item";
          var dt = document.createElement("dt");
          dt.textContent = t(row[0], { max: s.max_length });
          var dd = document.createElement("dd");
          dd.className = "num";
          dd.textContent = row[1];
          item.appendChild(dt);
          item.appendChild(dd);
          list.appendChild(item);
        });
        list.hidden = false;
        status.textContent = s.exceeding ? t("data.tokens.exceeding_note", { count: s.exceeding, max: s.max_length }) : "";
        status.hidden = !s.exceeding;
      } catch (error) {
        if (turn !== statsTurn) return;
        list.hidden = true;
        status.textContent = errorText(error);
      } finally {
        if (turn === statsTurn) box.setAttribute("aria-busy", "false");
      }
    }

    async function loadPreview() {
      var turn = ++previewTurn;
      var count = total();
      index.max = String(Math.max(1, count));
      prev.disabled = current <= 0;
      next.disabled = current >= count - 1;
      position.textContent = t("data.preview.position", { index: current + 1, total: count });
      text.setAttribute("aria-busy", "true");
      try {
        var p = await L.api("GET", root + "/preview?" + query({ index: String(current), split: split.value }));
        if (turn !== previewTurn) return;
        text.textContent = "";
        p.segments.forEach(function (segment) {
          var el = document.createElement(segment.trained ? "mark" : "span");
          el.className = "data-token " + (segment.trained ? "data-token--trained" : "data-token--masked");
          el.textContent = segment.text;
          text.appendChild(el);
        });
        previewError.hidden = true;
      } catch (error) {
        if (turn !== previewTurn) return;
        text.textContent = "";
        previewError.textContent = errorText(error);
        previewError.hidden = false;
      } finally {
        if (turn === previewTurn) text.setAttribute("aria-busy", "false");
      }
    }

    function go(to) {
      var count = total();
      current = Math.max(0, Math.min(count - 1, to));
      index.value = String(current + 1);
      loadPreview();
    }

    prev.addEventListener("click", function () { go(current - 1); });
    next.addEventListener("click", function () { go(current + 1); });
    index.addEventListener("change", function () {
      var n = Math.round(Number(index.value));
      go(isFinite(n) ? n - 1 : 0);
    });
    split.addEventListener("change", function () { go(0); });
    base.addEventListener("change", function () { loadStats(); loadPreview(); });
    maxLength.addEventListener("change", function () { loadStats(); loadPreview(); });
    loadStats();
    go(0);
  }

  // ---------------------------------------------------------------------------------------
  // /train: the form and its estimate

  function initTrain(form, data) {
    var modeInputs = form.querySelectorAll('input[name="adapter_mode"]');
    var newField = $("adapter-new-field");
    var existingField = $("adapter-existing-field");
    var adapterName = $("adapter-name");
    var existing = $("adapter-existing");
    var baseSelect = $("base-model");
    var dataset = $("dataset");
    var version = $("dataset-version");
    var errorBox = $("train-error");
    var submit = $("train-submit");
    var status = $("train-status");
    var estimateBox = $("estimate");
    var nameTouched = false;
    var created = null; // an adapter this page created before training failed to start
    var estimates = new Map();
    var estimateTurn = 0;

    function mode() {
      var checked = form.querySelector('input[name="adapter_mode"]:checked');
      return checked ? checked.value : "new";
    }

    function adapterById(id) {
      return data.adapters.filter(function (a) { return String(a.id) === String(id); })[0];
    }

    function syncMode() {
      var isNew = mode() === "new";
      newField.hidden = !isNew;
      existingField.hidden = isNew;
      baseSelect.disabled = !isNew;
      if (!isNew) {
        var adapter = adapterById(existing.value);
        if (adapter) baseSelect.value = String(adapter.base_model_id);
      }
    }

    function datasetById(id) {
      return data.datasets.filter(function (d) { return String(d.id) === String(id); })[0];
    }

    function syncVersions() {
      var chosen = datasetById(dataset.value);
      version.textContent = "";
      if (!chosen) return;
      for (var v = chosen.latest; v >= 1; v -= 1) {
        var option = document.createElement("option");
        option.value = String(v);
        option.textContent = v === chosen.latest ? t("data.train.version_latest", { version: v }) : "v" + v;
        version.appendChild(option);
      }
      var wanted = data.selected.version;
      if (wanted && String(chosen.id) === String(data.selected.dataset_id) && wanted <= chosen.latest) {
        version.value = String(wanted);
      }
      if (!nameTouched && mode() === "new") {
        adapterName.value = (chosen.name.replace(/^[^A-Za-z0-9]+/, "") || "adapter").slice(0, 59) + "-lora";
      }
    }

    function preset() {
      var checked = form.querySelector('input[name="preset"]:checked');
      return checked ? checked.value : "balanced";
    }

    function syncPreset() {
      var values = data.presets[preset()] || {};
      form.querySelectorAll("[data-preset-key]").forEach(function (input) {
        var key = input.getAttribute("data-preset-key");
        if (input.tagName === "SELECT") {
          input.options[0].textContent = t("data.train.from_preset_value", { value: t("data.targets." + values[key]) });
        } else {
          input.placeholder = values[key] === undefined || values[key] === null ? "" : String(values[key]);
        }
      });
    }

    function field(name) { return form.querySelector('[name="' + name + '"]'); }

    function numberOf(name) {
      var input = field(name);
      return input && input.value.trim() !== "" ? Number(input.value) : null;
    }

    function options() {
      var lora = {};
      ["rank", "alpha", "dropout"].forEach(function (key) {
        var value = numberOf(key);
        if (value !== null) lora[key] = value;
      });
      if (field("targets").value) lora.targets = field("targets").value;
      var out = { lora: lora };
      ["learning_rate", "epochs", "max_length"].forEach(function (key) {
        var value = numberOf(key);
        if (value !== null) out[key] = value;
      });
      return out;
    }

    function invalidFields() {
      var bad = [];
      form.querySelectorAll("#advanced input, #advanced select").forEach(function (input) {
        input.removeAttribute("aria-invalid");
        if (!input.checkValidity()) {
          input.setAttribute("aria-invalid", "true");
          var label = form.querySelector('label[for="' + input.id + '"]');
          bad.push(label ? label.textContent : input.name);
        }
      });
      return bad;
    }

    function showError(message) {
      errorBox.textContent = message;
      errorBox.hidden = false;
      errorBox.focus();
    }

    async function updateEstimate() {
      var value = $("estimate-value");
      var detail = $("estimate-detail");
      if (!dataset.value || !version.value || !baseSelect.value) return;
      if (invalidFields().length) {
        value.textContent = "—";
        detail.textContent = t("data.estimate.fix_fields");
        return;
      }
      var params = new URLSearchParams({
        base_model_id: baseSelect.value,
        dataset_id: dataset.value,
        version: version.value,
        preset: preset(),
      });
      var chosen = options();
      if (chosen.epochs !== undefined) params.set("epochs", String(chosen.epochs));
      if (chosen.max_length !== undefined) params.set("max_length", String(chosen.max_length));
      if (chosen.lora.targets) params.set("targets", chosen.lora.targets);
      var key = params.toString();
      var turn = ++estimateTurn;
      estimateBox.setAttribute("aria-busy", "true");
      try {
        if (!estimates.has(key)) estimates.set(key, await L.api("GET", "/train/estimate?" + key));
        if (turn !== estimateTurn) return;
        var e = estimates.get(key);
        value.textContent = t("data.estimate.value", { duration: duration(e.seconds) });
        var texts = { low: duration(e.low), high: duration(e.high), tokens: fmt(e.tokens), speed: fmt(e.tokens_per_s, e.tokens_per_s >= 100 ? 0 : 1), runs: e.runs };
        detail.textContent = t(e.runs ? "data.estimate.detail_measured" : "data.estimate.detail_rule", texts);
      } catch (error) {
        if (turn !== estimateTurn) return;
        estimates.delete(key);
        value.textContent = "—";
        detail.textContent = t("data.estimate.failed", { message: errorText(error) });
      } finally {
        if (turn === estimateTurn) estimateBox.setAttribute("aria-busy", "false");
      }
    }

    var later = debounce(updateEstimate, 300);

    modeInputs.forEach(function (input) { input.addEventListener("change", function () { syncMode(); later(); }); });
    existing.addEventListener("change", function () { syncMode(); later(); });
    adapterName.addEventListener("input", function () { nameTouched = true; adapterName.removeAttribute("aria-invalid"); });
    dataset.addEventListener("change", function () { syncVersions(); later(); });
    form.querySelectorAll('input[name="preset"]').forEach(function (input) {
      input.addEventListener("change", function () { syncPreset(); later(); });
    });
    [baseSelect, version].forEach(function (el) { el.addEventListener("change", later); });
    form.querySelectorAll("#advanced input, #advanced select").forEach(function (el) {
      el.addEventListener("input", later);
      el.addEventListener("change", later);
    });

    async function adapterId() {
      if (mode() === "existing") return Number(existing.value);
      if (created) return created;
      var name = adapterName.value.trim();
      if (!name || !adapterName.checkValidity()) {
        adapterName.setAttribute("aria-invalid", "true");
        throw { status: 0, message: t("data.train.need_name"), local: true };
      }
      status.textContent = t("data.train.creating");
      var adapter = await L.api("POST", "/api/adapters", { name: name, base_model_id: Number(baseSelect.value) });
      created = adapter.id;
      data.adapters.push({ id: adapter.id, name: adapter.name, base_model_id: adapter.base_model_id });
      var option = document.createElement("option");
      option.value = String(adapter.id);
      option.textContent = adapter.name;
      existing.appendChild(option);
      return adapter.id;
    }

    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      errorBox.hidden = true;
      var bad = invalidFields();
      if (bad.length) {
        showError(t("data.train.fix_fields", { fields: bad.join(", ") }));
        return;
      }
      submit.disabled = true;
      try {
        var id = await adapterId();
        if (created && mode() === "new") {
          // from now on the page trains the adapter it created, whatever happens next
          existing.value = String(created);
          form.querySelector('input[name="adapter_mode"][value="existing"]').disabled = false;
          form.querySelector('input[name="adapter_mode"][value="existing"]').checked = true;
          syncMode();
        }
        status.textContent = t("data.train.starting");
        var job = await L.api("POST", "/api/adapters/" + id + "/train", {
          dataset_id: Number(dataset.value),
          dataset_version: Number(version.value),
          preset: preset(),
          options: options(),
        });
        status.textContent = t("data.train.started");
        window.location.assign("/jobs/" + job.id);
      } catch (error) {
        status.textContent = "";
        submit.disabled = false;
        if (error && error.param === "name") adapterName.setAttribute("aria-invalid", "true");
        showError(error && error.local ? error.message : t("data.train.failed", { message: errorText(error) }));
      }
    });

    syncVersions();
    syncMode();
    syncPreset();
    updateEstimate();
  }

  // ---------------------------------------------------------------------------------------
  // /jobs/{id}: progress, chart, log, cancel and resume

  function initJob(job) {
    var chartFrame = $("loss-chart");
    var log = $("job-log");
    var logEmpty = $("job-log-empty");
    var bar = $("job-progress");
    var barLabel = $("job-progress-label");
    var cancelButton = $("job-cancel");
    var retryButton = $("job-retry");
    var actionError = $("job-action-error");
    var live = $("job-live");
    var points = new Map();
    var maxStep = 0;
    var total = 0;
    var lastSeq = 0;
    var latestVal = null;
    var status = job.status;
    var following = null;
    var drawQueued = false;

    var chart = window.loraloopChart.lossChart(chartFrame, {
      title: t("data.chart.title"),
      x: t("data.chart.x"),
      y: t("data.chart.y"),
      empty: chartFrame.getAttribute("data-empty"),
      description: function (list, steps) {
        if (!list.length) return t("data.chart.empty");
        var lastPoint = list[list.length - 1];
        return t("data.chart.desc", {
          count: list.length,
          step: lastPoint.step,
          total: steps || lastPoint.step,
          loss: fmt(lastPoint.loss, 4),
          val: latestVal === null ? "—" : fmt(latestVal, 4),
        });
      },
    });

    function finished(s) { return job.finished.indexOf(s) !== -1; }

    function setStatus(next, attempts) {
      status = next;
      var badge = $("job-status");
      badge.textContent = t("job.status." + next);
      badge.className = "status status--" + next + " data-head__status";
      cancelButton.hidden = job.cancellable.indexOf(next) === -1;
      retryButton.hidden = job.retryable.indexOf(next) === -1;
      if (attempts !== undefined) $("job-attempts").textContent = attempts + " / " + job.max_attempts;
      var done = $("job-done");
      if (done && job.adapter_id) done.hidden = next !== "succeeded";
      if (next === "succeeded") {
        bar.max = Math.max(1, total);
        bar.value = bar.max;
      }
    }

    function draw() {
      if (drawQueued) return;
      drawQueued = true;
      window.requestAnimationFrame(function () {
        drawQueued = false;
        var list = Array.from(points.values()).sort(function (a, b) { return a.step - b.step; });
        chart.render(list, total);
      });
    }

    function addLog(at, text, warn) {
      var li = document.createElement("li");
      var time = document.createElement("time");
      time.className = "data-log__time";
      time.textContent = at ? String(at).slice(11, 19) : "";
      if (at) time.setAttribute("datetime", at);
      var body = document.createElement("span");
      body.className = "data-log__text" + (warn ? " data-log__text--warn" : "");
      body.textContent = text;
      li.appendChild(time);
      li.appendChild(body);
      var atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.appendChild(li);
      if (atBottom) log.scrollTop = log.scrollHeight;
      logEmpty.hidden = true;
    }

    function dropFrom(step) {
      points.forEach(function (_, key) { if (key >= step) points.delete(key); });
      maxStep = 0;
      points.forEach(function (_, key) { maxStep = Math.max(maxStep, key); });
    }

    function progress(d, at) {
      var step = d.step;
      total = d.total_steps || d.total || total;
      if (step <= maxStep) dropFrom(step); // a new attempt started over
      maxStep = step;
      var point = { step: step, loss: typeof d.loss === "number" ? d.loss : null, val: null };
      if (typeof d.val_loss === "number") { point.val = d.val_loss; latestVal = d.val_loss; }
      points.set(step, point);
      bar.max = Math.max(1, total);
      bar.value = Math.min(step, bar.max);
      barLabel.textContent = typeof d.epoch === "number"
        ? t("data.job.step_epoch", { step: step, total: total, epoch: fmt(d.epoch, 2) })
        : t("data.job.step", { step: step, total: total });
      if (point.loss !== null) $("fig-loss").textContent = fmt(point.loss, 4);
      if (latestVal !== null) $("fig-val").textContent = fmt(latestVal, 4);
      if (typeof d.tokens_per_s === "number") $("fig-speed").textContent = t("data.job.speed_value", { n: fmt(d.tokens_per_s, 1) });
      if (typeof d.eta_s === "number") $("fig-eta").textContent = step >= total ? t("data.job.eta_done") : duration(d.eta_s);
      var parts = [t("data.log.step", { step: step, total: total })];
      if (point.loss !== null) parts.push(t("data.log.loss", { loss: fmt(point.loss, 4) }));
      if (point.val !== null) parts.push(t("data.log.val", { loss: fmt(point.val, 4) }));
      if (typeof d.tokens_per_s === "number") parts.push(t("data.job.speed_value", { n: fmt(d.tokens_per_s, 1) }));
      addLog(at, parts.join(" · "));
      if (!finished(status) && status !== "running") setStatus("running");
      draw();
    }

    function handle(event) {
      lastSeq = Math.max(lastSeq, event.seq || 0);
      var d = event.data || {};
      if (typeof d.step === "number" && (d.total_steps || d.total || typeof d.loss === "number")) {
        progress(d, event.at);
        return;
      }
      if (d.event === "started") {
        addLog(event.at, t("data.log.started", { attempt: event.attempt }));
        if (!finished(status)) setStatus("running", event.attempt);
      } else if (d.event === "preparing_base") {
        addLog(event.at, t("data.log.preparing_base"));
      } else if (d.event === "resumed") {
        dropFrom(d.step + 1);
        addLog(event.at, t("data.log.resumed", { step: d.step }));
        draw();
      } else {
        addLog(event.at, d.message ? String(d.message) : JSON.stringify(d));
      }
    }

    function ended(result) {
      setStatus(result.status, result.attempts);
      var errorBox = $("job-error");
      if (result.status === "failed" || result.status === "cancelled") {
        $("job-error-text").textContent = result.error || t("job.status." + result.status);
        errorBox.hidden = false;
        live.textContent = t("data.job.ended_" + result.status);
      } else {
        errorBox.hidden = true;
        live.textContent = result.status === "succeeded" ? t("data.job.ended_succeeded") : "";
      }
      if (result.status === "succeeded") $("fig-eta").textContent = t("data.job.eta_done");
      addLog(result.finished_at, t("data.log.ended", { status: t("job.status." + result.status) }), result.status === "failed");
    }

    async function loadStored() {
      for (;;) {
        var page = await L.api("GET", "/api/jobs/" + job.id + "/events?after=" + lastSeq + "&limit=1000");
        page.forEach(handle);
        if (page.length < 1000) return;
      }
    }

    async function follow() {
      if (following) return;
      var controller = new AbortController();
      following = controller;
      var delay = 1000;
      while (following === controller) {
        try {
          var response = await fetch("/api/jobs/" + job.id + "/stream?after=" + lastSeq, {
            headers: { Accept: "text/event-stream" },
            signal: controller.signal,
          });
          if (!response.ok) throw new L.ApiError(response.status, (await response.json().catch(function () { return {}; })).error);
          live.textContent = "";
          var over = false;
          await readStream(response, function (name, payload) {
            if (name === "progress") handle(payload);
            else if (name === "end") { over = true; ended(payload); }
          });
          if (over) break;
          delay = 1000;
        } catch (error) {
          if (controller.signal.aborted) break;
          if (error && (error.status === 404 || error.status === 401)) {
            live.textContent = errorText(error);
            break;
          }
          live.textContent = t("data.job.reconnecting");
          await new Promise(function (resolve) { setTimeout(resolve, delay); });
          delay = Math.min(10000, delay * 2);
        }
      }
      if (following === controller) following = null;
    }

    async function act(button, path) {
      button.disabled = true;
      actionError.hidden = true;
      try {
        var result = await L.api("POST", "/api/jobs/" + job.id + path);
        if (path === "/retry") {
          setStatus(result.status, result.attempts);
          $("job-error").hidden = true;
          live.textContent = t("data.job.requeued");
          addLog(null, t("data.log.requeued"));
          follow();
        } else {
          live.textContent = t("data.job.cancelling");
        }
      } catch (error) {
        actionError.textContent = t("data.job.action_failed", { message: errorText(error) });
        actionError.hidden = false;
      } finally {
        button.disabled = false;
      }
    }

    cancelButton.addEventListener("click", function () { act(cancelButton, "/cancel"); });
    retryButton.addEventListener("click", function () { act(retryButton, "/retry"); });

    loadStored().then(function () {
      draw();
      if (finished(status)) {
        if (status === "succeeded") setStatus(status);
        if (!points.size && !log.children.length) logEmpty.hidden = false;
        return;
      }
      live.textContent = status === "queued" ? t("data.job.queued_note") : "";
      follow();
    }).catch(function (error) {
      live.textContent = errorText(error);
      follow();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var upload = $("upload-form");
    if (upload) initUpload(upload);
    var dataset = readJson("dataset-data");
    if (dataset) initDataset(dataset);
    var train = readJson("train-data");
    var form = $("train-form");
    if (train && form) initTrain(form, train);
    var job = readJson("job-data");
    if (job) initJob(job);
  });
})();

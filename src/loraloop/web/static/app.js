// loraloop: the small shared script every page loads (no framework, no CDN).
// window.loraloop.api(method, path, body)   JSON to /api with the session's CSRF token
// window.loraloop.stream(path, body, onEvent, signal)   POST that answers with server-sent events
// window.loraloop.texts()   the page's translations from <script type="application/json" id="texts">
"use strict";

(function () {
  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function ApiError(status, error) {
    this.name = "ApiError";
    this.status = status;
    this.message = (error && error.message) || "HTTP " + status;
    this.code = error && error.code;
    this.param = error && error.param;
  }
  ApiError.prototype = Object.create(Error.prototype);

  async function api(method, path, body) {
    var options = { method: method, headers: { "X-CSRF-Token": csrf(), Accept: "application/json" } };
    if (body instanceof FormData) {
      options.body = body;
    } else if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    var response = await fetch(path, options);
    if (response.status === 204) return null;
    var data = await response.json().catch(function () { return {}; });
    if (!response.ok) throw new ApiError(response.status, data.error);
    return data;
  }

  // Reads "data: {...}" lines of a server-sent event stream; calls onEvent(json, eventName).
  async function stream(path, body, onEvent, signal) {
    var response = await fetch(path, {
      method: "POST",
      headers: { "X-CSRF-Token": csrf(), "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(body),
      signal: signal,
    });
    if (!response.ok) {
      var data = await response.json().catch(function () { return {}; });
      throw new ApiError(response.status, data.error);
    }
    await readEvents(response, onEvent);
  }

  async function readEvents(response, onEvent) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    for (;;) {
      var part = await reader.read();
      if (part.done) break;
      buffer += decoder.decode(part.value, { stream: true });
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
        var text = data.join("\n");
        if (text === "[DONE]") { onEvent(null, "done"); return; }
        var payload;
        try { payload = JSON.parse(text); } catch (_) { return; }
        // an OpenAI error object mid-stream; a job's "error" (a string) is data, not a failure
        if (payload && payload.error && typeof payload.error === "object") throw new ApiError(200, payload.error);
        onEvent(payload, name);
      });
    }
  }

  var cachedTexts = null;
  function texts() {
    if (cachedTexts === null) {
      var node = document.getElementById("texts");
      cachedTexts = node ? JSON.parse(node.textContent) : {};
    }
    return cachedTexts;
  }

  // t("key", {name: value}) with the page's texts; unknown keys show as themselves.
  function t(key, params) {
    var text = texts()[key] || key;
    Object.keys(params || {}).forEach(function (name) {
      text = text.split("{" + name + "}").join(String(params[name]));
    });
    return text;
  }

  window.loraloop = { api: api, stream: stream, readEvents: readEvents, texts: texts, t: t, ApiError: ApiError };
})();

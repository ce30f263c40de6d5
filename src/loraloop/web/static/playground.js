// The playground: chat with one model or two side by side, streamed token by token, with
// Stop, feedback (thumbs, the better answer) and conversations kept per user.
//
// A conversation is a list of turns: { user: text, answers: [answer of column 0, of column 1] }.
// It is saved as messages [user, assistant (column 0), assistant (column 1, when comparing),
// user, ...], so reopening puts every answer back in its column. Each answer keeps the
// trace_id of its completion, so feedback on a reopened answer still reaches its trace.
"use strict";

(function () {
  var L = window.loraloop;
  var root = document.getElementById("pg");
  if (!L || !root) return;
  var t = L.t;

  var DEFAULTS = {
    system: "",
    temperature: 0.7,
    top_p: 1,
    top_k: 0,
    max_tokens: null,
    seed: null,
    stop: [],
    presence_penalty: 0,
    frequency_penalty: 0,
  };
  var NUMBERS = ["temperature", "top_p", "top_k", "max_tokens", "seed", "presence_penalty", "frequency_penalty"];
  var INTEGERS = ["top_k", "max_tokens", "seed"];
  var TITLE_LENGTH = 48;
  var LETTERS = ["A", "B"];

  function $(id) { return document.getElementById(id); }

  var els = {
    compare: $("pg-compare"),
    settings: $("pg-settings"),
    form: $("pg-settings-form"),
    values: $("pg-settings-values"),
    settingsError: $("pg-settings-error"),
    reset: $("pg-reset"),
    system: $("pg-system"),
    stop: $("pg-stop-sequences"),
    composer: $("pg-composer"),
    input: $("pg-input"),
    send: $("pg-send"),
    stopAll: $("pg-stop"),
    notice: $("pg-notice"),
    announce: $("pg-announce"),
    history: $("pg-history"),
    historyEmpty: $("pg-history-empty"),
    newChat: $("pg-new"),
    sideToggle: $("pg-side-toggle"),
  };

  var columns = Array.prototype.map.call(root.querySelectorAll(".pg-col"), function (el, index) {
    return {
      index: index,
      el: el,
      select: el.querySelector(".pg-target"),
      log: el.querySelector(".pg-log"),
      stop: el.querySelector(".pg-col__stop"),
      controller: null,
    };
  });

  // ``chat`` is the conversation on screen; a run that outlives it (New chat during an answer)
  // still saves into its own chat object.
  function blankChat() { return { id: null, title: "", turns: [], created: null }; }
  var state = { chat: blankChat(), compare: false, busy: false };

  // --- small helpers ------------------------------------------------------------------------

  function clone(id) {
    return $(id).content.firstElementChild.cloneNode(true);
  }

  function announce(text) {
    els.announce.textContent = "";
    window.setTimeout(function () { els.announce.textContent = text; }, 50);
  }

  function showNotice(text) {
    els.notice.textContent = text;
    els.notice.hidden = !text;
  }

  function nearBottom() {
    var doc = document.documentElement;
    return window.innerHeight + window.scrollY >= doc.scrollHeight - 120;
  }

  function toBottom() {
    window.scrollTo(0, document.documentElement.scrollHeight);
  }

  function sleep(ms) {
    return new Promise(function (resolve) { window.setTimeout(resolve, ms); });
  }

  function activeColumns() {
    return state.compare ? columns : columns.slice(0, 1);
  }

  // --- targets: "deployment:<name>", "adapter:<id>:<version>", "base:<id>" ------------------

  function targetOf(value) {
    var parts = String(value || "").split(":");
    if (parts[0] === "deployment" && parts.length === 2) return { deployment: parts[1] };
    if (parts[0] === "adapter" && parts.length === 3) {
      return { adapter_id: Number(parts[1]), version: Number(parts[2]) };
    }
    if (parts[0] === "base" && parts.length === 2) return { base_model_id: Number(parts[1]) };
    return null;
  }

  function valueOf(target) {
    if (!target || typeof target !== "object") return null;
    if (target.deployment) return "deployment:" + target.deployment;
    if (target.adapter_id && target.version) return "adapter:" + target.adapter_id + ":" + target.version;
    if (target.base_model_id) return "base:" + target.base_model_id;
    return null;
  }

  function hasOption(select, value) {
    return Array.prototype.some.call(select.options, function (o) { return o.value === value; });
  }

  function choose(select, value) {
    if (value && hasOption(select, value)) { select.value = value; return true; }
    return false;
  }

  function optionLabel(select) {
    var option = select.options[select.selectedIndex];
    return option ? option.textContent : "";
  }

  // Column B starts on another model than column A, so comparing shows a difference at once.
  function pickOther() {
    var a = columns[0].select, b = columns[1].select;
    if (b.value !== a.value || b.options.length < 2) return;
    var other = Array.prototype.find.call(b.options, function (o) { return o.value !== a.value; });
    if (other) b.value = other.value;
  }

  function conversationTarget() {
    var first = targetOf(columns[0].select.value) || {};
    if (!state.compare) return first;
    return { compare: [first, targetOf(columns[1].select.value) || {}] };
  }

  // --- settings -----------------------------------------------------------------------------

  function field(name) { return els.form.elements.namedItem(name); }

  function writeSettings(values) {
    var v = Object.assign({}, DEFAULTS, values || {});
    els.system.value = v.system || "";
    NUMBERS.forEach(function (name) {
      field(name).value = v[name] === null || v[name] === undefined ? "" : String(v[name]);
    });
    var stops = Array.isArray(v.stop) ? v.stop : [];
    els.stop.value = stops.map(function (s) { return s.split("\n").join("\\n"); }).join("\n");
    settingsChanged();
  }

  function stopSequences() {
    return els.stop.value.split("\n").filter(function (line) { return line.length > 0; })
      .map(function (line) { return line.split("\\n").join("\n"); });
  }

  function readSettings() {
    var out = { system: els.system.value.trim() };
    NUMBERS.forEach(function (name) {
      var raw = field(name).value.trim();
      out[name] = raw === "" ? DEFAULTS[name] : Number(raw);
    });
    out.stop = stopSequences();
    return out;
  }

  function settingsValid() {
    els.stop.setCustomValidity(stopSequences().length > 4 ? t("playground.settings.too_many_stops") : "");
    INTEGERS.forEach(function (name) {
      var input = field(name);
      var ok = input.value.trim() === "" || Number.isInteger(Number(input.value));
      input.setCustomValidity(ok ? "" : t("playground.settings.whole_number"));
    });
    var bad = Array.prototype.find.call(els.form.elements, function (input) {
      return input.willValidate && !input.checkValidity();
    });
    if (!bad) { els.settingsError.hidden = true; return true; }
    var label = els.form.querySelector('label[for="' + bad.id + '"]');
    els.settings.open = true;
    els.settingsError.textContent = t("playground.settings.invalid", {
      field: label ? label.textContent.trim() : bad.name,
      problem: bad.validationMessage,
    });
    els.settingsError.hidden = false;
    bad.focus();
    return false;
  }

  function settingsChanged() {
    var s = readSettings();
    var parts = [
      t("playground.settings.temperature") + " " + s.temperature,
      t("playground.settings.max_tokens") + " " + (s.max_tokens === null ? t("playground.settings.auto") : s.max_tokens),
    ];
    if (s.seed !== null) parts.push(t("playground.settings.seed") + " " + s.seed);
    if (s.system) parts.push(t("playground.settings.has_system"));
    els.values.textContent = parts.join(" · ");
  }

  function chatBody(column, messages) {
    var s = readSettings();
    var body = Object.assign({}, targetOf(column.select.value), {
      messages: messages,
      stream: true,
      temperature: s.temperature,
      top_p: s.top_p,
      top_k: s.top_k,
      presence_penalty: s.presence_penalty,
      frequency_penalty: s.frequency_penalty,
    });
    if (s.max_tokens !== null) body.max_tokens = s.max_tokens;
    if (s.seed !== null) body.seed = s.seed;
    if (s.stop.length) body.stop = s.stop;
    return body;
  }

  // What column ``index`` has said so far, up to and including the question of turn ``upto``.
  function history(chat, index, upto) {
    var s = readSettings();
    var messages = s.system ? [{ role: "system", content: s.system }] : [];
    chat.turns.slice(0, upto + 1).forEach(function (turn, k) {
      messages.push({ role: "user", content: turn.user });
      var answer = turn.answers[index];
      if (k < upto && answer && answer.content.trim()) {
        messages.push({ role: "assistant", content: answer.content });
      }
    });
    return messages;
  }

  // --- rendering ----------------------------------------------------------------------------

  function clearLogs() {
    columns.forEach(function (column) {
      Array.prototype.slice.call(column.log.querySelectorAll(".pg-msg")).forEach(function (n) { n.remove(); });
      column.log.querySelector(".pg-log__empty").hidden = false;
    });
  }

  function addUser(column, text) {
    var node = clone("pg-tpl-user");
    node.querySelector(".pg-msg__text").textContent = text;
    column.log.querySelector(".pg-log__empty").hidden = true;
    column.log.appendChild(node);
  }

  var answerIds = 0;

  function addAnswer(column, answer) {
    var node = clone("pg-tpl-assistant");
    var id = "pg-answer-" + ++answerIds;
    node.querySelector(".pg-fix__input").id = id + "-fix";
    node.querySelector(".pg-fix__label").htmlFor = id + "-fix";
    answer.node = node;
    answer.column = column;
    column.log.appendChild(node);
    paint(answer);
    wire(answer);
    return node;
  }

  var STATES = {
    queued: "playground.state.queued",
    waiting: "playground.state.waiting",
    streaming: "playground.state.streaming",
    stopped: "playground.state.stopped",
    error: "playground.state.error",
    missing: "playground.state.missing",
  };

  function paint(answer) {
    var n = answer.node;
    var text = n.querySelector(".pg-msg__text");
    if (text.textContent !== answer.content) text.textContent = answer.content;
    var live = answer.status === "waiting" || answer.status === "streaming" || answer.status === "queued";
    text.setAttribute("aria-busy", live ? "true" : "false");
    n.dataset.status = answer.status;
    n.querySelector(".pg-msg__model").textContent = answer.model || optionLabel(answer.column.select);
    var key = STATES[answer.status];
    if (answer.status === "done" && answer.finish === "length") key = "playground.state.length";
    if (answer.status === "done" && answer.finish === "cancelled") key = "playground.state.cancelled";
    if (answer.status === "done" && !answer.content) key = "playground.state.empty";
    n.querySelector(".pg-msg__state").textContent = key ? t(key) : "";
    n.querySelector(".pg-bubble").hidden = answer.status === "error" && !answer.content;
    n.querySelector(".pg-actions").hidden = live || !answer.trace_id;
    paintError(answer);
    paintFeedback(answer);
    paintRoute(answer);
  }

  // Under an app's answer: which member answered and why (the first chunk's loraloop.route),
  // through nested apps ("general (default) › backup (fallback)"), and the members that failed
  // before it.
  function paintRoute(answer) {
    var route = answer.route;
    var n = answer.node, badge = n.querySelector(".pg-msg__route");
    if (!route) { if (badge) badge.remove(); return; }
    if (!badge) {
      badge = document.createElement("p");
      badge.className = "pg-msg__meta pg-msg__route small";
      n.querySelector(".pg-bubble").after(badge);
    }
    function why(step) {
      var at = step.similarity !== undefined ? Number(step.similarity).toFixed(2) : "";
      if (step.by === "rule") return t("playground.route.rule", { matched: step.matched || "" });
      if (step.by === "meaning") return t("playground.route.meaning", { similarity: at });
      if (step.by === "default" && step.best) return t("playground.route.default_closest", { best: step.best, similarity: at });
      return t("playground.route." + step.by);
    }
    var path = [];
    for (var step = route; step; step = step.inner) {
      path.push(t("playground.route.step", { member: step.member, why: why(step) }));
    }
    var text = t("playground.route.answered_by", { path: path.join(" › ") });
    var failed = (route.fallbacks || []).map(function (f) {
      return t("playground.route.failed", { member: f.member, reason: f.reason });
    });
    if (failed.length) text += " · " + t("playground.route.after", { tried: failed.join(", ") });
    badge.textContent = text;
  }

  function errorHelp(error) {
    var code = error.code || "";
    if (error.network) return { hint: "playground.error.network" };
    if (code === "context_length_exceeded") return { hint: "playground.error.context" };
    if (code === "deployment_paused") return { hint: "playground.error.paused", link: "/deploy", label: "playground.error.to_deploy" };
    if (code === "csrf_failed") return { hint: "playground.error.csrf" };
    if (error.status === 401) return { hint: "playground.error.signin", link: "/signin", label: "playground.error.to_signin" };
    if (error.status === 404) return { hint: "playground.error.not_found" };
    if (error.status === 409) return { hint: "playground.error.conflict" };
    if (error.status === 429) return { hint: "playground.error.rate" };
    if (error.status === 400 || error.status === 413) return { hint: "playground.error.invalid" };
    if (error.status === 200) return { hint: "playground.error.stream" };
    return { hint: "playground.error.server" };
  }

  function paintError(answer) {
    var box = answer.node.querySelector(".pg-msg__error");
    if (answer.status !== "error" || !answer.error) { box.hidden = true; box.removeAttribute("role"); return; }
    var help = errorHelp(answer.error);
    box.querySelector(".pg-msg__error-text").textContent = answer.error.message;
    box.querySelector(".pg-msg__error-hint").textContent = t(help.hint);
    var link = box.querySelector(".pg-msg__error-link");
    link.hidden = !help.link;
    if (help.link) { link.href = help.link; link.textContent = t(help.label); }
    box.querySelector(".pg-msg__retry").hidden = !isLastTurn(answer) || state.busy;
    box.setAttribute("role", "alert");
    box.hidden = false;
  }

  function paintFeedback(answer) {
    var n = answer.node;
    n.querySelector(".pg-act--up").setAttribute("aria-pressed", answer.rating === 1 ? "true" : "false");
    n.querySelector(".pg-act--down").setAttribute("aria-pressed", answer.rating === -1 ? "true" : "false");
    n.querySelector(".pg-actions__saved").textContent = answer.saved || "";
    n.querySelector(".pg-actions__saved").dataset.kind = answer.savedKind || "";
    n.querySelector(".pg-fixed").hidden = !answer.correction;
    n.querySelector(".pg-fixed__text").textContent = answer.correction || "";
  }

  function isLastTurn(answer) {
    var turns = state.chat.turns, last = turns[turns.length - 1];
    return !!last && last.answers.indexOf(answer) !== -1;
  }

  function renderAll() {
    clearLogs();
    state.chat.turns.forEach(function (turn) {
      activeColumns().forEach(function (column) {
        addUser(column, turn.user);
        var answer = turn.answers[column.index];
        if (answer) addAnswer(column, answer);
      });
    });
  }

  // --- feedback -----------------------------------------------------------------------------

  async function postFeedback(answer, body) {
    body.trace_id = answer.trace_id;
    try {
      return await L.api("POST", "/api/feedback", body);
    } catch (error) {
      // A stopped answer's trace is written the moment the server notices; ask once more.
      if (error.status !== 404) throw error;
      await sleep(800);
      return L.api("POST", "/api/feedback", body);
    }
  }

  async function rate(answer, rating) {
    if (answer.rating === rating) return;
    answer.saved = t("playground.feedback.saving");
    answer.savedKind = "";
    paintFeedback(answer);
    try {
      await postFeedback(answer, { rating: rating });
      answer.rating = rating;
      answer.saved = t(rating === 1 ? "playground.feedback.saved_up" : "playground.feedback.saved_down");
      answer.savedKind = "ok";
    } catch (error) {
      answer.saved = t("playground.feedback.failed", { message: error.message });
      answer.savedKind = "error";
    }
    paintFeedback(answer);
  }

  function openFix(answer) {
    var n = answer.node, form = n.querySelector(".pg-fix"), input = n.querySelector(".pg-fix__input");
    if (!form.hidden) { input.focus(); return; }
    input.value = answer.correction || answer.content;
    form.querySelector(".pg-fix__error").hidden = true;
    form.hidden = false;
    n.querySelector(".pg-act--fix").setAttribute("aria-expanded", "true");
    input.focus();
    input.select();
    form.scrollIntoView({ block: "nearest" });
  }

  function closeFix(answer) {
    var n = answer.node;
    n.querySelector(".pg-fix").hidden = true;
    n.querySelector(".pg-act--fix").setAttribute("aria-expanded", "false");
    n.querySelector(".pg-act--fix").focus();
  }

  async function saveFix(answer) {
    var n = answer.node, input = n.querySelector(".pg-fix__input"), problem = n.querySelector(".pg-fix__error");
    var text = input.value.trim();
    if (!text) {
      problem.textContent = t("playground.feedback.fix_empty");
      problem.hidden = false;
      input.focus();
      return;
    }
    var button = n.querySelector('.pg-fix button[type="submit"]');
    button.disabled = true;
    try {
      await postFeedback(answer, { correction: text });
      answer.correction = text;
      answer.saved = t("playground.feedback.fix_saved");
      answer.savedKind = "ok";
      paintFeedback(answer);
      closeFix(answer);
    } catch (error) {
      problem.textContent = t("playground.feedback.failed", { message: error.message });
      problem.hidden = false;
    } finally {
      button.disabled = false;
    }
  }

  function wire(answer) {
    var n = answer.node;
    n.querySelector(".pg-act--up").addEventListener("click", function () { rate(answer, 1); });
    n.querySelector(".pg-act--down").addEventListener("click", function () { rate(answer, -1); });
    n.querySelector(".pg-act--fix").addEventListener("click", function () { openFix(answer); });
    n.querySelector(".pg-fix__cancel").addEventListener("click", function () { closeFix(answer); });
    var form = n.querySelector(".pg-fix");
    form.addEventListener("submit", function (event) { event.preventDefault(); saveFix(answer); });
    form.addEventListener("keydown", function (event) {
      if (event.key === "Escape") { event.preventDefault(); closeFix(answer); }
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); saveFix(answer); }
    });
    n.querySelector(".pg-msg__retry").addEventListener("click", function () { retry(answer); });
  }

  // Marks the thumbs and corrections already given on the answers of a reopened chat.
  async function restoreFeedback() {
    var byTrace = {};
    state.chat.turns.forEach(function (turn) {
      turn.answers.forEach(function (a) { if (a && a.trace_id) byTrace[a.trace_id] = a; });
    });
    if (!Object.keys(byTrace).length) return;
    var given;
    try { given = await L.api("GET", "/api/feedback?limit=200"); } catch (_) { return; }
    given.slice().reverse().forEach(function (row) {  // oldest first: the newest wins
      var answer = byTrace[row.trace_id];
      if (!answer) return;
      if (row.rating === 1 || row.rating === -1) answer.rating = row.rating;
      if (row.correction) answer.correction = row.correction;
      if (answer.node) paintFeedback(answer);
    });
  }

  // --- streaming ----------------------------------------------------------------------------

  function newAnswer() {
    return { content: "", trace_id: null, model: null, status: "waiting", finish: null, error: null, rating: 0 };
  }

  // Streams one column's answer; ``column.controller`` was made by run(), so a Stop pressed
  // while the column still waits for its turn ends it before it starts.
  async function ask(chat, column, turnIndex) {
    var answer = chat.turns[turnIndex].answers[column.index];
    var controller = column.controller;
    var body = chatBody(column, history(chat, column.index, turnIndex));
    try {
      await L.stream("/api/playground/chat", body, function (chunk) {
        if (!chunk) return;  // [DONE]
        var follow = nearBottom();
        answer.trace_id = chunk.id || answer.trace_id;
        answer.model = chunk.model || answer.model;
        if (chunk.loraloop && chunk.loraloop.route) answer.route = chunk.loraloop.route;
        var choice = chunk.choices && chunk.choices[0];
        if (choice && choice.delta && choice.delta.content) answer.content += choice.delta.content;
        if (choice && choice.finish_reason) answer.finish = choice.finish_reason;
        answer.status = "streaming";
        paint(answer);
        if (follow) toBottom();
      }, controller.signal);
      answer.status = "done";
      announce(said("done", column));
    } catch (error) {
      if (error && error.name === "AbortError") {
        answer.status = "stopped";
        announce(said("stopped", column));
      } else {
        answer.status = "error";
        answer.error = error instanceof L.ApiError
          ? { status: error.status, code: error.code, message: error.message }
          : { network: true, message: t("playground.error.network_message") };
        announce(said("error", column));
      }
    } finally {
      if (column.controller === controller) {
        column.controller = null;
        column.stop.hidden = true;
      }
      paint(answer);
    }
  }

  function baseOf(column) {
    var option = column.select.options[column.select.selectedIndex];
    return option ? option.dataset.base || "" : "";
  }

  // The server keeps one base model in memory at a time: two targets on different bases
  // would evict each other mid-answer, so they answer one after the other instead.
  function together(which) {
    var bases = which.map(baseOf).filter(function (base) { return base !== ""; });
    return bases.every(function (base) { return base === bases[0]; });
  }

  function said(kind, column) {
    if (!state.compare) return t("playground.announce." + kind + "_single");
    return t("playground.announce." + kind, { letter: LETTERS[column.index] });
  }

  function setBusy(busy) {
    state.busy = busy;
    root.dataset.busy = busy ? "true" : "false";
    els.send.hidden = busy;
    els.stopAll.hidden = !busy;
    els.compare.disabled = busy || !columns[0].select.options.length;
    if (!busy && document.activeElement === els.stopAll) els.input.focus();
  }

  async function run(chat, turnIndex, which) {
    setBusy(true);
    which.forEach(function (column) {
      column.controller = new AbortController();
      column.stop.hidden = !state.compare;
    });
    var saving = ensureSaved(chat);
    if (together(which)) {
      await Promise.all(which.map(function (column) { return ask(chat, column, turnIndex); }));
    } else {
      which.slice(1).forEach(function (column) {
        var answer = chat.turns[turnIndex].answers[column.index];
        answer.status = "queued";
        paint(answer);
      });
      for (var k = 0; k < which.length; k++) await ask(chat, which[k], turnIndex);
    }
    setBusy(false);
    chat.turns[turnIndex].answers.forEach(function (a) { if (a && a.node) paint(a); });
    await saving;
    await save(chat);
  }

  function send() {
    var text = els.input.value.trim();
    if (!text || state.busy || !columns[0].select.value) return;
    if (!settingsValid()) return;
    showNotice("");
    var chat = state.chat;
    var turn = { user: text, answers: [newAnswer(), state.compare ? newAnswer() : null] };
    chat.turns.push(turn);
    activeColumns().forEach(function (column) {
      addUser(column, text);
      addAnswer(column, turn.answers[column.index]);
    });
    els.input.value = "";
    toBottom();
    run(chat, chat.turns.length - 1, activeColumns());
  }

  function retry(answer) {
    if (state.busy || !isLastTurn(answer)) return;
    var chat = state.chat, index = chat.turns.length - 1, column = answer.column;
    var fresh = newAnswer();
    chat.turns[index].answers[column.index] = fresh;
    var old = answer.node;
    addAnswer(column, fresh);
    old.replaceWith(fresh.node);
    run(chat, index, [column]);
  }

  function stopAll() {
    columns.forEach(function (column) { if (column.controller) column.controller.abort(); });
  }

  // --- conversations ------------------------------------------------------------------------

  function messages(chat) {
    var out = [];
    chat.turns.forEach(function (turn) {
      out.push({ role: "user", content: turn.user });
      turn.answers.forEach(function (a) {
        if (a) out.push({ role: "assistant", content: a.content, trace_id: a.trace_id, model: a.model });
      });
    });
    return out;
  }

  function savedSettings() {
    return Object.assign(readSettings(), { compare: state.compare });
  }

  function titleFrom(text) {
    var flat = text.replace(/\s+/g, " ").trim();
    return flat.length > TITLE_LENGTH ? flat.slice(0, TITLE_LENGTH - 1) + "…" : flat || t("playground.history.untitled");
  }

  // Creates the conversation on its first message (while the answer streams).
  function ensureSaved(chat) {
    if (chat.id !== null) return Promise.resolve();
    if (chat.created) return chat.created;
    chat.title = titleFrom(chat.turns[0].user);
    var body = { title: chat.title, target: conversationTarget(), settings: savedSettings(), messages: messages(chat) };
    chat.created = L.api("POST", "/api/playground/conversations", body).then(function (row) {
      chat.id = row.id;
      addHistoryItem(row, true);
      if (chat === state.chat) setAddress("/playground?conversation=" + row.id);
    }, function (error) {
      chat.created = null;
      showNotice(t("playground.notice.save_failed", { message: error.message }));
    });
    return chat.created;
  }

  async function save(chat) {
    if (chat.id === null || chat.deleted) return;
    var body = { messages: messages(chat) };
    if (chat === state.chat) {
      body.target = conversationTarget();
      body.settings = savedSettings();
    }
    try {
      await L.api("PUT", "/api/playground/conversations/" + chat.id, body);
      var item = historyItem(chat.id);
      if (item && item !== els.history.firstElementChild) els.history.prepend(item);
    } catch (error) {
      showNotice(t("playground.notice.save_failed", { message: error.message }));
    }
  }

  // The language and theme switches come back to the chat that is open now.
  function setAddress(path) {
    window.history.replaceState(null, "", path);
    document.querySelectorAll('input[name="next"]').forEach(function (input) { input.value = path; });
  }

  function newChat(keepNotice) {
    stopAll();
    state.chat = blankChat();
    clearLogs();
    markCurrent();
    if (!keepNotice) showNotice("");
    setAddress("/playground");
  }

  function restore(saved) {
    var chat = blankChat();
    chat.id = saved.id;
    chat.title = saved.title;
    var s = saved.settings || {};
    writeSettings(s);
    var target = saved.target || {};
    var compare = Array.isArray(target.compare) || !!s.compare;
    var targets = Array.isArray(target.compare) ? target.compare : [target];
    setCompare(compare);
    var missing = false;
    activeColumns().forEach(function (column) {
      var wanted = valueOf(targets[column.index]);
      if (wanted && !choose(column.select, wanted)) missing = true;
    });
    if (missing) showNotice(t("playground.notice.missing_target"));
    chat.turns = turnsFrom(saved.messages || [], compare ? 2 : 1);
    state.chat = chat;
    renderAll();
    markCurrent();
    restoreFeedback();
  }

  function restoredAnswer(m) {
    var answer = newAnswer();
    if (m) {
      answer.content = m.content || "";
      answer.trace_id = m.trace_id || null;
      answer.model = m.model || null;
    }
    answer.status = answer.content || answer.trace_id ? "done" : "missing";
    return answer;
  }

  function turnsFrom(list, width) {
    var turns = [];
    list.forEach(function (m) {
      if (m.role === "user") {
        turns.push({ user: m.content, answers: [] });
      } else if (m.role === "assistant" && turns.length) {
        var answers = turns[turns.length - 1].answers;
        if (answers.length < width) answers.push(restoredAnswer(m));
      }
    });
    turns.forEach(function (turn) {
      while (turn.answers.length < width) turn.answers.push(restoredAnswer(null));
      if (width === 1) turn.answers.push(null);
    });
    return turns;
  }

  // --- the sidebar --------------------------------------------------------------------------

  function historyItem(id) {
    return els.history.querySelector('.pg-history__item[data-id="' + id + '"]');
  }

  function labelItem(item, title) {
    item.querySelector(".pg-history__link").textContent = title;
    item.querySelector(".pg-history__rename-label").textContent = t("playground.history.rename_named", { title: title });
    item.querySelector(".pg-history__delete-label").textContent = t("playground.history.delete_named", { title: title });
  }

  function addHistoryItem(row, first) {
    var item = clone("pg-tpl-history");
    item.dataset.id = String(row.id);
    item.querySelector(".pg-history__link").href = "/playground?conversation=" + row.id;
    item.querySelector(".pg-history__input").id = "pg-rename-" + row.id;
    item.querySelector(".pg-history__rename-form label").htmlFor = "pg-rename-" + row.id;
    labelItem(item, row.title);
    if (first) els.history.prepend(item); else els.history.appendChild(item);
    historyChanged();
    markCurrent();
  }

  function historyChanged() {
    var count = els.history.children.length;
    els.historyEmpty.hidden = count > 0;
    els.sideToggle.querySelector("span").textContent = t("playground.history.toggle", { count: count });
  }

  function markCurrent() {
    Array.prototype.forEach.call(els.history.children, function (item) {
      var link = item.querySelector(".pg-history__link");
      if (state.chat.id !== null && item.dataset.id === String(state.chat.id)) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    });
  }

  function mode(item, which) {
    item.querySelector(".pg-history__link").hidden = which === "rename";
    item.querySelector(".pg-history__tools").hidden = which !== "view";
    item.querySelector(".pg-history__rename-form").hidden = which !== "rename";
    item.querySelector(".pg-history__confirm").hidden = which !== "confirm";
    item.dataset.mode = which;
  }

  async function rename(item) {
    var input = item.querySelector(".pg-history__input");
    var title = input.value.trim();
    if (!title) { input.focus(); return; }
    try {
      await L.api("PUT", "/api/playground/conversations/" + item.dataset.id, { title: title });
      labelItem(item, title);
      if (String(state.chat.id) === item.dataset.id) state.chat.title = title;
      mode(item, "view");
      item.querySelector(".pg-history__rename").focus();
      announce(t("playground.history.renamed", { title: title }));
    } catch (error) {
      showNotice(t("playground.history.failed", { message: error.message }));
    }
  }

  async function remove(item) {
    var id = item.dataset.id;
    try {
      await L.api("DELETE", "/api/playground/conversations/" + id);
    } catch (error) {
      if (error.status !== 404) { showNotice(t("playground.history.failed", { message: error.message })); return; }
    }
    var next = item.nextElementSibling || item.previousElementSibling;
    item.remove();
    historyChanged();
    if (String(state.chat.id) === id) {
      state.chat.deleted = true;
      newChat(true);
    }
    showNotice(t("playground.history.deleted"));
    (next ? next.querySelector(".pg-history__link") : els.newChat).focus();
  }

  els.history.addEventListener("click", function (event) {
    var item = event.target.closest(".pg-history__item");
    if (!item) return;
    if (event.target.closest(".pg-history__rename")) {
      var input = item.querySelector(".pg-history__input");
      input.value = item.querySelector(".pg-history__link").textContent;
      mode(item, "rename");
      input.focus();
      input.select();
    } else if (event.target.closest(".pg-history__delete")) {
      mode(item, "confirm");
      item.querySelector(".pg-history__no").focus();
    } else if (event.target.closest(".pg-history__cancel, .pg-history__no")) {
      mode(item, "view");
      item.querySelector(".pg-history__link").focus();
    } else if (event.target.closest(".pg-history__yes")) {
      remove(item);
    }
  });

  els.history.addEventListener("submit", function (event) {
    event.preventDefault();
    var item = event.target.closest(".pg-history__item");
    if (item) rename(item);
  });

  els.history.addEventListener("keydown", function (event) {
    var item = event.target.closest(".pg-history__item");
    if (event.key === "Escape" && item && item.dataset.mode && item.dataset.mode !== "view") {
      mode(item, "view");
      item.querySelector(".pg-history__link").focus();
    }
  });

  els.sideToggle.addEventListener("click", function () {
    var open = els.sideToggle.getAttribute("aria-expanded") !== "true";
    els.sideToggle.setAttribute("aria-expanded", open ? "true" : "false");
    root.dataset.side = open ? "open" : "closed";
  });

  // --- compare mode -------------------------------------------------------------------------

  function setCompare(on) {
    state.compare = on;
    els.compare.checked = on;
    root.dataset.compare = on ? "true" : "false";
    columns[1].el.hidden = !on;
    if (on) pickOther();
  }

  els.compare.addEventListener("change", function () {
    var started = state.chat.turns.length > 0;
    if (started) newChat(true);
    setCompare(els.compare.checked);
    showNotice(started ? t(state.compare ? "playground.notice.compare_new" : "playground.notice.single_new") : "");
  });

  // --- composer and controls ----------------------------------------------------------------

  els.composer.addEventListener("submit", function (event) {
    event.preventDefault();
    send();
  });

  els.input.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && state.busy) { event.preventDefault(); stopAll(); return; }
    // Enter sends; Shift+Enter is a new line; Enter that confirms an IME conversion is not a send.
    if (event.key !== "Enter" || event.shiftKey || event.isComposing || event.keyCode === 229) return;
    event.preventDefault();
    send();
  });

  els.stopAll.addEventListener("click", stopAll);
  columns.forEach(function (column) {
    column.stop.addEventListener("click", function () { if (column.controller) column.controller.abort(); });
    column.select.addEventListener("change", function () { if (state.chat.id !== null && !state.busy) save(state.chat); });
  });

  els.newChat.addEventListener("click", function () {
    newChat(false);
    els.input.focus();
  });

  els.form.addEventListener("input", function () {
    settingsChanged();
    if (!els.settingsError.hidden) settingsValid();
  });
  els.form.addEventListener("submit", function (event) { event.preventDefault(); });
  els.reset.addEventListener("click", function () {
    writeSettings({});
    els.settingsError.hidden = true;
  });

  window.addEventListener("beforeunload", stopAll);

  // --- start --------------------------------------------------------------------------------

  writeSettings({});
  var opened = $("pg-conversation");
  if (opened) {
    restore(JSON.parse(opened.textContent));
  } else {
    pickOther();
  }
  setBusy(false);
})();

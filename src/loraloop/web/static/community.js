// loraloop review queue: commit-reveal in the browser. A verdict is sealed as
//   sha256("loraloop-review:{assignment}:{verdict}:{salt}:{edit}")
// where edit is "" or the sha256 of the edited messages as JSON with sorted keys, no spaces
// and non-ASCII kept: exactly contributions/review.py's commitment_of. Only the hash is sent
// at first; the verdict, the salt and the edit stay in localStorage until the reveal opens
// (every reviewer has committed), then go to the REST API. The server checks everything.
"use strict";

(function () {
  var L = window.loraloop;
  var t = L.t;
  var STORE = "loraloop.review.";

  // the hash ------------------------------------------------------------------------------

  function hex(buffer) {
    return Array.prototype.map.call(new Uint8Array(buffer), function (b) {
      return b.toString(16).padStart(2, "0");
    }).join("");
  }

  async function sha256(text) {
    return hex(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  }

  // json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")): strings are
  // escaped the same way by both (\" \\ \n \r \t \b \f, other controls as \u00xx).
  function canonical(value) {
    if (Array.isArray(value)) return "[" + value.map(canonical).join(",") + "]";
    if (value !== null && typeof value === "object") {
      return "{" + Object.keys(value).sort().map(function (key) {
        return JSON.stringify(key) + ":" + canonical(value[key]);
      }).join(",") + "}";
    }
    return JSON.stringify(value);
  }

  async function commitmentOf(assignment, verdict, salt, edited) {
    var edit = edited === null || edited === undefined ? "" : await sha256(canonical(edited));
    return sha256("loraloop-review:" + assignment + ":" + verdict + ":" + salt + ":" + edit);
  }

  function newSalt() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return hex(bytes.buffer);
  }

  window.loraloop.review = { commitmentOf: commitmentOf, canonical: canonical };

  var root = document.getElementById("reviews");
  if (!root) return;
  var data = JSON.parse(document.getElementById("review-data").textContent || "{}");
  var secure = Boolean(window.crypto && window.crypto.subtle);

  // what this browser keeps --------------------------------------------------------------

  function kept(id) {
    try {
      return JSON.parse(localStorage.getItem(STORE + id) || "null");
    } catch (_) {
      return null;
    }
  }

  function keep(id, value) {
    if (value === null) localStorage.removeItem(STORE + id);
    else localStorage.setItem(STORE + id, JSON.stringify(value));
  }

  // one task on the page ------------------------------------------------------------------

  function $(selector, scope) { return scope.querySelector(selector); }

  function setState(task, state) {
    task.setAttribute("data-state", state);
    $("[data-state-label]", task).textContent = t("community.state." + state);
    $("[data-verdict-form]", task).hidden = state !== "assigned";
    $("[data-reveal-area]", task).hidden = state === "assigned";
    $("[data-reveal]", task).hidden = state !== "open";
    $("[data-recheck]", task).hidden = state !== "waiting";
    var due = $("[data-due]", task);
    if (due) due.hidden = state !== "assigned";
    var secret = kept(task.getAttribute("data-task"));
    var line = $("[data-kept]", task);
    if (state === "done") line.textContent = t("community.js.revealed");
    else if (secret) line.textContent = t("community.js.kept", { verdict: t("community.verdict." + secret.verdict) });
    else line.textContent = state === "assigned" ? "" : t("community.js.missing_secret");
  }

  function say(task, text) { $("[data-status]", task).textContent = text; }

  function fail(task, text) {
    var node = $("[data-error]", task);
    node.textContent = text;
    node.hidden = false;
  }

  function clear(task) {
    $("[data-error]", task).hidden = true;
    say(task, "");
  }

  function messageOf(error) {
    return error instanceof L.ApiError ? error.message : t("community.js.offline");
  }

  function chosen(task) {
    var pressed = task.querySelector('[data-verdict][aria-pressed="true"]');
    return pressed ? pressed.getAttribute("data-verdict") : null;
  }

  // The item's messages with its answer (the last assistant turn) replaced by the fix.
  function edited(task, id) {
    var text = $("[data-fix-text]", task).value;
    var messages = data[id].messages.map(function (m) { return { role: m.role, content: m.content }; });
    for (var i = messages.length - 1; i >= 0; i--) {
      if (messages[i].role === "assistant") { messages[i].content = text; break; }
    }
    return messages;
  }

  async function commit(task) {
    var id = task.getAttribute("data-task");
    var verdict = chosen(task);
    clear(task);
    if (!verdict) { fail(task, t("community.js.pick_verdict")); return; }
    var edit = null;
    if (verdict === "fix") {
      if (!$("[data-fix-text]", task).value.trim()) { fail(task, t("community.js.fix_empty")); return; }
      edit = edited(task, id);
    }
    var secret = { verdict: verdict, salt: newSalt(), edited: edit, comment: $("[data-comment]", task).value.trim() || null };
    var before = kept(id);
    var button = $("[data-commit]", task);
    button.disabled = true;
    say(task, t("community.js.committing"));
    try {
      var commitment = await commitmentOf(Number(id), verdict, secret.salt, edit);
      keep(id, secret);  // kept first: a commitment whose answer got lost can still be revealed
      await L.api("POST", "/api/reviews/" + id + "/commit", { commitment: commitment });
      say(task, t("community.js.committed"));
      setState(task, "waiting");
      await refresh();
    } catch (error) {
      // an earlier commitment stands: keep what opens it, not this new salt
      if (error instanceof L.ApiError && error.code === "review_committed") keep(id, before);
      else if (error instanceof L.ApiError) keep(id, null);
      say(task, "");
      fail(task, messageOf(error));
    } finally {
      button.disabled = false;
    }
  }

  async function reveal(task) {
    var id = task.getAttribute("data-task");
    var secret = kept(id);
    clear(task);
    if (!secret) { fail(task, t("community.js.missing_secret")); return; }
    var button = $("[data-reveal]", task);
    button.disabled = true;
    say(task, t("community.js.revealing"));
    try {
      var body = { verdict: secret.verdict, salt: secret.salt, edited: secret.edited };
      if (secret.comment) body.comment = secret.comment;
      await L.api("POST", "/api/reviews/" + id + "/reveal", body);
      keep(id, null);
      setState(task, "done");
      say(task, "");
    } catch (error) {
      say(task, "");
      if (error instanceof L.ApiError && error.code === "reveal_not_open") setState(task, "waiting");
      if (error instanceof L.ApiError && error.code === "reveal_mismatch") fail(task, t("community.js.mismatch"));
      else fail(task, messageOf(error));
    } finally {
      button.disabled = false;
    }
  }

  // The queue as the server sees it now: a task whose reveal opened is revealed at once.
  async function refresh() {
    var queue;
    try {
      queue = await L.api("GET", "/api/reviews");
    } catch (_) {
      return;
    }
    var open = {};
    queue.forEach(function (row) { open[row.assignment_id] = row; });
    tasks().forEach(function (task) {
      var row = open[task.getAttribute("data-task")];
      if (!row || row.state !== "committed" || task.getAttribute("data-state") === "done") return;
      setState(task, row.reveal_open ? "open" : "waiting");
    });
    return autoReveal();
  }

  async function autoReveal() {
    for (var task of tasks()) {
      if (task.getAttribute("data-state") === "open" && kept(task.getAttribute("data-task"))) await reveal(task);
    }
  }

  function tasks() { return Array.prototype.slice.call(root.querySelectorAll("[data-task]")); }

  // wiring --------------------------------------------------------------------------------

  tasks().forEach(function (task) {
    var state = task.getAttribute("data-state");
    if (state === "committed") state = task.getAttribute("data-reveal-open") === "true" ? "open" : "waiting";
    setState(task, state);
    task.addEventListener("click", function (event) {
      var choice = event.target.closest("[data-verdict]");
      if (choice) {
        task.querySelectorAll("[data-verdict]").forEach(function (b) { b.setAttribute("aria-pressed", String(b === choice)); });
        var fix = $("[data-fix]", task);
        if (fix) {
          fix.hidden = choice.getAttribute("data-verdict") !== "fix";
          if (!fix.hidden) $("[data-fix-text]", task).focus();
        }
        return;
      }
      if (event.target.closest("[data-reveal]")) reveal(task);
    });
    $("[data-verdict-form]", task).addEventListener("submit", function (event) {
      event.preventDefault();
      commit(task);
    });
  });

  if (!secure) {
    document.getElementById("no-crypto").hidden = false;
    root.querySelectorAll("[data-commit], [data-reveal]").forEach(function (b) { b.disabled = true; });
    return;
  }
  autoReveal();
})();

// loraloop maintenance page: the owner's actions on an adapter's maintenance loop, sent to the
// REST API (window.loraloop.api, with the session's CSRF token). The page itself is rendered on
// the server; after a change this script reloads it, or removes the one item it settled.
// No rule lives here: the server decides, and its error message is shown as it is.
"use strict";

(function () {
  var L = window.loraloop;
  var t = L.t;
  var root = document.getElementById("maintenance");
  if (!root) return;
  var adapter = root.getAttribute("data-adapter");
  var globalError = document.getElementById("mnt-error");
  var status = document.getElementById("mnt-status");

  function $(selector, scope) { return (scope || document).querySelector(selector); }
  function $all(selector, scope) { return Array.prototype.slice.call((scope || document).querySelectorAll(selector)); }

  // messages ----------------------------------------------------------------------------

  function messageOf(error) {
    if (error instanceof L.ApiError) return error.message;
    return t("maintenance.js.offline");
  }

  // The error line of the area the control sits in (a section or a form), else the page's.
  function errorNodeFor(control) {
    var area = control && control.closest("[data-area], form");
    return (area && $("[data-error]", area)) || globalError;
  }

  function hideErrors() {
    $all("[data-error]").concat([globalError]).forEach(function (node) { node.hidden = true; });
  }

  function showError(node, error) {
    node.textContent = typeof error === "string" ? error : messageOf(error);
    node.hidden = false;
    node.scrollIntoView({ block: "nearest" });
  }

  function say(text, href, linkText) {
    status.textContent = text;
    if (href) {
      var link = document.createElement("a");
      link.href = href;
      link.textContent = linkText;
      status.appendChild(document.createTextNode(" "));
      status.appendChild(link);
    }
  }

  function reload() {
    window.location.reload();
  }

  // the dialog: confirm an action, optionally with a reason -------------------------------

  var dialog = $("#mnt-dialog");
  var reasonField = $("#mnt-dialog-reason-field");
  var reasonInput = $("#mnt-dialog-reason");
  var reasonError = $("#mnt-dialog-reason-error");
  var needsReason = false;

  $("#mnt-dialog-form").addEventListener("submit", function (event) {
    var ok = event.submitter && event.submitter.value === "ok";
    if (ok && needsReason && !reasonInput.value.trim()) {
      event.preventDefault();
      reasonError.hidden = false;
      reasonInput.setAttribute("aria-invalid", "true");
      reasonInput.focus();
    }
  });

  // Resolves to null (cancelled) or {reason}.
  function ask(options) {
    $("#mnt-dialog-title").textContent = options.title;
    $("#mnt-dialog-body").textContent = options.body;
    $("#mnt-dialog-ok").textContent = options.ok;
    needsReason = Boolean(options.reason);
    reasonField.hidden = !needsReason;
    reasonError.hidden = true;
    reasonInput.removeAttribute("aria-invalid");
    reasonInput.value = "";
    dialog.returnValue = "";
    dialog.showModal();
    if (needsReason) reasonInput.focus();
    return new Promise(function (resolve) {
      dialog.addEventListener("close", function () {
        resolve(dialog.returnValue === "ok" ? { reason: reasonInput.value.trim() } : null);
      }, { once: true });
    });
  }

  // Runs `work` with `control` disabled; errors go to the control's area.
  async function act(control, work) {
    hideErrors();
    control.disabled = true;
    say(t("maintenance.js.working"));
    try {
      await work();
    } catch (error) {
      say("");
      showError(errorNodeFor(control), error);
    } finally {
      control.disabled = false;
    }
  }

  // buttons -------------------------------------------------------------------------------

  function removeCandidate(id) {
    var item = $('li[data-candidate="' + id + '"]');
    if (item) item.remove();
    var left = $all("li[data-candidate]").length;
    $("#candidates-count").textContent = String(left);
    if (!left) $("#candidates-empty").hidden = false;
  }

  var actions = {
    retrain: async function () {
      await L.api("POST", "/api/adapters/" + adapter + "/retrain");
      say(t("maintenance.js.retrain_started"));
      reload();
    },
    approve: async function (button) {
      await L.api("POST", "/api/retrain-runs/" + button.getAttribute("data-run") + "/approve");
      reload();
    },
    dismiss: async function (button) {
      await L.api("POST", "/api/retrain-runs/" + button.getAttribute("data-run") + "/dismiss");
      reload();
    },
    accept: async function (button) {
      var id = button.getAttribute("data-candidate");
      await L.api("POST", "/api/candidates/" + id + "/accept", {});
      removeCandidate(id);
      say(t("maintenance.js.accepted"));
    },
    reject: async function (button) {
      var answer = await ask({ title: t("maintenance.js.reject_title"), body: t("maintenance.js.reject_body"), ok: t("maintenance.js.reject_ok"), reason: true });
      if (!answer) { say(""); return; }
      var id = button.getAttribute("data-candidate");
      await L.api("POST", "/api/candidates/" + id + "/reject", { reason: answer.reason });
      removeCandidate(id);
      say(t("maintenance.js.rejected"));
    },
    override: async function (button) {
      var promote = button.getAttribute("data-promote") === "true";
      var version = button.getAttribute("data-version");
      var body = promote ? "maintenance.js.override_promote_body" : "maintenance.js.override_keep_body";
      var answer = await ask({ title: t("maintenance.js.override_title"), body: t(body, { version: version }), ok: t("maintenance.js.override_ok"), reason: true });
      if (!answer) { say(""); return; }
      var decision = button.getAttribute("data-decision");
      await L.api("POST", "/api/decisions/" + decision + "/override", { promote: promote, reason: answer.reason });
      reload();
    },
    evaluate: async function (button) {
      var version = Number(button.getAttribute("data-version"));
      var job = await L.api("POST", "/api/adapters/" + adapter + "/evaluations", { versions: [version] });
      say(t("maintenance.js.evaluate_started", { id: job.id }), "/jobs/" + job.id, t("maintenance.js.view_job"));
    },
  };

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-action]");
    if (!button || !actions[button.getAttribute("data-action")]) return;
    act(button, function () { return actions[button.getAttribute("data-action")](button); });
  });

  function submitter(form) { return $("button[type=submit]", form); }

  // rollback and challenge ---------------------------------------------------------------

  var rollback = $("#rollback-form");
  if (rollback) {
    rollback.addEventListener("submit", function (event) {
      event.preventDefault();
      var select = rollback.elements.version;
      var chosen = select.value;
      var target = chosen ? "v" + chosen : t("maintenance.js.rollback_previous");
      act(submitter(rollback), async function () {
        var answer = await ask({ title: t("maintenance.js.rollback_title"), body: t("maintenance.js.rollback_body", { target: target }), ok: t("maintenance.js.rollback_ok") });
        if (!answer) { say(""); return; }
        await L.api("POST", "/api/adapters/" + adapter + "/rollback", chosen ? { version: Number(chosen) } : {});
        reload();
      });
    });
  }

  var challenge = $("#challenge-form");
  if (challenge) {
    challenge.addEventListener("submit", function (event) {
      event.preventDefault();
      var version = challenge.elements.version.value;
      act(submitter(challenge), async function () {
        var answer = await ask({ title: t("maintenance.js.challenge_title"), body: t("maintenance.js.challenge_body", { version: version }), ok: t("maintenance.js.challenge_ok") });
        if (!answer) { say(""); return; }
        await L.api("POST", "/api/adapters/" + adapter + "/challenge", { version: Number(version) });
        reload();
      });
    });
  }

  // suites and cases -----------------------------------------------------------------------

  // JSON Lines -> cases; a line that is not JSON is reported with its line number.
  function parseCases(text) {
    var cases = [];
    var lines = text.split(/\r?\n/);
    for (var i = 0; i < lines.length; i++) {
      var line = lines[i].trim();
      if (!line) continue;
      try {
        cases.push(JSON.parse(line));
      } catch (_) {
        throw t("maintenance.js.cases_bad_json", { line: i + 1 });
      }
    }
    if (!cases.length) throw t("maintenance.js.cases_empty");
    return cases;
  }

  var suiteForm = $("#suite-form");
  if (suiteForm) {
    var target = suiteForm.elements.suite;
    var toggle = function () {
      $all("[data-new-suite]", suiteForm).forEach(function (node) { node.hidden = target.value !== ""; });
    };
    target.addEventListener("change", toggle);
    toggle();
    suiteForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var error = $("[data-error]", suiteForm);
      var progress = $("[data-progress]", suiteForm);
      var cases;
      hideErrors();
      try {
        cases = parseCases(suiteForm.elements.cases.value);
      } catch (problem) {
        showError(error, problem);
        return;
      }
      var name = suiteForm.elements.name.value.trim();
      if (!target.value && !name) {
        showError(error, t("maintenance.js.suite_name_required"));
        suiteForm.elements.name.focus();
        return;
      }
      var created = false;
      act(submitter(suiteForm), async function () {
        progress.textContent = t("maintenance.js.saving");
        try {
          if (!target.value) {
            var suite = await L.api("POST", "/api/adapters/" + adapter + "/suites", { name: name, metric: suiteForm.elements.metric.value });
            // a retry after a bad case adds to this suite instead of making another
            target.add(new Option(suite.name, String(suite.id), true, true));
            toggle();
            created = true;
          }
          var added = await L.api("POST", "/api/suites/" + target.value + "/cases", { cases: cases });
          progress.textContent = t("maintenance.js.added", { count: added.added });
          reload();
        } catch (problem) {
          progress.textContent = "";
          if (created && problem instanceof L.ApiError) {
            throw new L.ApiError(problem.status, { message: problem.message + " — " + t("maintenance.js.suite_created") });
          }
          throw problem;
        }
      });
    });
  }

  // the policy ----------------------------------------------------------------------------

  var policyForm = $("#policy-form");
  if (policyForm) {
    policyForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var f = policyForm.elements;
      var body = {
        mode: $("input[name=mode]:checked", policyForm).value,
        on_drift: f.on_drift.checked,
        on_quality: f.on_quality.checked,
        trust_owner_corrections: f.trust_owner_corrections.checked,
        // an empty box turns that trigger off
        min_new_examples: f.min_new_examples.value.trim() ? Number(f.min_new_examples.value) : null,
        every_hours: f.every_hours.value.trim() ? Number(f.every_hours.value) : null,
      };
      ["margin", "tolerance", "canary_share", "canary_min_feedback"].forEach(function (name) {
        if (f[name].value.trim()) body[name] = Number(f[name].value);  // empty: keep the stored value
      });
      var progress = $("[data-progress]", policyForm);
      $all("[aria-invalid]", policyForm).forEach(function (node) { node.removeAttribute("aria-invalid"); });
      act(submitter(policyForm), async function () {
        progress.textContent = t("maintenance.js.saving");
        try {
          await L.api("PUT", "/api/adapters/" + adapter + "/policy", body);
          progress.textContent = t("maintenance.js.saved");
          say("");
        } catch (problem) {
          progress.textContent = "";
          var field = problem instanceof L.ApiError && problem.param && f[problem.param];
          if (field && field.setAttribute) field.setAttribute("aria-invalid", "true");
          throw problem;
        }
      });
    });
  }
})();

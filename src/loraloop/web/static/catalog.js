// loraloop catalog pages: base models, adapters, deployments, API keys, account.
// Changes go through the REST API (window.loraloop.api); a secret is shown once, then only
// its prefix. Copy buttons use the clipboard, or select the text where it is not available.
"use strict";

(function () {
  var L = window.loraloop;
  var t = L.t;

  function $(selector, root) { return (root || document).querySelector(selector); }
  function $all(selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); }

  // errors and progress -----------------------------------------------------------------

  function messageOf(error) {
    if (error instanceof L.ApiError) return error.message;
    return t("catalog.js.offline");
  }

  function showError(node, error) {
    if (!node) return;
    node.textContent = typeof error === "string" ? error : messageOf(error);
    node.hidden = false;
    node.scrollIntoView({ block: "nearest" });
  }

  // Disables the form's submit button and says what is happening until done() is called.
  function busy(form, text) {
    var button = $("button[type=submit]", form);
    var progress = $("[data-progress]", form);
    var error = $("[data-error]", form);
    if (error) error.hidden = true;
    if (button) button.disabled = true;
    form.setAttribute("aria-busy", "true");
    if (progress) progress.textContent = text;
    return function done(finalText) {
      if (button) button.disabled = false;
      form.removeAttribute("aria-busy");
      if (progress) progress.textContent = finalText || "";
    };
  }

  function numberOrNull(input) {
    var value = input && input.value.trim();
    return value ? Number(value) : null;
  }

  function reloadClean() {
    window.location.assign(window.location.pathname);
  }

  // copy --------------------------------------------------------------------------------

  function selectContents(node) {
    if (node.tagName === "INPUT" || node.tagName === "TEXTAREA") {
      node.focus();
      node.select();
      return;
    }
    var range = document.createRange();
    range.selectNodeContents(node);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  async function copy(node) {
    var text = node.tagName === "INPUT" || node.tagName === "TEXTAREA" ? node.value : node.textContent;
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        return true;
      } catch (_) { /* fall back to selecting the text */ }
    }
    selectContents(node);
    try {
      return document.execCommand("copy");
    } catch (_) {
      return false;
    }
  }

  document.addEventListener("click", async function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var node = document.getElementById(button.getAttribute("data-copy"));
    if (!node) return;
    var label = button.getAttribute("data-label") || button.textContent;
    button.setAttribute("data-label", label);
    var copied = await copy(node);
    button.textContent = copied ? t("catalog.js.copied") : t("catalog.js.copy_manually");
    window.setTimeout(function () { button.textContent = label; }, 2500);
  });

  document.addEventListener("click", function (event) {
    if (event.target.closest("[data-reload]")) reloadClean();
  });

  // confirmation ------------------------------------------------------------------------

  function confirmAction(title, body, okLabel) {
    var dialog = $("#confirm-dialog");
    if (!dialog || typeof dialog.showModal !== "function") return Promise.resolve(window.confirm(body));
    $("#confirm-dialog-title").textContent = title;
    $("#confirm-dialog-body").textContent = body;
    $("#confirm-dialog-ok").textContent = okLabel;
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise(function (resolve) {
      dialog.addEventListener("close", function () { resolve(dialog.returnValue === "ok"); }, { once: true });
    });
  }

  // the once-only secret ----------------------------------------------------------------

  // Shows `secret` in the panel `panelId`; for a deployment also the code to call it.
  function showSecret(panelId, secret, lead, model) {
    var panel = document.getElementById(panelId);
    $("[data-secret-value]", panel).value = secret;
    $("[data-result-lead]", panel).textContent = lead;
    var holder = $("[data-result-snippets]", panel);
    var template = $("#snippet-template");
    if (holder && template) {
      holder.textContent = "";
      var blocks = template.content.cloneNode(true);
      $all("[data-snippet]", blocks).forEach(function (code) {
        code.textContent = code.textContent.split("__MODEL__").join(model).split("__KEY__").join(secret);
      });
      holder.appendChild(blocks);
    }
    // Until the person says the key is stored, the page shows nothing else to click away to.
    $all("[data-hide-on-result]").forEach(function (node) { node.hidden = true; });
    panel.hidden = false;
    panel.scrollIntoView({ block: "start" });
    panel.focus();
  }

  // base models -------------------------------------------------------------------------

  function initModels() {
    var form = $("#register-form");
    if (!form) return;
    function source() { return $("input[name=source]:checked", form).value; }
    function toggle() {
      $all("[data-source]", form).forEach(function (node) { node.hidden = node.getAttribute("data-source") !== source(); });
    }
    $all("input[name=source]", form).forEach(function (radio) { radio.addEventListener("change", toggle); });
    toggle();
    $all("[data-fill-hub]").forEach(function (button) {
      button.addEventListener("click", function () {
        $("input[name=source][value=hub]", form).checked = true;
        toggle();
        form.elements.hub_id.value = button.getAttribute("data-fill-hub");
        form.scrollIntoView({ block: "start" });
        form.elements.revision.focus();
      });
    });
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      var body = source() === "hub"
        ? { hub_id: form.elements.hub_id.value.trim(), revision: form.elements.revision.value.trim() }
        : { local_path: form.elements.local_path.value.trim() };
      var done = busy(form, t("catalog.js.registering"));
      try {
        await L.api("POST", "/api/base-models", body);
        done(t("catalog.js.registered"));
        reloadClean();
      } catch (error) {
        done();
        showError($("[data-error]", form), error);
      }
    });
  }

  // one adapter -------------------------------------------------------------------------

  function initAdapter() {
    $all("[data-set-champion]").forEach(function (button) {
      button.addEventListener("click", async function () {
        var version = Number(button.getAttribute("data-set-champion"));
        var status = $("[data-status]");
        button.disabled = true;
        if (status) status.textContent = t("catalog.js.saving");
        try {
          await L.api("PUT", "/api/adapters/" + button.getAttribute("data-adapter") + "/aliases/champion", { version: version });
          window.location.reload();
        } catch (error) {
          button.disabled = false;
          if (status) status.textContent = "";
          showError($("[data-error]"), error);
        }
      });
    });
    var form = $("#adapter-form");
    if (!form) return;
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      var done = busy(form, t("catalog.js.saving"));
      try {
        await L.api("PATCH", "/api/adapters/" + form.getAttribute("data-adapter"), {
          visibility: form.elements.visibility.value,
          licence: form.elements.licence.value,
          description: form.elements.description.value,
          language: form.elements.language.value,
          task: form.elements.task.value,
        });
        done(t("catalog.js.saved"));
        window.location.reload();
      } catch (error) {
        done();
        showError($("[data-error]", form), error);
      }
    });
  }

  // deployments -------------------------------------------------------------------------

  async function issueKey(model) {
    var key = await L.api("POST", "/api/keys", {
      name: t("catalog.js.key_name", { name: model }),
      scopes: ["inference:" + model],
    });
    showSecret("deploy-result", key.secret, t("catalog.js.deploy_ready", { name: model }), model);
  }

  function initDeployForm(form) {
    var nameInput = form.elements.name;
    var adapter = form.elements.adapter_id;
    var versionSelect = form.elements.version;
    var base = form.elements.base_model_id;
    var typed = false; // a name the server suggested may still follow the chosen target
    nameInput.addEventListener("input", function () { typed = nameInput.value !== ""; });

    function target() { return $("input[name=target]:checked", form).value; }
    function suggestName() {
      if (typed) return;
      var select = target() === "base" ? base : target() === "external" ? null : adapter;
      var option = select && select.selectedOptions[0];
      nameInput.value = option ? option.getAttribute("data-name") : "";
    }
    function toggle() {
      $all("[data-targets]", form).forEach(function (node) {
        node.hidden = node.getAttribute("data-targets").split(" ").indexOf(target()) < 0;
      });
      suggestName();
    }
    function fillVersions() {
      if (!adapter || !versionSelect) return;
      var option = adapter.selectedOptions[0];
      var champion = option.getAttribute("data-champion");
      versionSelect.textContent = "";
      option.getAttribute("data-versions").split(",").reverse().forEach(function (v) {
        var item = document.createElement("option");
        item.value = v;
        item.textContent = "v" + v + (v === champion ? " (" + t("catalog.js.champion") + ")" : "");
        versionSelect.appendChild(item);
      });
      suggestName();
    }
    $all("input[name=target]", form).forEach(function (radio) { radio.addEventListener("change", toggle); });
    if (adapter) adapter.addEventListener("change", fillVersions);
    if (base) base.addEventListener("change", suggestName);
    toggle();
    if (form.hasAttribute("data-preselected")) nameInput.focus();

    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      var kind = target();
      var body = { name: nameInput.value.trim() };
      if (kind === "champion") { body.adapter_id = Number(adapter.value); body.alias = "champion"; }
      if (kind === "version") { body.adapter_id = Number(adapter.value); body.version = Number(versionSelect.value); }
      if (kind === "base") body.base_model_id = Number(base.value);
      if (kind === "external") {
        body.upstream_url = form.elements.upstream_url.value.trim();
        body.upstream_model = form.elements.upstream_model.value.trim();
        if (form.elements.upstream_key.value) body.upstream_key = form.elements.upstream_key.value;
      }
      var prompt = form.elements.system_prompt.value.trim();
      if (prompt) body.system_prompt = prompt;
      var done = busy(form, t("catalog.js.creating"));
      try {
        await L.api("POST", "/api/deployments", body);
      } catch (error) {
        done();
        showError($("[data-error]", form), error);
        return;
      }
      done(t("catalog.js.issuing"));
      try {
        await issueKey(body.name);
        done();
      } catch (error) {
        done();
        showError($("[data-error]", form), t("catalog.js.deploy_key_failed", { message: messageOf(error) }));
      }
    });
  }

  function initDeployments() {
    var form = $("#deploy-form");
    if (!form) return;
    initDeployForm(form);
    var listError = $("[data-list-error]");
    $all("[data-issue-key]").forEach(function (button) {
      button.addEventListener("click", async function () {
        button.disabled = true;
        try {
          await issueKey(button.getAttribute("data-issue-key"));
        } catch (error) {
          showError(listError, error);
        }
        button.disabled = false;
      });
    });
    $all("[data-deployment-action]").forEach(function (button) {
      button.addEventListener("click", async function () {
        var row = button.closest("[data-deployment]");
        var action = button.getAttribute("data-deployment-action");
        var path = "/api/deployments/" + row.getAttribute("data-deployment");
        var name = row.getAttribute("data-name");
        if (action === "delete") {
          var sure = await confirmAction(
            t("catalog.js.delete_title", { name: name }), t("catalog.js.delete_body"), t("catalog.js.delete")
          );
          if (!sure) return;
        }
        button.disabled = true;
        try {
          if (action === "delete") await L.api("DELETE", path);
          else await L.api("POST", path + "/" + action);
          window.location.reload();
        } catch (error) {
          button.disabled = false;
          showError(listError, error);
        }
      });
    });
  }

  // API keys ----------------------------------------------------------------------------

  function initKeys() {
    var form = $("#key-form");
    if (!form) return;
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      var name = form.elements.name.value.trim();
      var scopes = $all("input[name=scopes]:checked", form).map(function (box) { return box.value; });
      if (!name) { showError($("[data-error]", form), t("catalog.js.need_name")); form.elements.name.focus(); return; }
      if (!scopes.length) { showError($("[data-error]", form), t("catalog.js.need_scope")); return; }
      var body = { name: name, scopes: scopes, rate_limit_per_minute: numberOrNull(form.elements.rate_limit_per_minute) || 60 };
      ["tokens_per_minute", "token_budget", "expires_in_days"].forEach(function (field) {
        var value = numberOrNull(form.elements[field]);
        if (value !== null) body[field] = value;
      });
      var done = busy(form, t("catalog.js.creating_key"));
      try {
        var key = await L.api("POST", "/api/keys", body);
        done();
        form.reset();
        showSecret("key-result", key.secret, t("catalog.js.key_ready", { name: key.name }), "");
      } catch (error) {
        done();
        showError($("[data-error]", form), error);
      }
    });
    $all("[data-revoke]").forEach(function (button) {
      button.addEventListener("click", async function () {
        var row = button.closest("[data-key]");
        var sure = await confirmAction(
          t("catalog.js.revoke_title", { name: row.getAttribute("data-key-name") }),
          t("catalog.js.revoke_body"),
          t("catalog.js.revoke")
        );
        if (!sure) return;
        button.disabled = true;
        try {
          await L.api("DELETE", "/api/keys/" + button.getAttribute("data-revoke"));
          window.location.reload();
        } catch (error) {
          button.disabled = false;
          showError($("[data-list-error]"), error);
        }
      });
    });
  }

  // account -----------------------------------------------------------------------------

  function initAccount() {
    var form = $("#profile-form");
    if (!form) return;
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      var done = busy(form, t("catalog.js.saving"));
      try {
        var me = await L.api("PATCH", "/api/me", { display_name: form.elements.display_name.value.trim() });
        form.elements.display_name.value = me.display_name;
        done(t("catalog.js.saved"));
      } catch (error) {
        done();
        showError($("[data-error]", form), error);
      }
    });
  }

  function init() {
    initModels();
    initAdapter();
    initDeployments();
    initKeys();
    initAccount();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();

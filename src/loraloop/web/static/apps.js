// loraloop apps builder: rows of members and rules (add, move, remove, renumber), the parts
// shown for each type, and saving. The form becomes the spec of gateway/apps.py as written:
// the service checks it and every problem it finds is listed beside the form. The only check
// here is of this page's own notation (metadata as key=value).
"use strict";

(function () {
  var L = window.loraloop;
  var t = L.t;

  function $(selector, root) { return (root || document).querySelector(selector); }
  function $all(selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); }

  // the app's actions: pause, resume, delete ------------------------------------------------

  function confirmDelete(name) {
    var dialog = $("#confirm-dialog");
    var body = t("apps.js.delete_body");
    if (!dialog || typeof dialog.showModal !== "function") return Promise.resolve(window.confirm(body));
    $("#confirm-dialog-title").textContent = t("apps.js.delete_title", { name: name });
    $("#confirm-dialog-body").textContent = body;
    $("#confirm-dialog-ok").textContent = t("apps.js.delete");
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise(function (resolve) {
      dialog.addEventListener("close", function () { resolve(dialog.returnValue === "ok"); }, { once: true });
    });
  }

  function initActions() {
    $all("[data-app-action]").forEach(function (button) {
      button.addEventListener("click", async function () {
        var holder = button.closest("[data-app]");
        var path = "/api/deployments/" + holder.getAttribute("data-app");
        var action = button.getAttribute("data-app-action");
        if (action === "delete" && !(await confirmDelete(holder.getAttribute("data-name")))) return;
        button.disabled = true;
        try {
          if (action === "delete") await L.api("DELETE", path);
          else await L.api("POST", path + "/" + action);
          if (action === "delete") window.location.assign("/apps");
          else window.location.assign(window.location.pathname);
        } catch (error) {
          button.disabled = false;
          var box = $("[data-action-error]");
          box.textContent = error instanceof L.ApiError ? error.message : t("apps.js.offline");
          box.hidden = false;
        }
      });
    });
  }

  // the builder -------------------------------------------------------------------------------

  function initBuilder(form) {
    var membersList = $("[data-members]", form);
    var rulesList = $("[data-rules]", form);
    var errorBox = $("[data-error]");
    var progress = $("[data-progress]");
    var submit = $('button[type="submit"][form="app-form"]');

    function type() { return $('input[name="type"]:checked', form).value; }
    function field(row, name) { return $('[data-field="' + name + '"]', row); }
    function memberName(row) { return field(row, "name").value.trim() || field(row, "deployment").value; }

    function showType() {
      $all("[data-types]", form).forEach(function (node) {
        node.hidden = node.getAttribute("data-types").split(" ").indexOf(type()) < 0;
      });
    }

    // Legends and button names say the row's number; the first can't go up, the last down.
    function renumber(list, kind) {
      var rows = $all(":scope > li", list);
      rows.forEach(function (row, index) {
        var number = index + 1;
        $("[data-legend]", row).textContent = t("apps.js." + kind + "_legend", { number: number });
        var up = $('[data-move="up"]', row), down = $('[data-move="down"]', row);
        up.setAttribute("aria-label", t("apps.js." + kind + "_up", { number: number }));
        down.setAttribute("aria-label", t("apps.js." + kind + "_down", { number: number }));
        $("[data-remove]", row).setAttribute("aria-label", t("apps.js." + kind + "_remove", { number: number }));
        up.disabled = index === 0;
        down.disabled = index === rows.length - 1;
      });
      var none = $("[data-no-rules]", form);
      if (kind === "rule" && none) none.hidden = rows.length > 0;
    }

    // The selects that name a member (a rule's, the default) follow the members: a renamed
    // member stays chosen under its new name; a removed one stays visible, marked, so the
    // service can say what is wrong instead of the page choosing something else.
    function refreshNames() {
      var renamed = {};
      var names = [];
      $all("[data-member]", membersList).forEach(function (row) {
        var name = memberName(row);
        var before = row.getAttribute("data-name");
        if (before && before !== name) renamed[before] = name;
        row.setAttribute("data-name", name);
        field(row, "name").placeholder = field(row, "deployment").value || t("apps.js.same_as_deployment");
        if (name && names.indexOf(name) < 0) names.push(name);
      });
      $all("[data-member-select]", form).forEach(function (select) {
        var chosen = select.value;
        if (Object.prototype.hasOwnProperty.call(renamed, chosen)) chosen = renamed[chosen];
        var placeholder = select.options[0];
        select.textContent = "";
        select.appendChild(placeholder);
        names.forEach(function (name) { select.appendChild(new Option(name, name)); });
        if (chosen && names.indexOf(chosen) < 0) {
          select.appendChild(new Option(t("apps.js.not_member", { name: chosen }), chosen));
        }
        select.value = chosen;
      });
    }

    function addRow(kind) {
      var list = kind === "member" ? membersList : rulesList;
      var row = $("#" + kind + "-template").content.firstElementChild.cloneNode(true);
      list.appendChild(row);
      renumber(list, kind);
      refreshNames();
      showType();
      $("select", row).focus();
    }

    function onRowButton(event) {
      var button = event.target.closest("[data-move], [data-remove]");
      if (!button) return;
      var row = button.closest("li");
      var list = row.parentElement;
      var kind = row.hasAttribute("data-member") ? "member" : "rule";
      if (button.hasAttribute("data-remove")) {
        var next = row.nextElementSibling || row.previousElementSibling;
        row.remove();
        renumber(list, kind);
        refreshNames();
        if (next) $("select", next).focus();
        else $('[data-add="' + kind + '"]', form).focus();
        return;
      }
      var up = button.getAttribute("data-move") === "up";
      var other = up ? row.previousElementSibling : row.nextElementSibling;
      if (!other) return;
      list.insertBefore(up ? row : other, up ? other : row);
      renumber(list, kind);
      // keep the focus on the row's button; at an end, on its other one
      (button.disabled ? $('[data-move="' + (up ? "down" : "up") + '"]', row) : button).focus();
    }

    // the spec --------------------------------------------------------------------------------

    function text(input) { return input.value.trim(); }
    function list(value) { return value.split(/[,、，]/).map(function (s) { return s.trim(); }).filter(Boolean); }
    // A number when the text is one; otherwise the text itself, so the service names it.
    function number(input) {
      var value = text(input);
      if (!value) return undefined;
      var parsed = Number(value);
      return isFinite(parsed) ? parsed : value;
    }

    function member(row) {
      var out = {};  // nothing chosen is sent as nothing, so the service says what is missing
      if (field(row, "deployment").value) out.deployment = field(row, "deployment").value;
      if (text(field(row, "name"))) out.name = text(field(row, "name"));
      if (type() === "router" && text(field(row, "description"))) out.description = text(field(row, "description"));
      var timeout = number(field(row, "timeout"));
      if (type() === "fallback" && timeout !== undefined) out.timeout_seconds = timeout;
      return out;
    }

    function rule(row, index, problems) {
      var out = {};
      if (field(row, "member").value) out.member = field(row, "member").value;
      var keywords = list(field(row, "keywords").value);
      if (keywords.length) out.keywords = keywords;
      if (text(field(row, "regex"))) out.regex = text(field(row, "regex"));
      var pairs = list(field(row, "metadata").value);
      if (pairs.length) {
        out.metadata = {};
        pairs.forEach(function (pair) {
          var at = pair.indexOf("=");
          if (at <= 0) problems.push(t("apps.js.metadata_format", { number: index + 1, entry: pair }));
          else out.metadata[pair.slice(0, at).trim()] = pair.slice(at + 1).trim();
        });
      }
      return out;
    }

    function spec(problems) {
      var out = { type: type(), members: $all("[data-member]", membersList).map(member) };
      if (out.type === "router") {
        out.rules = $all("[data-rule]", rulesList).map(function (row, index) { return rule(row, index, problems); });
        if (form.elements.semantic.checked) {
          var threshold = number(form.elements.threshold);
          out.semantic = threshold === undefined ? {} : { threshold: threshold };
        }
        out["default"] = form.elements["default"].value || null;
      }
      if (text(form.elements.system_prompt)) out.system_prompt = form.elements.system_prompt.value;
      out.defaults = {};
      ["temperature", "top_p", "max_tokens"].forEach(function (key) {
        var value = number(form.elements[key]);
        if (value !== undefined) out.defaults[key] = value;
      });
      return out;
    }

    // saving ----------------------------------------------------------------------------------

    function showProblems(lead, problems) {
      $("[data-error-lead]", errorBox).textContent = lead;
      var items = $("[data-error-list]", errorBox);
      items.textContent = "";
      problems.forEach(function (problem) {
        var item = document.createElement("li");
        item.textContent = problem;
        items.appendChild(item);
      });
      errorBox.hidden = false;
      errorBox.scrollIntoView({ block: "nearest" });
    }

    async function save(event) {
      event.preventDefault();
      var problems = [];
      var body = spec(problems);
      if (problems.length) { showProblems(t("apps.js.not_sent"), problems); return; }
      var id = form.getAttribute("data-app");
      errorBox.hidden = true;
      submit.disabled = true;
      form.setAttribute("aria-busy", "true");
      progress.textContent = t(id ? "apps.js.saving" : "apps.js.creating");
      try {
        var row = id
          ? await L.api("PUT", "/api/deployments/" + id + "/app", body)
          : await L.api("POST", "/api/deployments", { name: text(form.elements.name), app: body });
        window.location.assign("/apps/" + row.id + "?saved=1");
      } catch (error) {
        submit.disabled = false;
        form.removeAttribute("aria-busy");
        progress.textContent = "";
        if (error instanceof L.ApiError) showProblems(t("apps.js.not_saved"), error.message.split("; "));
        else showProblems(t("apps.js.offline"), []);
      }
    }

    $all('input[name="type"]', form).forEach(function (radio) { radio.addEventListener("change", showType); });
    $all("[data-add]", form).forEach(function (button) {
      button.addEventListener("click", function () { addRow(button.getAttribute("data-add")); });
    });
    form.addEventListener("click", onRowButton);
    membersList.addEventListener("input", refreshNames);
    membersList.addEventListener("change", refreshNames);
    form.addEventListener("submit", save);
    renumber(membersList, "member");
    renumber(rulesList, "rule");
    refreshNames();
    showType();
  }

  function init() {
    initActions();
    var form = $("#app-form");
    if (form) initBuilder(form);
    // "saved" is said once; a reload should not say it again
    if ($("[data-saved]") && window.history.replaceState) window.history.replaceState(null, "", window.location.pathname);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();

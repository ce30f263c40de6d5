// loraloop rewards page: link a payout wallet through the browser's EIP-1193 wallet
// (eth_requestAccounts, then personal_sign of the server's Sign-In with Ethereum message),
// relay a claim, or show the calldata for a claim from any wallet. The server checks all.
"use strict";

(function () {
  var L = window.loraloop;
  var t = L.t;

  function hexOf(text) {
    return "0x" + Array.prototype.map.call(new TextEncoder().encode(text), function (b) {
      return b.toString(16).padStart(2, "0");
    }).join("");
  }

  function say(node, text) {
    if (node) node.textContent = text || "";
  }

  function fail(node, err) {
    if (!node) return;
    node.hidden = false;
    node.textContent = err && err.code === 4001 ? t("rewards.js.rejected") : (err && err.message) || String(err);
  }

  async function linkWallet(card) {
    var progress = card.querySelector("[data-wallet-progress]");
    var error = card.querySelector("[data-wallet-error]");
    error.hidden = true;
    if (!window.ethereum || typeof window.ethereum.request !== "function") {
      fail(error, { message: t("rewards.js.no_wallet") });
      return;
    }
    try {
      say(progress, t("rewards.js.connecting"));
      var accounts = await window.ethereum.request({ method: "eth_requestAccounts" });
      if (!accounts || !accounts.length) throw { message: t("rewards.js.no_account") };
      var address = accounts[0];
      var issued = await L.api("POST", "/api/wallet/nonce", { address: address });
      say(progress, t("rewards.js.signing"));
      var signature = await window.ethereum.request({
        method: "personal_sign",
        params: [hexOf(issued.message), address],
      });
      await L.api("POST", "/api/wallet/link", { message: issued.message, signature: signature });
      say(progress, t("rewards.js.linked"));
      window.location.reload();
    } catch (err) {
      say(progress, "");
      fail(error, err);
    }
  }

  async function claim(button) {
    var line = button.closest("[data-epoch]");
    var progress = line.querySelector("[data-claim-progress]");
    var error = line.querySelector("[data-claim-error]");
    error.hidden = true;
    button.disabled = true;
    say(progress, t("rewards.js.claiming"));
    try {
      var done = await L.api("POST", "/api/rewards/epochs/" + button.dataset.claim + "/claim");
      markClaimed(line, done.tx_hash);
      say(progress, t("rewards.js.claimed"));
    } catch (err) {
      say(progress, "");
      if (err.code === "already_claimed") {
        markClaimed(line, null);
        fail(error, { message: t("rewards.js.already_claimed") });
      } else {
        button.disabled = false;
        fail(error, err);
      }
    }
  }

  function markClaimed(line, tx) {
    line.dataset.status = "claimed";
    say(line.querySelector("[data-status-label]"), t("rewards.js.status_claimed"));
    line.querySelectorAll("[data-claim], [data-calldata]").forEach(function (b) { b.hidden = true; });
    if (tx) {
      var shown = line.querySelector("[data-claim-tx]");
      shown.hidden = false;
      say(shown.querySelector("code"), tx);
    }
  }

  async function calldata(button) {
    var line = button.closest("[data-epoch]");
    var out = line.querySelector("[data-calldata-out]");
    var error = line.querySelector("[data-claim-error]");
    try {
      var call = await L.api("GET", "/api/rewards/epochs/" + button.dataset.calldata + "/calldata");
      out.textContent = t("rewards.js.calldata", { chain: call.chain_id, to: call.to }) + "\n" + call.data;
      out.hidden = false;
    } catch (err) {
      fail(error, err);
    }
  }

  document.addEventListener("click", function (event) {
    var target = event.target.closest("[data-link-wallet], [data-claim], [data-calldata]");
    if (!target) return;
    if (target.hasAttribute("data-link-wallet")) linkWallet(target.closest("[data-wallet]"));
    else if (target.hasAttribute("data-claim")) claim(target);
    else calldata(target);
  });
})();

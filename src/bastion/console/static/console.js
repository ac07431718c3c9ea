// Bastion console: progressive enhancement only. Every page works without this file
// except the WebAuthn ceremonies, which need the browser's API.
"use strict";
(function () {
  function b64uDecode(text) {
    const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const padded = b64 + "===".slice((b64.length + 3) % 4);
    const bin = atob(padded);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }
  function b64uEncode(buffer) {
    const bytes = new Uint8Array(buffer);
    let bin = "";
    for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function withIds(list) {
    return (list || []).map(function (c) { return Object.assign({}, c, { id: b64uDecode(c.id) }); });
  }
  function requestOptions(json) {
    const o = Object.assign({}, json, { challenge: b64uDecode(json.challenge) });
    if (json.allowCredentials) o.allowCredentials = withIds(json.allowCredentials);
    return o;
  }
  function creationOptions(json) {
    const o = Object.assign({}, json, { challenge: b64uDecode(json.challenge) });
    o.user = Object.assign({}, json.user, { id: b64uDecode(json.user.id) });
    if (json.excludeCredentials) o.excludeCredentials = withIds(json.excludeCredentials);
    return o;
  }
  function credentialJSON(cred) {
    const r = cred.response;
    const out = {
      id: cred.id, rawId: b64uEncode(cred.rawId), type: cred.type,
      authenticatorAttachment: cred.authenticatorAttachment || undefined,
      clientExtensionResults: cred.getClientExtensionResults(),
      response: { clientDataJSON: b64uEncode(r.clientDataJSON) },
    };
    if (r.attestationObject) {
      out.response.attestationObject = b64uEncode(r.attestationObject);
      if (r.getTransports) out.response.transports = r.getTransports();
    } else {
      out.response.authenticatorData = b64uEncode(r.authenticatorData);
      out.response.signature = b64uEncode(r.signature);
      if (r.userHandle && r.userHandle.byteLength) out.response.userHandle = b64uEncode(r.userHandle);
    }
    return out;
  }
  function say(form, text) {
    const box = form.querySelector(".webauthn-error");
    if (box) { box.textContent = text; box.hidden = false; }
  }

  // Forms marked data-webauthn="get" (sign-in, second factor, step-up) or "create"
  // (register a passkey): fetch the options (same origin, with the form's CSRF token),
  // run the ceremony, put the credential in the form and submit it.
  function enhanceWebAuthn(form) {
    if (!window.PublicKeyCredential || !navigator.credentials) return;
    form.hidden = false;
    form.addEventListener("submit", async function (event) {
      if (form.dataset.ready === "yes") return;
      event.preventDefault();
      const box = form.querySelector(".webauthn-error");
      if (box) box.hidden = true;
      const csrf = form.querySelector('input[name="csrf"]').value;
      let options;
      try {
        const answer = await fetch(form.dataset.options, {
          method: "POST",
          headers: { "Content-Type": "application/x-www-form-urlencoded" },
          body: new URLSearchParams({ csrf: csrf }),
          credentials: "same-origin",
        });
        if (!answer.ok) { say(form, "No passkey can be used here right now."); return; }
        options = await answer.json();
      } catch (e) { say(form, "The console could not be reached."); return; }
      let cred;
      try {
        cred = form.dataset.webauthn === "create"
          ? await navigator.credentials.create({ publicKey: creationOptions(options) })
          : await navigator.credentials.get({ publicKey: requestOptions(options) });
      } catch (e) { say(form, "The passkey was not used (cancelled or not available)."); return; }
      if (!cred) { say(form, "No passkey was chosen."); return; }
      form.querySelector('input[name="credential"]').value = JSON.stringify(credentialJSON(cred));
      form.dataset.ready = "yes";
      form.submit();
    });
  }

  // "Sign in with SSO": straight to the SSO start with the email typed on the sign-in
  // form (a navigation, since forms may not lead to another origin).
  function enhanceSso(form) {
    form.addEventListener("submit", function (event) {
      const email = document.getElementById("email");
      const value = email ? email.value.trim() : "";
      if (!value) return; // the SSO page asks for it
      event.preventDefault();
      const params = new URLSearchParams({ email: value, return_to: "/console/sso/done" });
      window.location.assign("/v1/auth/sso/start?" + params.toString());
    });
  }

  function enhanceConfirm(form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-webauthn]").forEach(enhanceWebAuthn);
    document.querySelectorAll("form[data-sso]").forEach(enhanceSso);
    document.querySelectorAll("form[data-confirm]").forEach(enhanceConfirm);
    document.querySelectorAll("form[data-autosubmit]").forEach(function (f) { f.submit(); });
  });
})();

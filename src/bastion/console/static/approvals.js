// Approvals: expiry countdowns, and the inbox kept current from the server-sent events
// of /console/approvals/stream (a changed request's card is fetched again, or dropped).
"use strict";
(function () {
  function left(seconds) {
    if (seconds <= 0) return "expired";
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    return "in " + (h ? h + "h " : "") + (h || m ? m + "m " : "") + s + "s";
  }
  function tick() {
    const now = Date.now();
    document.querySelectorAll("time.countdown").forEach(function (t) {
      const at = Date.parse(t.getAttribute("datetime"));
      if (!isNaN(at)) t.textContent = left(Math.max(0, Math.round((at - now) / 1000)));
    });
  }
  tick();
  setInterval(tick, 1000);

  const inbox = document.getElementById("inbox");
  if (!inbox || !window.EventSource) return;
  const live = document.getElementById("live");
  const empty = document.getElementById("inbox-empty");
  const count = document.getElementById("inbox-count");
  function recount() {
    const n = inbox.querySelectorAll("li.approval").length;
    count.textContent = String(n);
    empty.hidden = n > 0;
  }
  function say(text) { live.textContent = text; }
  function drop(id, status) {
    const card = document.getElementById("apr-" + id);
    if (card) {
      card.remove();
      say("A request was " + (status === "pending" ? "decided by you or is no longer yours" : status) + ".");
      recount();
    }
  }
  function refresh(id, status) {
    fetch("/console/approvals/" + encodeURIComponent(id) + "/card", {
      credentials: "same-origin", headers: { Accept: "text/html" }, cache: "no-store",
    }).then(function (r) {
      if (r.status !== 200) { drop(id, status); return null; }
      return r.text();
    }).then(function (html) {
      if (html === null || html === undefined) return;
      const box = document.createElement("template");
      box.innerHTML = html.trim();
      const fresh = box.content.firstElementChild;
      if (!fresh) return;
      const card = document.getElementById("apr-" + id);
      if (!card) {
        inbox.insertBefore(fresh, inbox.firstChild);
        say("A new request is waiting for you.");
      } else if (card.contains(document.activeElement)) {
        const p = card.querySelector(".progress"), q = fresh.querySelector(".progress");
        if (p && q) p.textContent = q.textContent;  // keep what is being typed
      } else {
        card.replaceWith(fresh);
      }
      recount();
      tick();
    }).catch(function () { /* the next event or reload brings it */ });
  }
  const source = new EventSource("/console/approvals/stream");
  source.addEventListener("open", function () { document.body.dataset.live = "on"; });
  source.addEventListener("approval", function (e) {
    let change;
    try { change = JSON.parse(e.data); } catch (err) { return; }
    if (!change || typeof change.id !== "string") return;
    if (change.status === "pending") refresh(change.id, change.status);
    else drop(change.id, change.status);
  });
})();

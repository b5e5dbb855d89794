// The chat page of `crs serve`. Every text from the server or the user is written with textContent,
// never as HTML, so markup in a message shows as text (the server's CSP also forbids inline script).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let sessionId = null;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function say(kind, text) {
    const log = $("log");
    log.appendChild(el("li", kind, text));
    log.scrollTop = log.scrollHeight; // the log scrolls, not the page
  }

  async function call(path, body) {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const detail = typeof data.detail === "string" ? data.detail : "the request was refused (" + response.status + ")";
      const error = new Error(detail);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  async function newSession() {
    const data = await call("/v1/sessions");
    sessionId = data.session_id;
    $("log").replaceChildren();
    $("cards").replaceChildren();
    $("why").replaceChildren(el("p", "muted", "The context entities and words behind the ranking appear here."));
  }

  function showCards(recommendations) {
    const cards = recommendations.map((rec, i) => {
      const card = el("li", "card");
      card.appendChild(el("div", "name", (i + 1) + ". " + rec.name));
      card.appendChild(el("div", "score", "score " + rec.score.toFixed(3) + " \u00b7 " + rec.item_id));
      return card;
    });
    $("cards").replaceChildren(...cards);
  }

  function showWhy(why) {
    const box = $("why");
    if (!why) {
      box.replaceChildren(el("p", "muted", "Nothing to explain."));
      return;
    }
    const parts = [el("p", null, "Top item: " + why.top_item)];
    const table = el("table");
    for (const row of why.evidence) {
      const tr = el("tr");
      tr.appendChild(el("td", null, row.kind));
      tr.appendChild(el("td", null, row.name));
      tr.appendChild(el("td", null, (row.contribution >= 0 ? "+" : "") + row.contribution.toFixed(4)));
      table.appendChild(tr);
    }
    parts.push(table);
    if (why.excluded.length) parts.push(el("p", "muted", "Excluded (already named): " + why.excluded.join(", ")));
    parts.push(el("p", "muted", why.note));
    box.replaceChildren(...parts);
  }

  async function send(event) {
    event.preventDefault();
    const text = $("input").value.trim();
    if (!text) return;
    $("input").value = "";
    $("send").disabled = true;
    say("user", text);
    try {
      if (!sessionId) await newSession();
      let data;
      try {
        data = await call("/v1/sessions/" + encodeURIComponent(sessionId) + "/turns", { text: text });
      } catch (error) {
        if (error.status !== 404) throw error;
        await newSession(); // the session expired: start again with this turn
        say("user", text);
        data = await call("/v1/sessions/" + encodeURIComponent(sessionId) + "/turns", { text: text });
      }
      let reply = data.reply;
      if (reply === null || reply === undefined) {
        reply = data.recommendations.length ? "How about " + data.recommendations[0].name + "?" : "(no recommendation)";
      }
      say("bot", reply || "(empty reply)");
      showCards(data.recommendations);
      showWhy(data.why);
    } catch (error) {
      say("error", "error: " + error.message);
    } finally {
      $("send").disabled = false;
      $("input").focus();
    }
  }

  async function start() {
    try {
      const health = await fetch("/v1/health").then((r) => r.json());
      $("status").textContent = health.pipeline + " on " + health.corpus + " \u00b7 " + health.items + " items";
      $("input").maxLength = health.max_chars;
      await newSession();
    } catch (error) {
      $("status").textContent = "server not reachable: " + error.message;
    }
  }

  $("form").addEventListener("submit", send);
  $("reset").addEventListener("click", () => newSession().catch((error) => say("error", "error: " + error.message)));
  start();
})();

/* cramp-cds sandbox: an EHR simulator for this service. Plain JS, no dependencies, no build step.
 *
 * Flow: pick a sample (or upload a Bundle) + hook (+ drug) → POST api/build-request (the request an EHR would
 * send, prefetch resolved from the service's discovery templates) → POST it to /cds-services/{id} → render the
 * cards as an EHR would → accept a suggestion / dismiss with a reason → POST /cds-services/{id}/feedback.
 *
 * Safety: service text is only ever put into the page with textContent / createTextNode; the Markdown
 * renderer below builds DOM nodes for a small subset and never uses innerHTML.
 */
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const state = { uploaded: null, uploadedName: "", samples: [], feedbackLog: [] };

  // --- tiny DOM helper ------------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return node;
  }

  // --- a SAFE Markdown renderer for the subset cards use ---------------------------------------------------
  // Paragraphs (blank-line separated), "- " lists, **bold**, *italic*, `code`, backslash escapes.
  // Everything else is literal text.
  const ESCAPABLE = "\\`*_{}[]()#+-.!|>~<\"'&";

  function findClose(s, delim, from) {
    for (let k = from; k < s.length; k++) {
      const c = s[k];
      if (c === "\\") { k++; continue; }
      if (c === "`") {
        const end = s.indexOf("`", k + 1);
        if (end > k) { k = end; continue; }
      }
      if (s.startsWith(delim, k)) {
        if (delim === "*" && s.startsWith("**", k)) {   // bold inside italic: skip over it
          const end = findClose(s, "**", k + 2);
          if (end > k) { k = end + 1; continue; }
        }
        return k;
      }
    }
    return -1;
  }

  function renderInline(s, parent) {
    let buf = "";
    const flush = () => { if (buf) { parent.appendChild(document.createTextNode(buf)); buf = ""; } };
    for (let i = 0; i < s.length;) {
      const c = s[i];
      if (c === "\\" && i + 1 < s.length && ESCAPABLE.includes(s[i + 1])) { buf += s[i + 1]; i += 2; continue; }
      if (c === "`") {
        const j = s.indexOf("`", i + 1);
        if (j > i) { flush(); parent.appendChild(el("code", { text: s.slice(i + 1, j) })); i = j + 1; continue; }
      }
      if (s.startsWith("**", i)) {
        const j = findClose(s, "**", i + 2);
        if (j > i + 2) { flush(); const b = el("strong"); renderInline(s.slice(i + 2, j), b); parent.appendChild(b); i = j + 2; continue; }
      } else if (c === "*" && i + 1 < s.length && s[i + 1] !== " ") {
        const j = findClose(s, "*", i + 1);
        if (j > i + 1) { flush(); const em = el("em"); renderInline(s.slice(i + 1, j), em); parent.appendChild(em); i = j + 1; continue; }
      }
      buf += c;
      i++;
    }
    flush();
  }

  function renderMarkdown(md, container) {
    const blocks = String(md || "").replace(/\r\n?/g, "\n").split(/\n\s*\n/);
    for (const block of blocks) {
      const lines = block.split("\n").filter((l) => l.trim() !== "");
      if (!lines.length) continue;
      if (/^\s*[-*] /.test(lines[0])) {
        const ul = el("ul");
        let current = null;
        for (const line of lines) {
          const m = /^\s*[-*] (.*)$/.exec(line);
          if (m) { current = el("li"); ul.appendChild(current); renderInline(m[1], current); }
          else if (current) { current.appendChild(document.createTextNode(" ")); renderInline(line.trim(), current); }
        }
        container.appendChild(ul);
      } else {
        const p = el("p");
        renderInline(lines.map((l) => l.trim()).join(" "), p);
        container.appendChild(p);
      }
    }
  }
  window.crampRenderMarkdown = renderMarkdown; // for debugging in the console

  // --- HTTP -------------------------------------------------------------------------------------------------
  async function http(method, url, body) {
    const init = { method, headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    const text = await response.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch (e) { json = null; }
    return { ok: response.ok, status: response.status, json, text };
  }

  function diagnostics(reply) {
    const body = reply.json;
    if (body && body.resourceType === "OperationOutcome" && Array.isArray(body.issue)) {
      return body.issue.map((i) => i.diagnostics || i.code).filter(Boolean).join("; ");
    }
    return (reply.text || "").slice(0, 300) || "(no details)";
  }

  function setStatus(text, kind) {
    const s = $("status");
    s.textContent = text;
    s.className = "status" + (kind ? " status-" + kind : "");
  }

  function showJson(id, value) { $(id).textContent = value === undefined ? "" : JSON.stringify(value, null, 2); }

  // --- controls ---------------------------------------------------------------------------------------------
  function selectedHook() { return document.querySelector('input[name="hook"]:checked').value; }

  function updateDrugRow() {
    const orders = selectedHook() !== "patient-view";
    $("drug-row").hidden = !orders;
    $("drug-input").required = orders;
  }

  function describeSample() {
    const name = $("sample-select").value;
    const s = state.samples.find((x) => x.name === name);
    const info = $("patient-info");
    info.textContent = "";
    if (state.uploaded && !name) {
      info.appendChild(el("strong", { text: "Uploaded: " }));
      info.appendChild(document.createTextNode(state.uploadedName));
    } else if (s) {
      info.appendChild(el("strong", { text: (s.patientName || s.patientId) + " " }));
      info.appendChild(el("span", { class: "muted", text: "Patient/" + s.patientId }));
      info.appendChild(el("br"));
      info.appendChild(document.createTextNode(s.description));
    }
  }

  async function loadSamples() {
    const select = $("sample-select");
    const reply = await http("GET", "api/samples");
    select.textContent = "";
    if (!reply.ok) { select.appendChild(el("option", { value: "", text: "Samples unavailable" })); return; }
    state.samples = reply.json.samples || [];
    select.appendChild(el("option", { value: "", text: "— choose a sample patient —" }));
    for (const s of state.samples) {
      select.appendChild(el("option", { value: s.name, text: `${s.patientName || s.patientId} · ${s.name}` }));
    }
    describeSample();
  }

  async function loadDrugs() {
    const reply = await http("GET", "api/drugs");
    if (!reply.ok) return;
    const list = $("drug-list");
    for (const d of reply.json.drugs || []) list.appendChild(el("option", { value: d.name, label: d.display }));
  }

  function onFile(event) {
    const file = event.target.files && event.target.files[0];
    if (!file) return;
    const reader = new FileReader();
    reader.onload = () => {
      try {
        state.uploaded = JSON.parse(reader.result);
        state.uploadedName = file.name;
        $("sample-select").value = "";
        setStatus("Loaded " + file.name + ".", "ok");
      } catch (e) {
        state.uploaded = null;
        setStatus(file.name + " is not JSON: " + e.message, "error");
      }
      describeSample();
    };
    reader.readAsText(file);
  }

  // --- cards ------------------------------------------------------------------------------------------------
  function safeHref(url) {
    try {
      const u = new URL(url, window.location.href);
      return u.protocol === "http:" || u.protocol === "https:" ? u.href : null;
    } catch (e) { return null; }
  }

  function linkOrText(label, url) {
    const href = safeHref(url);
    return href ? el("a", { href, target: "_blank", rel: "noopener noreferrer", text: label }) : el("span", { text: label });
  }

  async function sendFeedback(ctx, entry, statusNode, doneText) {
    const body = { feedback: [entry] };
    statusNode.className = "feedback-status pending";
    statusNode.textContent = "Sending feedback…";
    let reply;
    try { reply = await http("POST", ctx.serviceUrl + "/feedback", body); }
    catch (e) { reply = { ok: false, status: 0, text: String(e) }; }
    state.feedbackLog.push({ request: body, status: reply.status, response: reply.json });
    showJson("feedback-json", state.feedbackLog);
    $("feedback-count").textContent = "(" + state.feedbackLog.length + ")";
    if (reply.ok) {
      statusNode.className = "feedback-status ok";
      statusNode.textContent = doneText + " Feedback recorded (HTTP " + reply.status + ").";
    } else {
      statusNode.className = "feedback-status error";
      statusNode.textContent = "Feedback not recorded: HTTP " + reply.status + ": " + diagnostics(reply);
    }
    return reply.ok;
  }

  function lockCard(article) {
    for (const b of article.querySelectorAll("button, select, input")) b.disabled = true;
  }

  function describeAction(a) {
    const target = a.resourceId || (a.resource && a.resource.resourceType) || "";
    return `${a.type} ${target}` + (a.description ? ` — ${a.description}` : "");
  }

  function renderCard(card, ctx) {
    const indicator = ["info", "warning", "critical"].includes(card.indicator) ? card.indicator : "info";
    const article = el("article", { class: "card card-" + indicator, "data-testid": "card", "data-card-uuid": card.uuid || "" });
    const feedbackStatus = el("p", { class: "feedback-status", "data-testid": "feedback-status", "aria-live": "polite" });

    article.appendChild(el("header", { class: "card-head" },
      el("span", { class: "badge badge-" + indicator, "data-testid": "card-indicator", text: indicator }),
      el("h3", { class: "card-summary", "data-testid": "card-summary", text: card.summary || "" })));

    if (card.detail) {
      const detail = el("div", { class: "card-detail", "data-testid": "card-detail" });
      renderMarkdown(card.detail, detail);
      article.appendChild(detail);
    }

    const suggestions = Array.isArray(card.suggestions) ? card.suggestions : [];
    if (suggestions.length) {
      const box = el("div", { class: "suggestions", "data-testid": "card-suggestions" });
      for (const s of suggestions) {
        const button = el("button", {
          type: "button", class: "suggestion" + (s.isRecommended ? " recommended" : ""), "data-testid": "suggestion",
          "data-suggestion-uuid": s.uuid || "", text: s.label || "(unlabelled suggestion)",
          title: (s.actions || []).map(describeAction).join("\n"),
        });
        button.addEventListener("click", async () => {
          const applied = (s.actions || []).map(describeAction);
          if (!card.uuid || !s.uuid) {   // like the reference sandbox: no uuid, no feedback
            feedbackStatus.className = "feedback-status";
            feedbackStatus.textContent = "Accepted “" + s.label + "” (no uuid on the card or suggestion: no feedback sent).";
            return;
          }
          lockCard(article);
          const ok = await sendFeedback(ctx, {
            card: card.uuid, outcome: "accepted", acceptedSuggestions: [{ id: s.uuid }],
            outcomeTimestamp: new Date().toISOString(),
          }, feedbackStatus, "Accepted “" + s.label + "”" + (applied.length ? " (applied: " + applied.join("; ") + ")." : "."));
          if (ok) article.classList.add("accepted");
        });
        box.appendChild(button);
      }
      article.appendChild(box);
    }

    const links = Array.isArray(card.links) ? card.links : [];
    if (links.length) {
      const ul = el("ul", { class: "links", "data-testid": "card-links" });
      for (const l of links) ul.appendChild(el("li", {}, linkOrText(l.label || l.url, l.url), l.type === "smart" ? el("span", { class: "muted", text: " (SMART app)" }) : null));
      article.appendChild(ul);
    }

    const footer = el("footer", { class: "card-foot" });
    if (card.source && card.source.label) {
      const src = el("span", { class: "source", "data-testid": "card-source" }, "Source: ");
      src.appendChild(card.source.url ? linkOrText(card.source.label, card.source.url) : el("span", { text: card.source.label }));
      footer.appendChild(src);
    }
    if (card.uuid) {   // the reference sandbox offers dismissal only on cards with a uuid
      const reasons = Array.isArray(card.overrideReasons) ? card.overrideReasons : [];
      const select = el("select", { "data-testid": "override-reason", "aria-label": "Reason for dismissing" },
        el("option", { value: "", text: reasons.length ? "Reason (optional)…" : "No reasons offered" }));
      reasons.forEach((r, i) => select.appendChild(el("option", { value: String(i), text: r.display || r.code })));
      const comment = el("input", { type: "text", class: "comment", placeholder: "Comment (optional)", "data-testid": "override-comment", "aria-label": "Comment" });
      const dismiss = el("button", { type: "button", class: "secondary", "data-testid": "dismiss", text: "Dismiss" });
      dismiss.addEventListener("click", async () => {
        const reason = select.value === "" ? null : reasons[Number(select.value)];
        const entry = { card: card.uuid, outcome: "overridden", outcomeTimestamp: new Date().toISOString() };
        const overrideReason = {};
        if (reason) overrideReason.reason = { system: reason.system, code: reason.code, display: reason.display };
        if (comment.value.trim()) overrideReason.userComment = comment.value.trim();
        if (Object.keys(overrideReason).length) entry.overrideReason = overrideReason;
        lockCard(article);
        const ok = await sendFeedback(ctx, entry, feedbackStatus,
          "Dismissed" + (reason ? ": “" + (reason.display || reason.code) + "”." : " without a reason."));
        if (ok) article.classList.add("dismissed");
      });
      footer.appendChild(el("div", { class: "dismiss" }, select, comment, dismiss));
    }
    article.appendChild(footer);
    article.appendChild(feedbackStatus);
    return article;
  }

  function renderCards(response, ctx) {
    const box = $("cards");
    box.textContent = "";
    const cards = (response && Array.isArray(response.cards)) ? response.cards : [];
    if (!cards.length) {
      box.appendChild(el("p", { class: "empty", "data-testid": "no-cards", text: "No cards: the service had nothing to say for this patient and hook." }));
      return;
    }
    for (const card of cards) box.appendChild(renderCard(card, ctx));
  }

  function renderError(title, text) {
    const box = $("cards");
    box.textContent = "";
    box.appendChild(el("div", { class: "error-box", "data-testid": "error" }, el("strong", { text: title }), el("p", { text })));
  }

  // --- run --------------------------------------------------------------------------------------------------
  async function run(event) {
    event.preventDefault();
    const hook = selectedHook();
    const body = { hook };
    const sample = $("sample-select").value;
    if (sample) body.sample = sample;
    else if (state.uploaded) body.bundle = state.uploaded;
    else { setStatus("Choose a sample patient or upload a Bundle.", "error"); return; }
    if (hook !== "patient-view") {
      body.drug = $("drug-input").value.trim();
      if (!body.drug) { setStatus("Type a drug to order (e.g. quinine).", "error"); $("drug-input").focus(); return; }
    }
    const button = $("run-button");
    button.disabled = true;
    showJson("request-json"); showJson("response-json");
    $("request-target").textContent = ""; $("response-status").textContent = "";
    try {
      setStatus("Building the request…");
      const built = await http("POST", "api/build-request", body);
      if (!built.ok) { setStatus("Could not build the request: " + diagnostics(built), "error"); renderError("Could not build the request", diagnostics(built)); return; }
      const { serviceId, serviceUrl, request } = built.json;
      showJson("request-json", request);
      $("request-target").textContent = "POST " + serviceUrl;
      setStatus("Calling " + serviceId + "…");
      const started = performance.now();
      const reply = await http("POST", serviceUrl, request);
      const ms = Math.round(performance.now() - started);
      showJson("response-json", reply.json !== null ? reply.json : reply.text);
      $("response-status").textContent = "HTTP " + reply.status + " · " + ms + " ms";
      if (!reply.ok) {
        setStatus(serviceId + " answered HTTP " + reply.status + ".", "error");
        renderError("Could not get a response (HTTP " + reply.status + ")", diagnostics(reply));
        return;
      }
      const n = (reply.json.cards || []).length;
      setStatus(`${serviceId}: ${n} card${n === 1 ? "" : "s"} in ${ms} ms.`, "ok");
      renderCards(reply.json, { serviceId, serviceUrl });
    } catch (e) {
      setStatus("Failed: " + e.message, "error");
      renderError("Failed", e.message);
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("run-form").addEventListener("submit", run);
    $("sample-select").addEventListener("change", () => { if ($("sample-select").value) { state.uploaded = null; $("bundle-file").value = ""; } describeSample(); });
    $("bundle-file").addEventListener("change", onFile);
    for (const r of document.querySelectorAll('input[name="hook"]')) r.addEventListener("change", updateDrugRow);
    updateDrugRow();
    Promise.all([loadSamples(), loadDrugs()]).then(() => document.body.setAttribute("data-ready", "true"))
      .catch((e) => setStatus("Could not load the sandbox: " + e.message, "error"));
  });
})();

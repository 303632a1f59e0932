// The Nudge dashboard: asks for the secret key once (kept in sessionStorage), reads the
// snapshot stream with fetch (the key in the Authorization header, never in a URL) and renders
// it. Every value is set with textContent or SVG attributes: nothing from the server is parsed
// as HTML.
(function () {
  "use strict";
  var STORAGE = "nudge.dashboard.key";
  var FUNNEL = ["triggered", "eligible", "sent", "shown", "clicked", "converted"];
  var $ = function (id) { return document.getElementById(id); };
  var controller = null;
  var retry = 0;

  var el = window.NudgeDom.el, svg = window.NudgeDom.svg; // dom.js

  function percent(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(1) + " %"; }

  // Two views behind one key: the live board (#live, the default) and the campaign editor
  // (#campaigns, editor.js).
  function showView() {
    var editing = location.hash.indexOf("#campaigns") === 0;
    $("views").hidden = false;
    $("board").hidden = editing;
    $("editor").hidden = !editing;
    $("to-live").setAttribute("aria-current", editing ? "false" : "page");
    $("to-campaigns").setAttribute("aria-current", editing ? "page" : "false");
    if (editing && window.nudgeEditor) window.nudgeEditor.open(sessionStorage.getItem(STORAGE));
  }

  function showLogin(message) {
    $("board").hidden = true;
    $("editor").hidden = true;
    $("views").hidden = true;
    $("forget").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("status").textContent = "signed out";
    $("status").className = "badge";
  }

  function start(key) {
    $("login").hidden = true;
    $("forget").hidden = false;
    if (controller) controller.abort();
    controller = new AbortController();
    var signal = controller.signal;
    fetch("/api/dashboard/stream", { headers: { Authorization: "Bearer " + key }, signal: signal })
      .then(function (response) {
        if (response.status === 401 || response.status === 403) {
          sessionStorage.removeItem(STORAGE);
          return response.json().then(function (body) { showLogin(body.error || "refused"); });
        }
        if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
        retry = 0;
        if ($("views").hidden) showView();
        var opened = Date.now();
        return read(response.body.getReader()).then(function () {
          if (signal.aborted) return;
          // The server ends each stream after a few seconds: open the next one at once (unless
          // streams keep ending early, then back off as after an error).
          if (Date.now() - opened < 1000) throw new Error("stream ended early");
          start(key);
        });
      })
      .catch(function (error) {
        if (signal.aborted) return;
        $("status").textContent = "reconnecting…";
        $("status").className = "badge degraded";
        retry = Math.min(retry + 1, 5);
        setTimeout(function () { start(key); }, Math.random() * 500 * Math.pow(2, retry));
      });
  }

  function read(reader) {
    var decoder = new TextDecoder();
    var buffer = "";
    function pump() {
      return reader.read().then(function (chunk) {
        if (chunk.done) return;
        buffer += decoder.decode(chunk.value, { stream: true });
        var at;
        while ((at = buffer.indexOf("\n\n")) >= 0) {
          var block = buffer.slice(0, at);
          buffer = buffer.slice(at + 2);
          if (block.indexOf("event: end") === 0) continue;
          var data = block.split("\n").filter(function (l) { return l.indexOf("data: ") === 0; })
            .map(function (l) { return l.slice(6); }).join("\n");
          if (data) render(JSON.parse(data));
        }
        return pump();
      });
    }
    return pump();
  }

  function render(s) {
    $("node").textContent = "node " + s.node;
    $("status").textContent = s.degraded.length ? "degraded: " + s.degraded.join(", ") : "live";
    $("status").className = "badge " + (s.degraded.length ? "degraded" : "ok");
    $("sessions").textContent = s.sessions;
    $("connections").textContent = s.connections;
    $("rate").textContent = s.events_per_second;
    $("events").textContent = s.events;
    renderCampaigns(s.results);
    renderTimers(s.timers);
    renderDecisions(s.decisions);
    renderWebhooks(s.webhooks);
    document.body.setAttribute("data-updated", String(Date.now()));
  }

  function total(variants, field) {
    var n = 0;
    for (var v in variants) n += variants[v][field] || 0;
    return n;
  }

  function funnelChart(variants) {
    var width = 400, row = 20, height = FUNNEL.length * row + 4;
    var chart = svg("svg", { viewBox: "0 0 " + width + " " + height, role: "img", "class": "funnel", "aria-label": "funnel" });
    var top = Math.max(1, total(variants, "triggered"));
    FUNNEL.forEach(function (field, i) {
      var n = total(variants, field);
      var y = i * row + 2;
      chart.appendChild(svg("text", { x: 0, y: y + 14, "font-size": 12, fill: "#545c6e" }, field));
      chart.appendChild(svg("rect", { x: 80, y: y + 2, width: Math.max(1, (width - 140) * n / top), height: row - 6, rx: 3, fill: "#3565f2", "data-field": field }));
      chart.appendChild(svg("text", { x: width - 4, y: y + 14, "font-size": 12, "text-anchor": "end" }, n));
    });
    return chart;
  }

  function abChart(variants) {
    var ids = Object.keys(variants);
    var width = 400, row = 24, height = ids.length * row + 4;
    var chart = svg("svg", { viewBox: "0 0 " + width + " " + height, role: "img", "class": "ab", "aria-label": "conversion by variant" });
    var scale = 0.001;
    ids.forEach(function (id) { scale = Math.max(scale, variants[id].ci95[1]); });
    var left = 100, span = width - left - 70;
    ids.forEach(function (id, i) {
      var v = variants[id], y = i * row + 2;
      var rate = v.conversion_rate || 0;
      var label = svg("text", { x: 0, y: y + 15, "font-size": 12, fill: "#545c6e" }, id.length > 14 ? id.slice(0, 13) + "…" : id);
      label.appendChild(svg("title", {}, id + (v.holdout ? " (holdout: not shown, counted)" : "")));
      chart.appendChild(label);
      chart.appendChild(svg("rect", { x: left, y: y + 4, width: Math.max(1, span * rate / scale), height: row - 10, rx: 3, fill: v.holdout ? "#9aa3b5" : "#1a9d5a", "data-variant": id }));
      var x1 = left + span * v.ci95[0] / scale, x2 = left + span * v.ci95[1] / scale, mid = y + row / 2;
      chart.appendChild(svg("line", { x1: x1, x2: x2, y1: mid, y2: mid, stroke: "#1d2330", "stroke-width": 1.5 }));
      chart.appendChild(svg("text", { x: width - 4, y: y + 15, "font-size": 12, "text-anchor": "end" }, percent(v.conversion_rate)));
    });
    return chart;
  }

  function renderCampaigns(results) {
    var box = $("campaigns");
    box.replaceChildren();
    var ids = Object.keys(results).sort();
    if (!ids.length) box.appendChild(el("p", { "class": "muted" }, "No decisions yet."));
    ids.forEach(function (id) {
      var r = results[id];
      var card = el("div", { "class": "campaign", "data-campaign": id });
      card.appendChild(el("h3", {}, id));
      card.appendChild(funnelChart(r.variants));
      if (Object.keys(r.variants).length > 1) {
        card.appendChild(abChart(r.variants));
        if (r.sample_ratio && r.sample_ratio.mismatch) {
          card.appendChild(el("p", { "class": "comparison worse srm" },
            "Sample ratio mismatch: the split is off (chi-square p = " + r.sample_ratio.p_value + "); do not trust these results until it is explained."));
        }
        r.comparisons.forEach(function (c) {
          var line;
          if (c.verdict === "too_few_exposures") {
            // Before the minimum exposures a p-value says little: no verdict, how far along.
            line = c.variant + " against " + c.control + ": too few exposures for a verdict, no verdict yet (" + c.exposures[0] + " and " + c.exposures[1] +
              " exposures, " + c.minimum_exposures + " needed on each side)";
          } else {
            var verdict = c.significant ? (c.better ? "beats" : "does worse than") : "no significant difference from";
            line = c.variant + " " + verdict + " " + c.control + " (" + c.test.replace(/_/g, " ") + ", p = " + c.p_value +
              ", adjusted for " + r.comparisons.length + " comparisons " + c.p_adjusted + "; looking daily: " + c.sequential_p + ")";
          }
          card.appendChild(el("p", { "class": "comparison " + (c.significant ? (c.better ? "better" : "worse") : "") }, line));
        });
      }
      box.appendChild(card);
    });
  }

  function renderTimers(timers) {
    var body = $("timers").tBodies[0];
    body.replaceChildren();
    timers.forEach(function (t) {
      var tr = el("tr");
      tr.appendChild(el("td", {}, t.campaign));
      tr.appendChild(el("td", { "class": "num" }, t.pending));
      tr.appendChild(el("td", {}, t.due.map(function (d) { return d.kind + " in " + d["in"] + " s"; }).join(", ")));
      body.appendChild(tr);
    });
  }

  function renderDecisions(decisions) {
    var body = $("decisions").tBodies[0];
    body.replaceChildren();
    decisions.forEach(function (d) {
      var tr = el("tr");
      tr.appendChild(el("td", { "class": "num" }, d.ago + " s"));
      tr.appendChild(el("td", {}, d.campaign + (d.variant ? " / " + d.variant : "")));
      tr.appendChild(el("td", {}, d.outcome));
      tr.appendChild(el("td", { "class": "muted" }, d.reason || ""));
      tr.appendChild(el("td", { "class": "muted", title: d.visitor }, d.session || "(no tab)"));
      if (d.session) {
        tr.className = "explainable";
        tr.addEventListener("click", function () { explain(d.session, d.campaign); });
      }
      body.appendChild(tr);
    });
  }

  // The explain trace of one decision's session and campaign: /api/explain, as `nudge explain`.
  function explain(session, campaign) {
    var key = sessionStorage.getItem(STORAGE);
    var query = "?session=" + encodeURIComponent(session) + "&campaign=" + encodeURIComponent(campaign);
    fetch("/api/explain" + query, { headers: { Authorization: "Bearer " + key } })
      .then(function (response) { return response.json().then(function (body) { return [response.status, body]; }); })
      .then(function (answer) {
        var status = answer[0], report = answer[1];
        $("explain").hidden = false;
        $("explain-title").textContent = campaign + " in " + session;
        var body = $("explain-checks").tBodies[0];
        body.replaceChildren();
        if (status !== 200) {
          $("explain-note").textContent = report.error || ("HTTP " + status);
          return;
        }
        (report.checks || []).forEach(function (c) {
          var tr = el("tr");
          tr.appendChild(el("td", {}, c.ok === true ? "✓" : c.ok === false ? "✗" : ""));
          tr.appendChild(el("td", {}, c.check));
          tr.appendChild(el("td", { "class": "muted" }, c.detail));
          body.appendChild(tr);
        });
        $("explain-note").textContent = (report.decisions || []).map(function (d) {
          return d.outcome + (d.variant ? " [" + d.variant + "]" : "");
        }).join(" → ");
      })
      .catch(function (error) { $("explain-note").textContent = String(error); });
  }

  function renderWebhooks(hooks) {
    $("webhooks-section").hidden = !hooks;
    if (!hooks) return;
    $("webhook-queue").textContent = hooks.queued + " queued, " + hooks.dead.length + " dead letters";
    var body = $("dead").tBodies[0];
    body.replaceChildren();
    hooks.dead.forEach(function (d) {
      var tr = el("tr");
      [d.id, d.endpoint, d.type, d.attempt, d.error].forEach(function (x) { tr.appendChild(el("td", {}, x)); });
      body.appendChild(tr);
    });
  }

  $("login").addEventListener("submit", function (event) {
    event.preventDefault();
    var key = $("key").value.trim();
    sessionStorage.setItem(STORAGE, key);
    $("key").value = "";
    start(key);
  });
  $("explain-close").addEventListener("click", function () { $("explain").hidden = true; });
  $("forget").addEventListener("click", function () {
    sessionStorage.removeItem(STORAGE);
    if (controller) controller.abort();
    showLogin("");
  });

  window.addEventListener("hashchange", function () {
    if (sessionStorage.getItem(STORAGE)) showView();
  });

  var saved = sessionStorage.getItem(STORAGE);
  if (saved) start(saved); else showLogin("");
})();

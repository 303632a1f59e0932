// The dashboard's campaign editor (#campaigns): the campaign list, a form and the campaign's YAML
// side by side, each updating the other, checked as you type by the server's own validator
// (POST /api/campaigns/check: `nudge check`'s messages, with field and line), a preview through
// the snippet's own renderer (preview.html, built from client_js/src/render.js) of the message as
// the server renders it for a sample visitor (POST /api/campaigns/preview), saved through the
// campaign API with its versions (If-Match), with history, diffs and rollback
// (GET /api/campaigns/{id}/history), and replayed against the recorded traffic beside the campaign
// in force before it is published (POST /api/campaigns/replay). Nothing from the server is parsed
// as HTML.
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var CHECK_AFTER = 250; // ms of quiet typing before the campaign is checked

  // Starting points: complete campaigns, valid as they are, to change rather than write.
  var STARTS = {
    cart: {
      id: "cart-abandoned",
      trigger: { event: "add_to_cart", absent: "purchase", within: "30m" },
      caps: { per_day: 1 },
      offline: "queue",
      goal: { event: "purchase", within: "1h" },
      message: {
        kind: "modal",
        title: "Still thinking about {{ cart.names | first }}?",
        body: "Your cart is waiting: {{ cart.count }} item{{ 's' if cart.count != 1 }}, {{ cart.value | money }}.",
        cta: { label: "Go to checkout", url: "/checkout" },
        dismiss: "Not now"
      }
    },
    scroll: {
      id: "read-more",
      trigger: { path: "/blog/*", scroll: 50, dwell: "5s" },
      caps: { per_session: 1 },
      message: {
        kind: "banner", position: "bottom", title: "Enjoying the read?",
        body: "Readers who get this far save 10% on their first order.",
        cta: { label: "Shop the collection", url: "/" }, dismiss: "No thanks"
      }
    },
    exit: {
      id: "before-you-go",
      trigger: { event: "exit_intent", path: "/checkout*" },
      caps: { per_session: 1 },
      message: {
        kind: "slidein", title: "Before you go",
        body: "Your cart is saved for 7 days{{ ', ' ~ visitor.first_name if visitor.first_name }}.",
        cta: { label: "Finish my order", url: "/checkout" }, dismiss: "Later"
      }
    },
    reengage: {
      id: "welcome-back",
      trigger: { event: "page_view" },
      audience: { "visit.days_since_last": { gte: 7 } },
      caps: { per_session: 1 },
      message: { kind: "toast", title: "Welcome back{{ ', ' ~ visitor.first_name if visitor.first_name }}!", body: "Here is what is new since your last visit." }
    },
    announce: {
      id: "announcement",
      trigger: { event: "page_view" },
      caps: { lifetime: 1 },
      message: {
        kind: "banner", position: "top", title: "Free shipping this week",
        body: "On every order, until Sunday.", cta: { label: "Shop now", url: "/" }, dismiss: "Close"
      }
    }
  };

  var key = null;
  var list = []; // campaign views from GET /api/campaigns
  var current = null; // {id (saved id or null), version, campaign}
  var checkSeq = 0, previewSeq = 0, checkTimer = null, previewTimer = null;
  var lastPreview = null;
  var pending = null; // the check of an edit not yet sent
  var inFlight = null; // the last check sent
  var problemCount = 0; // of the last check answered
  var wired = false;

  var el = window.NudgeDom.el, svg = window.NudgeDom.svg; // dom.js

  function api(method, path, body, headers) {
    var h = { Authorization: "Bearer " + key };
    for (var k in headers || {}) h[k] = headers[k];
    var init = { method: method, headers: h };
    if (body !== undefined) {
      h["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: text }; }
        return { status: response.status, etag: response.headers.get("ETag"), body: data };
      });
    });
  }

  function version(etag) { return etag ? Number(etag.replace(/^W\//, "").replace(/"/g, "")) : null; }
  function clone(x) { return JSON.parse(JSON.stringify(x)); }
  function button(label, handler, attrs) {
    var b = el("button", Object.assign({ type: "button" }, attrs || {}), label);
    b.addEventListener("click", handler);
    return b;
  }

  // --- the list ---------------------------------------------------------------------------

  function loadList() {
    return api("GET", "/api/campaigns").then(function (answer) {
      if (answer.status !== 200) { $("list-note").textContent = (answer.body && answer.body.error) || "HTTP " + answer.status; return; }
      list = answer.body.campaigns;
      renderList();
    });
  }

  function renderList() {
    var body = $("campaign-list").tBodies[0];
    body.replaceChildren();
    if (!list.length) {
      var empty = body.appendChild(el("tr"));
      empty.appendChild(el("td", { colspan: "5", "class": "muted" }, "No campaigns yet: create one from a starting point."));
    }
    list.forEach(function (view) {
      var c = view.campaign || {};
      var tr = el("tr", { "data-campaign": view.id });
      tr.appendChild(el("th", { scope: "row" }, view.id));
      tr.appendChild(el("td", {}, (c.message && c.message.kind) || ""));
      tr.appendChild(el("td", {}, view.enabled ? "live" : "paused"));
      tr.appendChild(el("td", { "class": "num" }, view.version));
      var actions = el("td", { "class": "row-actions" });
      actions.appendChild(button("Edit", function () { edit(view); }, { "aria-label": "Edit " + view.id }));
      actions.appendChild(button(view.enabled ? "Pause" : "Resume", function () { toggle(view); },
        { "aria-label": (view.enabled ? "Pause " : "Resume ") + view.id }));
      actions.appendChild(button("Delete", function () { remove(view); }, { "aria-label": "Delete " + view.id }));
      tr.appendChild(actions);
      body.appendChild(tr);
    });
  }

  function toggle(view) {
    var path = "/api/campaigns/" + encodeURIComponent(view.id) + (view.enabled ? "/pause" : "/resume");
    api("POST", path, undefined, { "If-Match": '"' + view.version + '"' }).then(function (answer) {
      return loadList().then(function () {
        $("list-note").textContent = answer.status === 200 ? view.id + (view.enabled ? " paused" : " resumed") : (answer.body.error || "HTTP " + answer.status);
        var now = list.filter(function (v) { return v.id === view.id; })[0];
        if (current && now && current.id === now.id) {
          // The campaign open follows (its unsaved edits stay): the version, and enabled.
          current.version = now.version;
          current.enabled = now.enabled;
          if (now.enabled) delete current.campaign.enabled; else current.campaign.enabled = false;
          heading();
          check({ campaign: current.campaign }, true);
          loadHistory();
        }
      });
    });
  }

  function remove(view) {
    if (!window.confirm("Delete campaign " + view.id + "? Its versions stay in its history.")) return;
    api("DELETE", "/api/campaigns/" + encodeURIComponent(view.id), undefined, { "If-Match": '"' + view.version + '"' }).then(function (answer) {
      return loadList().then(function () {
        $("list-note").textContent = answer.status === 204 ? view.id + " deleted" : (answer.body.error || "HTTP " + answer.status);
      });
    });
  }

  function freeId(id) {
    var taken = {};
    list.forEach(function (v) { taken[v.id] = true; });
    if (!taken[id]) return id;
    for (var n = 2; ; n++) if (!taken[id + "-" + n]) return id + "-" + n;
  }

  // --- editing ----------------------------------------------------------------------------

  function create() {
    var start = clone(STARTS[$("start-from").value]);
    start.id = freeId(start.id);
    open_({ id: null, version: null, campaign: start, enabled: true });
  }

  function edit(view) { open_({ id: view.id, version: view.version, campaign: clone(view.campaign), enabled: view.enabled }); }

  function heading() {
    $("edit-heading").textContent = current.id
      ? "Campaign " + current.id + " (version " + current.version + (current.enabled === false ? ", paused" : "") + ")"
      : "New campaign (not saved)";
  }

  function open_(state) {
    current = state;
    $("edit").hidden = false;
    heading();
    $("save-note").textContent = "";
    fillForm(state.campaign);
    check({ campaign: state.campaign }, true);
    loadHistory();
    loadResults();
    resetReplay();
    $("f-id").focus();
  }

  function get(obj, path) {
    return path.split(".").reduce(function (o, k) { return o && typeof o === "object" ? o[k] : undefined; }, obj);
  }

  function set(obj, path, value) {
    var keys = path.split("."), chain = [obj], o = obj;
    for (var i = 0; i < keys.length - 1; i++) {
      if (!o[keys[i]] || typeof o[keys[i]] !== "object") {
        if (value === undefined) return;
        o[keys[i]] = {};
      }
      o = o[keys[i]];
      chain.push(o);
    }
    if (value === undefined) delete o[keys[keys.length - 1]]; else o[keys[keys.length - 1]] = value;
    // A map left empty goes (a cta without label and url, say).
    for (var j = chain.length - 1; j > 0 && !Object.keys(chain[j]).length; j--) delete chain[j - 1][keys[j - 1]];
  }

  function controls() { return Array.prototype.slice.call($("campaign-form").querySelectorAll("[data-path]")); }

  function fillForm(campaign) {
    controls().forEach(function (c) {
      var v = get(campaign, c.getAttribute("data-path"));
      c.value = v === undefined || v === null || typeof v === "object" ? "" : String(v);
    });
  }

  function fromForm() {
    var campaign = clone(current.campaign);
    controls().forEach(function (c) {
      var raw = c.value.trim(), value;
      if (raw === "") value = undefined;
      else if (c.getAttribute("data-type") === "number" && /^-?\d+(\.\d+)?$/.test(raw)) value = Number(raw);
      else value = c.value;
      set(campaign, c.getAttribute("data-path"), value);
    });
    return campaign;
  }

  // Ask the server's validator. `replaceText`: the answer's YAML replaces the text pane (the
  // change came from the form); otherwise the answer's campaign refills the form.
  function check(body, replaceText) {
    var seq = ++checkSeq;
    pending = null;
    body.replacing = current.id || undefined;
    $("problems-note").textContent = "checking…";
    return (inFlight = api("POST", "/api/campaigns/check", body).then(function (answer) {
      if (seq !== checkSeq || !current) return;
      if (answer.status !== 200) { $("problems-note").textContent = (answer.body && answer.body.error) || "HTTP " + answer.status; return; }
      var result = answer.body;
      if (replaceText) $("yaml").value = result.yaml;
      if (result.campaign && typeof result.campaign === "object" && !Array.isArray(result.campaign)) {
        current.campaign = result.campaign;
        if (!replaceText) fillForm(result.campaign);
      }
      showProblems(result.problems);
      problemCount = result.problems.length;
      if (result.ok) schedulePreview();
      replayStale();
    }));
  }

  // An edit typed but not yet checked is checked first: what is saved is what was checked.
  function settled() {
    clearTimeout(checkTimer);
    if (pending) return pending();
    return inFlight || Promise.resolve();
  }

  function showProblems(problems) {
    controls().forEach(function (c) {
      c.removeAttribute("aria-invalid");
      c.removeAttribute("aria-describedby");
      var old = $("err-" + c.id);
      if (old) old.remove();
    });
    var ul = $("problems");
    ul.replaceChildren();
    $("problems-note").textContent = problems.length ? problems.length + (problems.length === 1 ? " problem" : " problems") : "valid";
    $("problems-note").className = problems.length ? "error" : "ok";
    $("save").disabled = problems.length > 0;
    problems.forEach(function (p) {
      var li = el("li", { "class": "problem", "data-field": p.field });
      if (p.line) li.appendChild(button("line " + p.line, function () { selectLine(p.line); }, { "class": "link", "aria-label": "Go to line " + p.line }));
      li.appendChild(document.createTextNode(" " + p.field + ": " + p.message));
      ul.appendChild(li);
      var control = controlFor(p.field);
      if (control && !$("err-" + control.id)) {
        control.setAttribute("aria-invalid", "true");
        control.setAttribute("aria-describedby", "err-" + control.id);
        control.parentNode.appendChild(el("p", { id: "err-" + control.id, "class": "field-error" }, p.message));
      }
    });
  }

  // The form control of a problem's field: the one named by it, or by the nearest field above.
  function controlFor(field) {
    var path = field.replace(/\[\d+\]/g, "");
    var best = null;
    controls().forEach(function (c) {
      var p = c.getAttribute("data-path");
      if ((path === p || path.indexOf(p + ".") === 0) && (!best || p.length > best.getAttribute("data-path").length)) best = c;
    });
    return best;
  }

  function selectLine(line) {
    var text = $("yaml"), lines = text.value.split("\n"), start = 0;
    for (var i = 0; i < line - 1 && i < lines.length; i++) start += lines[i].length + 1;
    text.focus();
    text.setSelectionRange(start, start + (lines[line - 1] || "").length);
  }

  function save() {
    return settled().then(function () { if (current && !problemCount) publish(); });
  }

  function publish() {
    var campaign = current.campaign, request;
    if (current.id) request = api("PUT", "/api/campaigns/" + encodeURIComponent(current.id), campaign, { "If-Match": '"' + current.version + '"' });
    else request = api("POST", "/api/campaigns", campaign);
    $("save-note").textContent = "saving…";
    return request.then(function (answer) {
      if (answer.status === 200 || answer.status === 201) {
        var saved = answer.body;
        $("save-note").textContent = "Published: " + saved.id + " version " + saved.version + " is in force.";
        return loadList().then(function () {
          current.id = saved.id;
          current.version = saved.version;
          current.enabled = saved.enabled;
          heading();
          loadHistory();
          loadResults();
        });
      }
      if (answer.status === 422) showProblems(answer.body.problems.map(function (p) { return { field: p.field, line: null, message: p.message }; }));
      $("save-note").textContent = answer.status === 412
        ? "Not saved: someone changed it since you opened it (now version " + answer.body.version + "). Reopen it from the list."
        : "Not saved: " + ((answer.body && answer.body.error) || "HTTP " + answer.status);
    });
  }

  // --- history ----------------------------------------------------------------------------

  function loadHistory() {
    var body = $("history").tBodies[0];
    body.replaceChildren();
    $("diff").hidden = true;
    if (!current || !current.id) return;
    api("GET", "/api/campaigns/" + encodeURIComponent(current.id) + "/history").then(function (answer) {
      if (answer.status !== 200) return;
      var history = answer.body;
      history.versions.forEach(function (v) {
        var tr = el("tr", { "data-version": v.version });
        tr.appendChild(el("td", {}, "version " + v.version + (v.current ? " (in force)" : "")));
        tr.appendChild(el("td", { "class": "muted" }, v.at ? new Date(v.at * 1000).toISOString().replace("T", " ").slice(0, 19) : "now"));
        var actions = el("td", { "class": "row-actions" });
        actions.appendChild(button("Changes", function () { showDiff(v); }, { "aria-label": "Changes in version " + v.version }));
        if (!v.current) actions.appendChild(button("Roll back", function () { rollback(v, history.exists); }, { "aria-label": "Roll back to version " + v.version }));
        tr.appendChild(actions);
        body.appendChild(tr);
      });
    });
  }

  function showDiff(v) {
    var pre = $("diff");
    pre.replaceChildren();
    (v.diff || "(no changes)").split("\n").forEach(function (line) {
      var cls = line.charAt(0) === "+" && line.indexOf("+++") !== 0 ? "add" : line.charAt(0) === "-" && line.indexOf("---") !== 0 ? "del" : "";
      pre.appendChild(el("span", { "class": cls }, line + "\n"));
    });
    pre.hidden = false;
    pre.focus();
  }

  function rollback(v, exists) {
    var request = exists
      ? api("PUT", "/api/campaigns/" + encodeURIComponent(current.id), v.campaign, { "If-Match": '"' + current.version + '"' })
      : api("POST", "/api/campaigns", v.campaign);
    request.then(function (answer) {
      if (answer.status !== 200 && answer.status !== 201) {
        $("save-note").textContent = "Not rolled back: " + ((answer.body && answer.body.error) || "HTTP " + answer.status);
        return;
      }
      $("save-note").textContent = "Rolled back to version " + v.version + ": now version " + answer.body.version + ", in force.";
      return loadList().then(function () {
        current.version = answer.body.version;
        current.campaign = clone(answer.body.campaign);
        current.enabled = answer.body.enabled;
        heading();
        fillForm(current.campaign);
        check({ campaign: current.campaign }, true);
        loadHistory();
      });
    });
  }

  // --- results over time -----------------------------------------------------------------

  var COLOURS = ["#2456d6", "#b4460c", "#117240", "#7b3fb5", "#555d6e"];
  var PLOTTED = ["shown", "clicked", "converted"];

  function loadResults() {
    var section = $("results-section");
    section.hidden = !(current && current.id);
    if (section.hidden) return;
    var id = current.id;
    api("GET", "/api/campaigns/" + encodeURIComponent(id) + "/results?bucket=" + $("r-bucket").value).then(function (answer) {
      if (!current || current.id !== id || answer.status !== 200) return;
      renderResults(answer.body);
    });
  }

  function when(at, bucket) {
    var iso = new Date(at * 1000).toISOString();
    return bucket === "day" ? iso.slice(0, 10) : iso.slice(5, 13).replace("T", " ") + ":00";
  }

  function lineChart(data, counter, variants) {
    var width = 560, height = 150, left = 36, bottom = 22, top = 8;
    var n = 0, max = 1;
    variants.forEach(function (v) { n = Math.max(n, data.variants[v].length); data.variants[v].forEach(function (r) { max = Math.max(max, r[counter]); }); });
    var total = variants.map(function (v) { return v + " " + data.variants[v].reduce(function (s, r) { return s + r[counter]; }, 0); }).join(", ");
    var chart = svg("svg", { viewBox: "0 0 " + width + " " + height, role: "img", "class": "series", "data-counter": counter,
      "aria-label": counter + " per " + data.bucket + ", by variant: " + total });
    var x = function (i) { return left + (n > 1 ? (width - left - 8) * i / (n - 1) : (width - left - 8) / 2); };
    var y = function (value) { return top + (height - top - bottom) * (1 - value / max); };
    chart.appendChild(svg("line", { x1: left, x2: width - 8, y1: y(0), y2: y(0), stroke: "#c5cad6" }));
    chart.appendChild(svg("text", { x: left - 4, y: y(max) + 4, "font-size": 11, "text-anchor": "end", fill: "#454c5c" }, max));
    chart.appendChild(svg("text", { x: left - 4, y: y(0) + 4, "font-size": 11, "text-anchor": "end", fill: "#454c5c" }, 0));
    var first = data.variants[variants[0]][0], last = data.variants[variants[0]][n - 1];
    if (first) chart.appendChild(svg("text", { x: left, y: height - 6, "font-size": 11, fill: "#454c5c" }, when(first.at, data.bucket)));
    if (last && n > 1) chart.appendChild(svg("text", { x: width - 8, y: height - 6, "font-size": 11, "text-anchor": "end", fill: "#454c5c" }, when(last.at, data.bucket)));
    variants.forEach(function (v, k) {
      var rows = data.variants[v], colour = COLOURS[k % COLOURS.length];
      var points = rows.map(function (r, i) { return x(i) + "," + y(r[counter]); }).join(" ");
      chart.appendChild(svg("polyline", { points: points, fill: "none", stroke: colour, "stroke-width": 2, "data-variant": v }));
      rows.forEach(function (r, i) {
        var dot = chart.appendChild(svg("circle", { cx: x(i), cy: y(r[counter]), r: 2.5, fill: colour }));
        dot.appendChild(svg("title", {}, v + ", " + when(r.at, data.bucket) + ": " + r[counter] + " " + counter));
      });
    });
    return chart;
  }

  function points(x) { return (x >= 0 ? "+" : "−") + Math.abs(100 * x).toFixed(1); }

  function renderResults(data) {
    var box = $("results-over-time");
    box.replaceChildren();
    var variants = Object.keys(data.variants);
    if (!variants.length) {
      box.appendChild(el("p", { "class": "muted" }, "Nothing counted yet."));
      return;
    }
    var legend = el("p", { "class": "legend" });
    variants.forEach(function (v, k) {
      var item = legend.appendChild(el("span", { "class": "key" }));
      item.appendChild(el("span", { "class": "swatch", style: "background:" + COLOURS[k % COLOURS.length], "aria-hidden": "true" }));
      item.appendChild(document.createTextNode(v === "-" ? "(one message)" : v));
    });
    box.appendChild(legend);
    PLOTTED.forEach(function (counter) {
      var card = box.appendChild(el("div", { "class": "chart" }));
      card.appendChild(el("h4", {}, counter + " per " + data.bucket));
      card.appendChild(lineChart(data, counter, variants));
    });
    (data.comparisons || []).forEach(function (c) {
      var exposures = c.exposures || [0, 0];
      var line = c.variant + " against " + c.control + ": " + (c.difference_ci95 === null
        ? "no exposures on one side yet. "
        : points(c.difference) + " points of conversion (95 % interval " +
          points(c.difference_ci95[0]) + " to " + points(c.difference_ci95[1]) + "). ");
      line += c.verdict === "too_few_exposures"
        ? "No verdict yet: " + exposures[0] + " and " + exposures[1] + " exposures, " + c.minimum_exposures + " needed on each side."
        : c.verdict === "no_difference" ? "No significant difference (p = " + c.p_value + ")."
        : (c.verdict === "better" ? "Better" : "Worse") + " (p = " + c.p_value + ").";
      box.appendChild(el("p", { "class": "comparison" + (c.verdict === "better" ? " better" : c.verdict === "worse" ? " worse" : "") }, line));
    });
    // The numbers behind the plots, as a table for whoever does not see them.
    var details = box.appendChild(el("details"));
    details.appendChild(el("summary", {}, "The numbers"));
    var table = details.appendChild(el("table", { "class": "series-table" }));
    var head = table.appendChild(el("thead")).appendChild(el("tr"));
    ["Variant", data.bucket === "day" ? "Day" : "Hour", "Exposed", "Shown", "Clicked", "Converted"].forEach(function (h) { head.appendChild(el("th", { scope: "col" }, h)); });
    var body = table.appendChild(el("tbody"));
    variants.forEach(function (v) {
      data.variants[v].forEach(function (r) {
        var tr = body.appendChild(el("tr"));
        [v, when(r.at, data.bucket), r.exposed, r.shown, r.clicked, r.converted].forEach(function (x) { tr.appendChild(el("td", {}, x)); });
      });
    });
  }

  // --- before publishing: the draft replayed against the recorded traffic ----------------
  // POST /api/campaigns/replay: the event log of the last days replayed (in a process of the
  // server's own) against the document with the draft in it and against the one in force.

  var replaySeq = 0;
  var replayed = null; // the campaign (as JSON) the result shown was replayed for

  function resetReplay() {
    replaySeq++;
    replayed = null;
    $("replay-result").replaceChildren();
    $("replay-note").textContent = "";
    $("replay-note").className = "";
    $("replay").disabled = false;
  }

  function replayDraft() {
    var seq = ++replaySeq;
    $("replay").disabled = true;
    $("replay-note").textContent = "replaying…";
    return settled().then(function () {
      if (!current || seq !== replaySeq) return;
      if (problemCount) {
        $("replay-note").textContent = "Fix the problems first: only a valid campaign is replayed.";
        $("replay").disabled = false;
        return;
      }
      var campaign = clone(current.campaign), days = Number($("replay-days").value);
      return api("POST", "/api/campaigns/replay", { campaign: campaign, replacing: current.id || undefined, days: days }).then(function (answer) {
        if (seq !== replaySeq) return;
        $("replay").disabled = false;
        if (answer.status !== 200) {
          $("replay-result").replaceChildren();
          $("replay-note").textContent = (answer.body && answer.body.error) || "HTTP " + answer.status;
          return;
        }
        replayed = JSON.stringify(campaign);
        $("replay-note").textContent = "";
        renderReplay(answer.body, campaign.id);
      });
    });
  }

  function count(n) { return Number(n || 0).toLocaleString("en"); }
  function day(at) { return new Date(at * 1000).toISOString().slice(0, 16).replace("T", " "); }

  function renderReplay(data, id) {
    var box = $("replay-result");
    box.replaceChildren();
    var draft = data.draft, inForce = data.in_force;
    box.appendChild(el("p", { id: "replay-summary" }, data.events
      ? count(data.events) + " events from " + count(data.visitors) + " visitors, " + day(data.from) + " to " + day(data.to) + " UTC."
      : "No events in the last " + data.days + " days."));
    var table = box.appendChild(el("table", { id: "replay-table" }));
    table.appendChild(el("caption", { "class": "visually-hidden" }, "What " + id + " would have done: the draft and the campaign in force"));
    var head = table.appendChild(el("thead")).appendChild(el("tr"));
    head.appendChild(el("th", { scope: "col" }, id));
    head.appendChild(el("th", { scope: "col", "class": "num" }, "Draft"));
    head.appendChild(el("th", { scope: "col", "class": "num" }, inForce.in_document ? "In force" : "In force (not yet)"));
    var body = table.appendChild(el("tbody"));
    function row(label, a, b, attrs, title) {
      var tr = body.appendChild(el("tr", attrs || {}));
      var th = tr.appendChild(el("th", { scope: "row" }, label));
      if (title) th.setAttribute("title", title);
      tr.appendChild(el("td", { "class": "num" }, a));
      tr.appendChild(el("td", { "class": "num" }, b));
    }
    function group(label) {
      var tr = body.appendChild(el("tr", { "class": "group" }));
      tr.appendChild(el("th", { scope: "rowgroup", colspan: "3" }, label));
    }
    row("Would fire", count(draft.fired), count(inForce.fired), { "data-row": "fired" });
    row("Visitors shown it", count(draft.visitors_shown), count(inForce.visitors_shown), { "data-row": "visitors" });
    var reasons = union(draft.suppressed, inForce.suppressed);
    group(reasons.length ? "Suppressed, by reason" : "Suppressed: never");
    reasons.forEach(function (r) {
      row(r + (data.reasons[r] ? ": " + data.reasons[r] : ""), count(draft.suppressed[r]), count(inForce.suppressed[r]), { "data-row": "suppressed:" + r });
    });
    var deferred = union(draft.deferred, inForce.deferred);
    if (deferred.length) group("Deferred, by reason");
    deferred.forEach(function (r) { row(r, count(draft.deferred[r]), count(inForce.deferred[r]), { "data-row": "deferred:" + r }); });
    var perDay = union(draft.messages_per_visitor_day, inForce.messages_per_visitor_day).sort(function (a, b) { return a - b; });
    group(perDay.length ? "Messages per visitor per day (visitor-days with …)" : "Messages per visitor per day: none");
    perDay.forEach(function (n) {
      row(n + (n === "1" ? " message" : " messages"), count(draft.messages_per_visitor_day[n]), count(inForce.messages_per_visitor_day[n]), { "data-row": "per-day:" + n });
    });
    group("The other campaigns");
    row("Would fire", count(draft.others_fired), count(inForce.others_fired), { "data-row": "others" });
  }

  function union(a, b) {
    var keys = {};
    a = a || {};
    b = b || {};
    Object.keys(a || {}).concat(Object.keys(b || {})).forEach(function (k) { keys[k] = (keys[k] || 0) + (a[k] || 0) + (b[k] || 0); });
    return Object.keys(keys).sort(function (x, y) { return keys[y] - keys[x]; });
  }

  // An edit after a replay: the result shown is of an older draft, and says so.
  function replayStale() {
    if (replayed === null || !current) return;
    var note = $("replay-note");
    var stale = JSON.stringify(current.campaign) !== replayed;
    note.textContent = stale ? "The draft changed since this replay: replay it again." : "";
    note.className = stale ? "stale" : "";
  }

  // --- preview ----------------------------------------------------------------------------

  function sample() {
    var cart = $("s-cart").value.split("\n").map(function (line, i) {
      var parts = line.split(",").map(function (s) { return s.trim(); });
      if (!parts[0]) return null;
      return { id: "item-" + i, name: parts[0], price: Number(parts[1]) || 0, quantity: parseInt(parts[2], 10) || 1 };
    }).filter(Boolean);
    var pairs = function (text) {
      var out = {};
      text.split("\n").forEach(function (line) {
        var at = line.indexOf(":");
        if (at <= 0) return;
        var value = line.slice(at + 1).trim();
        out[line.slice(0, at).trim()] = /^-?\d+(\.\d+)?$/.test(value) ? Number(value) : value;
      });
      return out;
    };
    return { cart: cart, traits: pairs($("s-traits").value), event: pairs($("s-event").value), page: $("s-page").value || "/" };
  }

  function schedulePreview() {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(preview, 50);
  }

  function preview() {
    if (!current) return;
    var seq = ++previewSeq;
    api("POST", "/api/campaigns/preview", { campaign: current.campaign, visitor: sample() }).then(function (answer) {
      if (seq !== previewSeq) return;
      if (answer.status !== 200) {
        var ul = $("preview-warnings");
        ul.replaceChildren(el("li", { "class": "warning" }, (answer.body && answer.body.error) || "HTTP " + answer.status));
        return;
      }
      lastPreview = answer.body.messages;
      var select = $("s-variant"), chosen = select.value;
      select.replaceChildren();
      lastPreview.forEach(function (m, i) { select.appendChild(el("option", { value: String(i) }, m.variant || "(one message)")); });
      select.value = chosen && Number(chosen) < lastPreview.length ? chosen : "0";
      select.disabled = lastPreview.length < 2;
      draw();
    });
  }

  function draw() {
    if (!lastPreview || !lastPreview.length) return;
    var shown = lastPreview[Number($("s-variant").value) || 0];
    ["preview-desktop", "preview-phone"].forEach(function (id) {
      var frame = $(id);
      var render = function () {
        var w = frame.contentWindow;
        if (w && w.nudgePreview) { w.nudgePreview.show(shown.message); frame.setAttribute("data-shown", shown.message.kind); }
      };
      if (frame.contentWindow && frame.contentWindow.nudgePreview) render();
      else frame.addEventListener("load", render, { once: true });
    });
    var ul = $("preview-warnings");
    ul.replaceChildren();
    shown.empty.forEach(function (e) {
      ul.appendChild(el("li", { "class": "warning" }, e.expression
        ? "In " + e.field + ", " + e.expression + " renders empty for this visitor."
        : e.field + " renders empty for this visitor."));
    });
  }

  // --- wiring -----------------------------------------------------------------------------

  function wire() {
    wired = true;
    $("create").addEventListener("click", create);
    // The form's own answer replaces the YAML; the YAML's answer refills the form.
    $("campaign-form").addEventListener("input", function () {
      if (!current) return;
      clearTimeout(checkTimer);
      pending = function () { return check({ campaign: fromForm() }, true); };
      checkTimer = setTimeout(pending, CHECK_AFTER);
    });
    $("yaml").addEventListener("input", function () {
      if (!current) return;
      clearTimeout(checkTimer);
      pending = function () { return check({ yaml: $("yaml").value }, false); };
      checkTimer = setTimeout(pending, CHECK_AFTER);
    });
    $("campaign-form").addEventListener("submit", function (e) { e.preventDefault(); });
    $("save").addEventListener("click", save);
    $("close-edit").addEventListener("click", function () { current = null; $("edit").hidden = true; $("create").focus(); });
    ["s-cart", "s-traits", "s-event", "s-page"].forEach(function (id) { $(id).addEventListener("input", schedulePreview); });
    $("s-variant").addEventListener("change", draw);
    $("r-bucket").addEventListener("change", loadResults);
    $("replay").addEventListener("click", replayDraft);
  }

  window.nudgeEditor = {
    open: function (secret) {
      key = secret;
      if (!wired) wire();
      loadList();
    }
  };
})();

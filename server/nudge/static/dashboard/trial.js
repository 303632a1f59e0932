// The editor's "Try it on my device" (#try-section): a test of the campaign being edited
// (POST /api/try) gives a link to the site's page carrying a test-device mark, and its QR code
// (drawn here as SVG from the rows the server sends: nothing from the server is parsed as
// markup). While it runs, each valid edit goes to the test devices (PUT /api/try/{id}), and what
// the test decided for them is shown live with each decision's checks, as `nudge explain` gives
// them (GET /api/try/{id}, once a second). "End the test" (DELETE) closes the test devices.
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var el = window.NudgeDom.el, svg = window.NudgeDom.svg;
  var POLL = 1000; // ms between two looks at the test devices
  var api = null, current = null; // the editor's API call and the campaign open (a function)
  var settled = null; // the editor's: resolves once the edit typed last is checked
  var trial = null; // the test running: POST /api/try's answer
  var pollTimer = null, pushTimer = null;
  var opened = {}; // the decisions whose why is open, kept open across refreshes

  function note(text, cls) { $("try-note").textContent = text; $("try-note").className = cls || ""; }

  function start() {
    settled().then(make);
  }

  function make() {
    var open = current();
    if (!open) return;
    note("making the link…");
    api("POST", "/api/try", { campaign: open.campaign, page: $("try-page").value || "/", minutes: Number($("try-minutes").value) })
      .then(function (answer) {
        if (answer.status !== 201) {
          note("No test: " + ((answer.body && answer.body.error) || "HTTP " + answer.status), "error");
          return;
        }
        trial = answer.body;
        showLink();
        poll();
      });
  }

  function showLink() {
    var until = new Date(trial.expires_at * 1000);
    note("Open the link on your device (or scan the code): it is a test device until " +
      until.toTimeString().slice(0, 5) + ". Nothing it does is counted; nobody else sees this draft.", "ok");
    var link = $("try-link");
    link.href = trial.link;
    link.textContent = trial.link;
    $("try-qr").replaceChildren(qr(trial.qr));
    $("try-link-box").hidden = false;
    $("try-end").hidden = false;
    $("try-start").textContent = "New link";
  }

  // The QR code: one dark square per "1", with the quiet zone of four modules around.
  function qr(rows) {
    var n = rows.length, size = n + 8, d = "";
    rows.forEach(function (row, y) {
      for (var x = 0; x < row.length; x++) if (row.charAt(x) === "1") d += "M" + (x + 4) + " " + (y + 4) + "h1v1h-1z";
    });
    var image = svg("svg", { viewBox: "0 0 " + size + " " + size, width: 4 * size, height: 4 * size, role: "img",
      "aria-label": "QR code of the test link", "shape-rendering": "crispEdges", id: "try-qr-code" });
    image.appendChild(svg("rect", { width: size, height: size, fill: "#fff" }));
    image.appendChild(svg("path", { d: d, fill: "#000" }));
    return image;
  }

  function poll() {
    clearTimeout(pollTimer);
    if (!trial) return;
    var open = current(), id = trial.id;
    var query = open && open.campaign && open.campaign.id ? "?campaign=" + encodeURIComponent(open.campaign.id) : "";
    api("GET", "/api/try/" + encodeURIComponent(id) + query).then(function (answer) {
      if (!trial || trial.id !== id) return;
      if (answer.status === 404) { stopped("The test is over: its mark expired or it was ended."); return; }
      if (answer.status === 200) render(answer.body);
      pollTimer = setTimeout(poll, POLL);
    });
  }

  function checks(list) {
    var ul = el("ul", { "class": "checks" });
    (list || []).forEach(function (c) {
      ul.appendChild(el("li", { "class": c.ok === false ? "error" : "" },
        (c.ok === true ? "✓ " : c.ok === false ? "✗ " : "· ") + c.check + ": " + c.detail));
    });
    return ul;
  }

  function render(data) {
    $("try-devices").textContent = data.devices.length
      ? data.devices.length + (data.devices.length === 1 ? " test device" : " test devices") + " on this node: " +
        data.devices.map(function (d) { return (d.page || "(no page yet)") + (d.connected ? "" : " (away)"); }).join(", ")
      : "No test device yet: open the link.";
    var body = $("try-decisions").tBodies[0];
    body.replaceChildren();
    data.decisions.forEach(function (d) {
      var tr = el("tr", { "data-campaign": d.campaign, "data-outcome": d.outcome });
      tr.appendChild(el("td", { "class": "num" }, Math.max(0, Math.round(data.now - d.at)) + " s ago"));
      tr.appendChild(el("td", {}, d.campaign + (d.variant ? " / " + d.variant : "")));
      tr.appendChild(el("td", {}, d.outcome + (d.reason ? ": " + d.reason : "")));
      var why = tr.appendChild(el("td"));
      if (d.why) {
        var key = d.at + " " + d.session + " " + d.campaign + " " + d.outcome;
        var details = why.appendChild(el("details", opened[key] ? { open: "" } : {}));
        details.addEventListener("toggle", function () { if (details.open) opened[key] = true; else delete opened[key]; });
        details.appendChild(el("summary", {}, "Why"));
        details.appendChild(checks(d.why));
      }
      body.appendChild(tr);
    });
    var now = $("try-now");
    now.replaceChildren();
    if (data.explain && data.explain.checks) {
      now.appendChild(el("p", { "class": "muted" }, data.explain.campaign + " on the latest test device, now:"));
      now.appendChild(checks(data.explain.checks));
    }
  }

  function end() {
    if (!trial) return;
    var id = trial.id;
    api("DELETE", "/api/try/" + encodeURIComponent(id)).then(function () {
      if (trial && trial.id === id) stopped("The test was ended: its devices are themselves again.");
    });
  }

  function stopped(text) {
    clearTimeout(pollTimer);
    trial = null;
    note(text);
    $("try-link-box").hidden = true;
    $("try-end").hidden = true;
    $("try-start").textContent = "Try it on my device";
  }

  window.NudgeTrial = {
    // `call(method, path, body)` is the editor's API call; `open()` the campaign being edited;
    // `checked()` a promise of the last edit checked.
    wire: function (call, open, checked) {
      api = call;
      current = open;
      settled = checked;
      $("try-start").addEventListener("click", start);
      $("try-end").addEventListener("click", end);
    },
    // A valid edit of the campaign: the test devices run it from their next event.
    draftChanged: function (campaign) {
      if (!trial) return;
      clearTimeout(pushTimer);
      var id = trial.id;
      pushTimer = setTimeout(function () {
        api("PUT", "/api/try/" + encodeURIComponent(id), { campaign: campaign }).then(function (answer) {
          if (answer.status === 404 || answer.status === 409) stopped("The test is over: its mark expired or it was ended.");
        });
      }, 300);
    },
    // Another campaign opened, or the editor closed: this page stops watching (the test runs on
    // until its mark expires, unless it was ended).
    closed: function () {
      clearTimeout(pollTimer);
      clearTimeout(pushTimer);
      trial = null;
      $("try-link-box").hidden = true;
      $("try-end").hidden = true;
      $("try-start").textContent = "Try it on my device";
      $("try-decisions").tBodies[0].replaceChildren();
      $("try-now").replaceChildren();
      $("try-devices").textContent = "";
      note("");
    }
  };
})();
